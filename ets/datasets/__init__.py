"""Datasets: lists of Problems (MATH500/GSM8K jsonl files, the synthetic world)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def select(items: Sequence[T], shard: str | None, offset: int, limit: int | None) -> Sequence[T]:
    """Shard (``"i/n"`` keeps items i, i+n, ...), then skip ``offset``, then keep ``limit``.

    Raises:
        ValueError: for a malformed shard or one with ``i`` outside ``0..n-1``.
    """
    if shard:
        try:
            index, count = (int(x) for x in str(shard).split("/"))
        except ValueError as exc:
            raise ValueError(f"dataset.shard={shard}: expected 'i/n', e.g. 0/4") from exc
        if not 0 <= index < count:
            raise ValueError(f"dataset.shard={shard}: need 0 <= i < n")
        items = items[index::count]
    end = None if limit is None else offset + limit
    return items[offset:end]
