"""The default tracker: per-depth metrics to ``depth_metrics.jsonl`` in the run dir."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ets.schema import Component, schema


class LocalTracker:
    """Writes per-depth aggregates next to the results; summary.json is written by the run."""

    def __init__(self, tags: Sequence[str] = ()) -> None:
        self.tags = list(tags or [])
        self._fh = None

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        self._fh = open(Path(run_dir) / "depth_metrics.jsonl", "a", encoding="utf-8")

    def log_depth(self, metrics: dict[str, float]) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(metrics) + "\n")
            self._fh.flush()

    def log_problem(self, record: dict[str, Any]) -> None:
        return None

    def finish(self, summary: dict[str, Any] | None) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@schema("tracker", "base", LocalTracker)
class TrackerConf(Component):
    tags: list[str]
