"""Runs every KV backend at every depth and summarises per problem and per run."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ets.protocols import KVBackend
from ets.tree import Node, Tree


class KVAccounting:
    """All backends side by side; ``headline`` is the one plots and sweeps lead with.

    Args:
        backends: The KV definitions to compute (paper, radix, paged, ...).
        headline: Name of the headline backend.
    """

    def __init__(self, backends: Sequence[KVBackend], headline: str) -> None:
        names = [b.name for b in backends]
        if headline not in names:
            raise ValueError(f"kv headline {headline!r} is not one of {names}")
        self.backends = list(backends)
        self.headline = headline

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def measure(self, tree: Tree, live: Sequence[Node]) -> dict[str, int]:
        return {b.name: b.measure(tree, live) for b in self.backends}

    @staticmethod
    def summarize(per_depth: dict[str, list[int]]) -> dict[str, Any]:
        """Per backend: the per-depth series, its mean and its peak."""
        return {
            name: {"per_depth": vals, "mean": sum(vals) / len(vals) if vals else 0.0,
                   "peak": max(vals, default=0)}
            for name, vals in per_depth.items()
        }


def run_kv(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Run-level KV: mean over all (problem, depth) pairs, peak over all of them."""
    series: dict[str, list[int]] = {}
    for rec in records:
        for name, stats in rec["kv"].items():
            series.setdefault(name, []).extend(stats["per_depth"])
    return {
        name: {"mean": sum(v) / len(v) if v else 0.0, "peak": max(v, default=0)}
        for name, v in series.items()
    }
