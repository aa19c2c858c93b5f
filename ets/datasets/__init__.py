"""Datasets: lists of Problems (MATH500/GSM8K jsonl files, the synthetic world)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from ets.config import ConfigError
from ets.schema import Component, num

T = TypeVar("T")


class DatasetError(ConfigError):
    """A dataset that cannot be loaded or selects nothing; the message names the file, row
    or key and says what to do. A :class:`~ets.config.ConfigError`, so ``python -m ets``
    exits with the config-error code 2."""


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


def check_selection(selected: int, total: int, source: str, shard: str | None, offset: int,
                    limit: int | None) -> None:
    """Fail when a selection is empty, saying which key emptied it.

    Args:
        selected: Problems selected.
        total: Problems in the dataset (before sharding and slicing).
        source: The dataset, for the message (a path or a name).

    Raises:
        DatasetError: naming ``dataset.limit``, ``dataset.offset`` or the empty source.
    """
    if selected:
        return
    if total == 0:
        raise DatasetError(f"{source} holds no usable problems: nothing to run")
    if limit == 0:
        raise DatasetError("dataset.limit=0 selects no problems: use null (all) or a positive number")
    parsed = parse_shard(shard)
    in_shard = len(range(total)[parsed[0]::parsed[1]]) if parsed else total
    where = f" in shard {shard}" if parsed else ""
    raise DatasetError(f"dataset.offset={offset} is past the end: {source} has {in_shard} problems{where} "
                       f"(allowed offsets 0..{max(in_shard - 1, 0)})")


class DatasetConf(Component):
    """Keys of every dataset; each dataset's schema extends this."""

    limit: int | None = num(ge=0)
    offset: int = num(ge=0)
    shard: str | None  # "i/n": problems i, i+n, ...
    grader: Any
