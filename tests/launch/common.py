"""Helpers shared by the launcher tests: run ``python -m ets``, inspect sweep outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ets.rundir.merge import find_run_dirs
from ets.rundir.results import read_records

# The smoke sweep on the synthetic world, as small as it gets (coverage_weight=0: no
# sentence-embedding model to import in every job).
SMOKE = ["+experiment=synthetic", "+sweep=smoke", "dataset.limit=3", "search.width=4",
         "selector.coverage_weight=0"]


def ets(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run ``python -m ets *args``; returns its output, raises with the output's tail on failure."""
    proc = subprocess.run([sys.executable, "-m", "ets", *args], cwd=cwd, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
    if proc.returncode:
        raise AssertionError(f"python -m ets {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-4000:]}")
    return proc.stdout


def load_config(run_dir: Path) -> dict[str, Any]:
    """A run's resolved ``config.yaml`` as plain containers."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"), resolve=True)
    assert isinstance(cfg, dict)
    return cfg


def check_run(run_dir: Path, problems: int) -> list[dict[str, Any]]:
    """A finished run: ``problems`` records with unique ids, and a summary counting them."""
    records = read_records(run_dir / "problems.jsonl")
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), f"duplicate problem ids in {run_dir}"
    assert len(ids) == problems, f"{run_dir}: {len(ids)} problems, expected {problems}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["problems"] == problems
    return records


def check_smoke_sweep(sweep_dir: Path) -> None:
    """The 2x2 smoke grid: four finished runs, one per (lambda, seed)."""
    runs = find_run_dirs(sweep_dir)
    assert len(runs) == 4, runs
    points = set()
    for run in runs:
        check_run(run, 3)
        cfg = load_config(run)
        points.add((cfg["selector"]["lambda"], cfg["search"]["seed"]))
        assert cfg["search"]["width"] == 4
    assert points == {(0.5, 0), (0.5, 1), (1.0, 0), (1.0, 1)}
