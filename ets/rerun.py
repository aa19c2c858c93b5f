"""``python -m ets.rerun <run dir> [--out DIR]``: re-execute a saved run and compare.

The run is re-executed from its saved, resolved ``config.yaml`` (every seed is in it) with
:func:`ets.run.run` into a new dir (default ``<run dir>/rerun-<n>``), then its
``problems.jsonl`` is compared with the original record by record, timing fields left
out. Warns when the saved git commit differs from the current one, when either tree was
dirty, or when package versions differ (``run.json``). Exit status 0 when identical.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ets.results import environment, read_records

TIMING_KEYS = frozenset({"wall_time_s", "time_s", "elapsed_s", "started", "timestamp"})


def strip_timing(obj: Any) -> Any:
    """``obj`` without timing fields (:data:`TIMING_KEYS`, ``*_time_s``) at any depth."""
    if isinstance(obj, dict):
        return {k: strip_timing(v) for k, v in obj.items()
                if k not in TIMING_KEYS and not k.endswith("_time_s")}
    if isinstance(obj, list):
        return [strip_timing(v) for v in obj]
    return obj


@dataclass
class Comparison:
    """Per-problem comparison of two ``problems.jsonl`` files (timings left out)."""

    same: list[str] = field(default_factory=list)
    different: dict[str, list[str]] = field(default_factory=dict)  # id -> differing keys
    missing: list[str] = field(default_factory=list)  # in the original only
    extra: list[str] = field(default_factory=list)  # in the rerun only

    @property
    def identical(self) -> bool:
        return bool(self.same) and not (self.different or self.missing or self.extra)

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"identical problems: {len(self.same)}, different: {len(self.different)}, "
                 f"missing in rerun: {len(self.missing)}, extra in rerun: {len(self.extra)}"]
        for pid, keys in list(self.different.items())[:10]:
            lines.append(f"  {pid}: differs in {', '.join(keys)}")
        lines.append("per-problem results are IDENTICAL" if self.identical
                     else "per-problem results DIFFER")
        return "\n".join(lines)


def compare(original: Sequence[dict[str, Any]], rerun: Sequence[dict[str, Any]]) -> Comparison:
    """Match records by ``id`` and compare them minus timing fields."""
    a = {r["id"]: strip_timing(r) for r in original}
    b = {r["id"]: strip_timing(r) for r in rerun}
    out = Comparison(missing=sorted(set(a) - set(b)), extra=sorted(set(b) - set(a)))
    for pid in sorted(set(a) & set(b)):
        keys = sorted(k for k in set(a[pid]) | set(b[pid]) if a[pid].get(k) != b[pid].get(k))
        if keys:
            out.different[pid] = keys
        else:
            out.same.append(pid)
    return out


def provenance_warnings(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Git and package differences between a run's ``run.json`` and the current environment."""
    warn = []
    old, new = saved.get("git") or {}, current.get("git") or {}
    if not old.get("commit"):
        warn.append("the saved run has no git commit recorded")
    elif old.get("commit") != new.get("commit"):
        warn.append(f"saved git commit {old.get('commit')} differs from the current {new.get('commit')}")
    if old.get("dirty"):
        warn.append("the saved run's tree was dirty (uncommitted changes): its exact code is unknown")
    if new.get("dirty"):
        warn.append("the current tree is dirty (uncommitted changes)")
    pk_old, pk_new = saved.get("packages") or {}, current.get("packages") or {}
    for pkg in sorted(set(pk_old) | set(pk_new)):
        if pk_old.get(pkg) != pk_new.get(pkg):
            warn.append(f"package {pkg}: saved {pk_old.get(pkg)}, current {pk_new.get(pkg)}")
    if saved.get("python") and saved.get("python") != current.get("python"):
        warn.append(f"python: saved {saved['python']}, current {current.get('python')}")
    return warn


def seeds(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``*seed*`` key of a config container, dotted."""
    if isinstance(cfg, dict):
        for k, v in cfg.items():
            key = f"{prefix}{k}"
            if "seed" in str(k) and not isinstance(v, dict | list):
                yield key, v
            yield from seeds(v, key + ".")


def next_rerun_dir(run_dir: Path) -> Path:
    """``<run dir>/rerun-<n>`` with the first unused n >= 1."""
    n = 1
    while (run_dir / f"rerun-{n}").exists():
        n += 1
    return run_dir / f"rerun-{n}"


def load_config(run_dir: Path, keep_tracker: bool = False) -> DictConfig:
    """The saved resolved config; the tracker is replaced by the local one unless kept.

    Raises:
        SystemExit: when ``run_dir`` is not a run (no ``config.yaml`` / ``problems.jsonl``).
    """
    if not (run_dir / "config.yaml").exists() or not (run_dir / "problems.jsonl").exists():
        raise SystemExit(f"ets.rerun: {run_dir} has no config.yaml / problems.jsonl")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    assert isinstance(cfg, DictConfig)
    if not keep_tracker:
        cfg.tracker = {"_target_": "ets.trackers.local.LocalTracker"}
    return cfg


def check_provenance(run_dir: Path) -> list[str]:
    """Warnings comparing ``run_dir/run.json`` with the current code and environment."""
    from ets.run import ROOT

    path = Path(run_dir) / "run.json"
    if not path.exists():
        return [f"{path} is missing: commit and versions of the saved run are unknown"]
    return provenance_warnings(json.loads(path.read_text()), environment(ROOT))


def rerun(run_dir: Path, out: Path | None = None, keep_tracker: bool = False) -> tuple[Comparison, Path]:
    """Re-execute ``run_dir`` into ``out``; returns the comparison and the new run dir."""
    from ets.run import run

    run_dir = Path(run_dir)
    cfg = load_config(run_dir, keep_tracker)
    out = Path(out) if out is not None else next_rerun_dir(run_dir)
    if (out / "problems.jsonl").exists():
        raise SystemExit(f"ets.rerun: {out} already holds results; pick a new --out")
    run(cfg, out)
    comparison = compare(read_records(run_dir / "problems.jsonl"), read_records(out / "problems.jsonl"))
    return comparison, out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 0 when the per-problem results are identical, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="python -m ets.rerun", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="new run dir (default <run dir>/rerun-<n>)")
    ap.add_argument("--keep-tracker", action="store_true",
                    help="log with the saved tracker (e.g. W&B) instead of the local one")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.to_container(load_config(args.run_dir, args.keep_tracker))
    print("seeds: " + ", ".join(f"{k}={v}" for k, v in seeds(cfg)))
    for w in check_provenance(args.run_dir):
        print(f"warning: {w}", file=sys.stderr)
    comparison, out = rerun(args.run_dir, args.out, args.keep_tracker)
    print(f"rerun written to {out}")
    print(comparison.describe())
    return 0 if comparison.identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
