"""Datasets: lists of Problems (MATH500/GSM8K jsonl files, the synthetic world)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def parse_shard(value: object) -> tuple[int, int] | None:
    """``"i/n"`` → ``(i, n)``; None (or empty) stays None.

    Raises:
        ValueError: on anything else, or unless ``0 <= i < n``.
    """
    if value is None or value == "":
        return None
    try:
        index, count = (int(x) for x in str(value).split("/"))
    except ValueError as exc:
        raise ValueError(f"dataset.shard={value}: expected 'i/n', e.g. 0/4") from exc
    if not 0 <= index < count:
        raise ValueError(f"dataset.shard={value}: need 0 <= i < n")
    return index, count


def select(items: Sequence[T], shard: str | None, offset: int, limit: int | None) -> Sequence[T]:
    """Shard (``"i/n"`` keeps items i, i+n, ...), then skip ``offset``, then keep ``limit``.

    Raises:
        ValueError: for a malformed shard or one with ``i`` outside ``0..n-1``.
    """
    parsed = parse_shard(shard)
    if parsed is not None:
        items = items[parsed[0]::parsed[1]]
    end = None if limit is None else offset + limit
    return items[offset:end]
