"""``python -m ets.rerun <run dir> [--out DIR]``: re-execute a saved run and compare.

The run is re-executed from its saved, resolved ``config.yaml`` (every seed is in it) with
:func:`ets.rundir.run.run` into a new dir (default ``<run dir>/rerun-<n>``), then its
``problems.jsonl`` is compared with the original record by record, timing fields left
out. Floats are compared with a stated tolerance (``--tolerance``, default
:data:`TOLERANCE`; 0 asks for bit-exact equality) and the largest difference is reported:
real-model runs that were resumed re-run some problems in another batch composition, which
moves PRM scores in the last float bits (~1e-6). Warns when the saved git commit differs
from the current one, when either tree was dirty, or when package versions differ
(``run.json``). Exit status 0 when equal.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ets.rundir.results import environment, read_records

TOLERANCE = 1e-5  # |a - b| <= TOLERANCE * max(1, |a|, |b|)
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
    tolerance: float = TOLERANCE
    max_diff: float = 0.0  # largest |a - b| over every compared float
    max_diff_at: str = ""  # where: "<id>: <key path>"

    @property
    def identical(self) -> bool:
        """Every problem compared and equal (floats within :attr:`tolerance`)."""
        return bool(self.same) and not (self.different or self.missing or self.extra)

    def describe(self) -> str:
        """A few lines for the terminal."""
        lines = [f"identical problems: {len(self.same)}, different: {len(self.different)}, "
                 f"missing in rerun: {len(self.missing)}, extra in rerun: {len(self.extra)}"]
        for pid, keys in list(self.different.items())[:10]:
            lines.append(f"  {pid}: differs in {', '.join(keys)}")
        where = f" at {self.max_diff_at}" if self.max_diff_at else ""
        lines.append(f"largest float difference: {self.max_diff:.3g}{where} "
                     f"(tolerance {self.tolerance:g}, relative above 1)")
        if not self.identical:
            lines.append("per-problem results DIFFER")
        elif self.max_diff == 0:
            lines.append("per-problem results are IDENTICAL (bit-exact)")
        else:
            lines.append("per-problem results are IDENTICAL within the tolerance")
        return "\n".join(lines)


def _close(a: float, b: float, tolerance: float) -> bool:
    return abs(a - b) <= tolerance * max(1.0, abs(a), abs(b))


def _float_diffs(a: Any, b: Any, path: str, out: list[tuple[float, str, bool]], tolerance: float) -> bool:
    """Whether ``a`` equals ``b`` (floats within ``tolerance``); every pair of differing
    floats is added to ``out`` as (|a - b|, path, within tolerance)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = list(dict.fromkeys([*a, *b]))
        return all([_float_diffs(a.get(k), b.get(k), f"{path}.{k}" if path else str(k), out, tolerance)
                    for k in keys]) and set(a) == set(b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all([_float_diffs(x, y, f"{path}[{i}]", out, tolerance)
                                         for i, (x, y) in enumerate(zip(a, b))])
    numbers = (int, float)
    if (isinstance(a, float) or isinstance(b, float)) and isinstance(a, numbers) and isinstance(b, numbers) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True
        ok = _close(float(a), float(b), tolerance)
        out.append((abs(float(a) - float(b)), path, ok))
        return ok
    return a == b


def compare(original: Sequence[dict[str, Any]], rerun: Sequence[dict[str, Any]],
            tolerance: float = TOLERANCE) -> Comparison:
    """Match records by ``id`` and compare them minus timing fields; floats are equal when
    ``|a - b| <= tolerance * max(1, |a|, |b|)`` (``tolerance=0``: bit-exact)."""
    a = {r["id"]: strip_timing(r) for r in original}
    b = {r["id"]: strip_timing(r) for r in rerun}
    out = Comparison(missing=sorted(set(a) - set(b)), extra=sorted(set(b) - set(a)), tolerance=tolerance)
    for pid in sorted(set(a) & set(b)):
        diffs: list[tuple[float, str, bool]] = []
        keys = sorted(k for k in set(a[pid]) | set(b[pid])
                      if not _float_diffs(a[pid].get(k), b[pid].get(k), str(k), diffs, tolerance))
        for diff, path, _ in diffs:
            if diff > out.max_diff:
                out.max_diff, out.max_diff_at = diff, f"{pid}: {path}"
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
    from ets.rundir.run import ROOT

    path = Path(run_dir) / "run.json"
    if not path.exists():
        return [f"{path} is missing: commit and versions of the saved run are unknown"]
    return provenance_warnings(json.loads(path.read_text()), environment(ROOT))


def rerun(run_dir: Path, out: Path | None = None, keep_tracker: bool = False,
          tolerance: float = TOLERANCE) -> tuple[Comparison, Path]:
    """Re-execute ``run_dir`` into ``out``; returns the comparison and the new run dir."""
    from ets.rundir.run import run

    run_dir = Path(run_dir)
    cfg = load_config(run_dir, keep_tracker)
    out = Path(out) if out is not None else next_rerun_dir(run_dir)
    if (out / "problems.jsonl").exists():
        raise SystemExit(f"ets.rerun: {out} already holds results; pick a new --out")
    run(cfg, out)
    comparison = compare(read_records(run_dir / "problems.jsonl"), read_records(out / "problems.jsonl"),
                         tolerance)
    return comparison, out


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; exit status 0 when the per-problem results are identical, 1 otherwise."""
    ap = argparse.ArgumentParser(prog="python -m ets.rerun", description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="new run dir (default <run dir>/rerun-<n>)")
    ap.add_argument("--keep-tracker", action="store_true",
                    help="log with the saved tracker (e.g. W&B) instead of the local one")
    ap.add_argument("--tolerance", type=float, default=TOLERANCE,
                    help=f"floats are equal when |a-b| <= tolerance * max(1, |a|, |b|) (default {TOLERANCE:g}; "
                         "0: bit-exact)")
    args = ap.parse_args(argv)
    if args.tolerance < 0:
        ap.error(f"--tolerance={args.tolerance} must be >= 0")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    cfg = OmegaConf.to_container(load_config(args.run_dir, args.keep_tracker))
    print("seeds: " + ", ".join(f"{k}={v}" for k, v in seeds(cfg)))
    for w in check_provenance(args.run_dir):
        print(f"warning: {w}", file=sys.stderr)
    comparison, out = rerun(args.run_dir, args.out, args.keep_tracker, args.tolerance)
    print(f"rerun written to {out}")
    print(comparison.describe())
    return 0 if comparison.identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
