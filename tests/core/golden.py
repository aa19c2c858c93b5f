"""Golden ``problems.jsonl`` records of every method, made by the code before the core
redesign (issue 9) and compared by ``tests/core/test_golden.py`` after it.

Regenerate (only when a change of results is intended)::

    PYTHONPATH=. HF_HUB_OFFLINE=1 python -m tests.core.golden [synthetic|smollm2 ...]

Each world is a list of overrides (``WORLDS``), each method one more list
(``METHODS``); extend ``WORLDS[...]`` to pin a world version (e.g. the synthetic world's
version key) in one place.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GOLDEN = HERE / "golden"
CONF = HERE.parents[1] / "conf"

WORLDS: dict[str, list[str]] = {
    "synthetic": ["+experiment=synthetic", "dataset.limit=6", "search.width=8",
                  "search.concurrency=4", "tracker=local"],
    "smollm2": ["dataset=demo", "dataset.limit=2", "search.width=3", "search.max_step_tokens=12",
                "search.max_tokens=36", "search.max_depth=4", "search.concurrency=2",
                "tracker=local"],
}

METHODS: dict[str, list[str]] = {
    "ets": ["selector=ets"],
    "ets_improved": ["selector=ets_improved"],
    "rebase": ["selector=rebase"],
    "beam": ["selector=beam", "selector.beam_width=2"],
    "beam_ets": ["selector=beam_ets"],
    "dvts": ["selector=dvts", "selector.beam_width=2"],
    "best_of_n": ["selector=best_of_n", "expander=full"],
    "ffs": ["selector=ffs", "selector.k=2"],
}

# Timings differ run to run; everything else must not.
TIMING_KEYS = ("wall_time_s",)
# Recorded since the golden files were made (``prm_scored``: tests/test_methods_compute.py).
NEWER_KEYS = ("prm_scored",)


def strip(record: dict[str, Any]) -> dict[str, Any]:
    """The record without timings and ``NEWER_KEYS``, and its tree rows without ETS
    ``cluster`` labels (recorded since the golden files were made; everything else must be
    equal)."""
    out = {k: v for k, v in record.items() if k not in TIMING_KEYS + NEWER_KEYS}
    if "tree" in out:
        out["tree"] = [{k: v for k, v in row.items() if k != "cluster"} for row in out["tree"]]
    return out


def assert_same(a: Any, b: Any, where: str = "record", rel: float = 1e-4) -> None:
    """``a == b`` exactly, except floats: equal to ``rel`` relative (1e-6 absolute); a
    failure names the field that differs."""
    import pytest

    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, (int, float)) and isinstance(b, (int, float)), where
        assert a == pytest.approx(b, rel=rel, abs=1e-6), f"{where}: {a} != {b}"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}", rel)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]", rel)
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compose(*overrides: str):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from ets.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return hcompose("config", overrides=list(overrides))


def records(world: str, method: str, *extra: str) -> list[dict[str, Any]]:
    """Run one (world, method) into a temp dir; its stripped records in file order."""
    from ets.rundir.results import ResultsFile
    from ets.rundir.run import run

    cfg = compose(*WORLDS[world], *METHODS[method], *extra)
    with tempfile.TemporaryDirectory() as tmp:
        run(cfg, Path(tmp) / "run")
        return [strip(r) for r in ResultsFile(Path(tmp) / "run" / "problems.jsonl").load()]


def run_search(search: Any, dataset: Any, sink: list | None = None) -> list[dict[str, Any]]:
    """Run a built search over its dataset in memory; stripped records in completion order
    (``sink`` also gets each raw record as it is written)."""
    rows: list[dict[str, Any]] = []

    def on_result(record: dict[str, Any]) -> None:
        rows.append(strip(record))
        if sink is not None:
            sink.append(record)

    search.run(dataset.load(), on_result)
    return rows


def path(world: str, method: str) -> Path:
    return GOLDEN / world / f"{method}.jsonl"


def load(world: str, method: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path(world, method).read_text().splitlines()]


def load_platforms(world: str, method: str) -> dict[str, list[dict[str, Any]]]:
    """Every record set of (world, method) made by the pre-redesign loop: the first
    machine's (``GOLDEN/world/METHOD.jsonl``) and one per other machine recorded since
    (``GOLDEN/world/<machine>/METHOD.jsonl``), keyed by machine. A real model's PRM scores
    move by ~1e-7 between CPU kernels, and that flips near-ties in selection (two siblings
    with the same step text), so one machine's records cannot be another's."""
    sets = {"first": load(world, method)}
    for sub in sorted(p for p in (GOLDEN / world).iterdir() if p.is_dir()):  # README.md says how made
        sets[sub.name] = [json.loads(line) for line in (sub / f"{method}.jsonl").read_text().splitlines()]
    return sets


def main(worlds: list[str]) -> None:
    for world in worlds:
        for method in METHODS:
            out = path(world, method)
            out.parent.mkdir(parents=True, exist_ok=True)
            rows = records(world, method)
            out.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
            print(world, method, len(rows), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or list(WORLDS))
