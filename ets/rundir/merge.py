"""``python -m ets.merge <dir> [--out DIR]``: merge the shard runs of one experiment.

A run split with ``dataset.shard=i/n`` (e.g. ``+sweep=shards4``, one SLURM array task per
shard) leaves ``n`` run dirs. This finds every run dir at any depth below ``<dir>``
(:func:`ets.rundir.runs.find_run_dirs`: runs nested in a run, like ``python -m ets.rerun``'s
``<run>/rerun-1``, are not shards), checks that they are shards of the same
experiment (configs equal but for ``dataset.shard`` and the tracker) covering every shard
``0..n-1``, and writes one run into ``--out`` (default ``<dir>/merged``): ``problems.jsonl``
(deduplicated by id), ``summary.json`` (:func:`ets.rundir.results.summarize`; calls and wall time
summed over the shards, once per shard), ``config.yaml`` (``dataset.shard: null``) and ``run.json``.

It fails (exit status 1, nothing written) on a missing shard, on two different records
for one problem id (timings left out of the comparison) and on an incomplete shard:
when the shard's dataset can be loaded from its config (synthetic, local JSONL) its
problem ids must all be present; otherwise its ``summary.json`` must exist and count
every record. ``--allow-incomplete`` merges what is there.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ets.datasets import parse_shard
from ets.rundir.integrity import reconcile, rederive_stats
from ets.rundir.rerun import strip_timing
from ets.rundir.results import (
    RunFileError,
    atomic_write,
    environment,
    read_json,
    read_records,
    summarize,
    write_json,
)
from ets.rundir.runs import find_run_dirs, flatten, load_config

log = logging.getLogger("ets.rundir.merge")
IGNORED_KEYS = ("dataset.shard", "tracker")
SUMMED = ("wall_time_s", "policy_calls", "prm_calls")


class MergeError(RuntimeError):
    """The runs cannot be merged; the message says why."""


@dataclass
class ShardRun:
    """One run dir: its resolved config, shard ``(i, n)`` (None: unsharded) and records."""

    path: Path
    config: dict[str, Any]
    shard: tuple[int, int] | None
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None


def load_run(path: Path) -> ShardRun:
    """Read one run dir (read-only: a torn last line is skipped, not truncated).

    Raises:
        MergeError: naming the file when one is unreadable or the shard is invalid.
    """
    try:
        config = load_config(path / "config.yaml")
        summary_path = path / "summary.json"
        summary = read_json(summary_path) if summary_path.exists() else None
    except RunFileError as exc:
        raise MergeError(str(exc)) from None
    try:
        shard = parse_shard((config.get("dataset") or {}).get("shard"))
    except ValueError as exc:
        raise MergeError(str(exc)) from exc
    return ShardRun(path, config, shard, read_records(path / "problems.jsonl"), summary)


def _compared(config: dict[str, Any]) -> dict[str, Any]:
    """The config's leaves (:func:`ets.rundir.runs.flatten`) less those under :data:`IGNORED_KEYS`."""
    return {k: v for k, v in flatten(config).items()
            if not any(k == i or k.startswith(i + ".") for i in IGNORED_KEYS)}


def check_same_experiment(runs: Sequence[ShardRun]) -> None:
    """All configs equal but for :data:`IGNORED_KEYS`.

    Raises:
        MergeError: naming the differing keys and the first run that differs.
    """
    base = _compared(runs[0].config)
    for run in runs[1:]:
        other = _compared(run.config)
        keys = sorted(k for k in base.keys() | other.keys() if base.get(k) != other.get(k))
        if keys:
            raise MergeError(
                f"{run.path} is not a shard of the same experiment as {runs[0].path}: "
                f"config differs in {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}. "
                "Point python -m ets.merge at a dir holding the shards of one experiment only.")


def check_shards(runs: Sequence[ShardRun]) -> int:
    """Every run sharded ``i/n`` with one ``n``, and every ``i`` present; returns ``n``.

    Raises:
        MergeError: on unsharded runs, mixed ``n`` or missing shards.
    """
    unsharded = [r.path for r in runs if r.shard is None]
    if unsharded:
        raise MergeError(f"not a shard run (dataset.shard is null): {unsharded[0]}")
    counts = {r.shard[1] for r in runs if r.shard}
    if len(counts) > 1:
        raise MergeError(f"runs split into different shard counts: {sorted(counts)}")
    n = counts.pop()
    seen = [r.shard[0] for r in runs if r.shard]
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise MergeError(f"missing shards: {', '.join(f'{i}/{n}' for i in missing)} "
                         f"(found {len(set(seen))} of {n})")
    for i in sorted({i for i in seen if seen.count(i) > 1}):
        log.warning("shard %d/%d appears in %d run dirs; their records are deduplicated",
                    i, n, seen.count(i))
    return n


def expected_ids(run: ShardRun) -> list[str] | None:
    """The problem ids the shard's dataset holds, or None when it cannot be loaded here."""
    from hydra.utils import instantiate

    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # never download while checking
    try:
        dataset = instantiate(run.config["dataset"], _recursive_=False)
        return [p.id for p in dataset.load()]
    except Exception as exc:  # any dataset that cannot be rebuilt here: fall back
        log.info("cannot load the dataset of %s (%s: %s); checking summary.json instead",
                 run.path, type(exc).__name__, exc)
        return None
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def check_complete(run: ShardRun, ids: list[str] | None) -> None:
    """Raises MergeError when the shard run has not finished every problem."""
    got = {r["id"] for r in run.records}
    if ids is not None:
        missing, extra = set(ids) - got, got - set(ids)
        if missing:
            raise MergeError(f"{run.path}: {len(missing)} of {len(ids)} problems not done "
                             f"(e.g. {sorted(missing)[0]}); re-run that shard to finish it")
        if extra:
            raise MergeError(f"{run.path}: {len(extra)} problems not in its dataset shard "
                             f"(e.g. {sorted(extra)[0]})")
    elif run.summary is None:
        raise MergeError(f"{run.path}: no summary.json, the run has not finished")
    elif run.summary.get("problems") != len(got):
        raise MergeError(f"{run.path}: summary.json counts {run.summary.get('problems')} problems "
                         f"but problems.jsonl holds {len(got)}")


def merge_records(runs: Sequence[ShardRun], orders: Sequence[list[str] | None]) -> list[dict[str, Any]]:
    """Records of all runs, one per id, interleaved back into dataset order.

    Shard ``i`` of ``n`` holds problems ``i, i+n, ...``, so the k-th problem of every
    shard comes before the (k+1)-th of any. Within a shard the dataset order is used when
    known (``orders``), else the file order.

    Raises:
        MergeError: when one id has two records that differ (timings left out).
    """
    keyed: dict[str, tuple[tuple[int, int], dict[str, Any], Path]] = {}
    for run, order in zip(runs, orders):
        pos = {pid: k for k, pid in enumerate(order)} if order is not None else {}
        shard = run.shard[0] if run.shard else 0
        for k, rec in enumerate(run.records):
            pid = rec["id"]
            key = (pos.get(pid, k), shard)
            if pid in keyed:
                _, first, where = keyed[pid]
                a, b = strip_timing(first), strip_timing(rec)
                if a != b:
                    diff = sorted(f for f in a.keys() | b.keys() if a.get(f) != b.get(f))
                    raise MergeError(f"conflicting records for {pid} in {where} and {run.path} "
                                     f"(differ in {', '.join(diff)})")
                continue
            keyed[pid] = (key, rec, run.path)
    return [rec for _, rec, _ in sorted(keyed.values(), key=lambda t: t[0])]


def _summed_stats(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for s in summaries:
        for k, v in (s.get("selector_stats") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                stats[k] = stats.get(k, 0) + v
    return rederive_stats(stats)


def _counted_runs(runs: Sequence[ShardRun]) -> list[ShardRun]:
    """One run per shard for the counters: a shard found in several dirs (a copy, a
    requeue into a new dir) has its records deduplicated, so its calls and wall time are
    taken once too, from the dir holding the most records."""
    best: dict[Any, ShardRun] = {}
    for r in runs:
        key = r.shard[0] if r.shard else r.path
        if key not in best or len(r.records) > len(best[key].records):
            best[key] = r
    return [r for r in runs if any(r is b for b in best.values())]


def _counters(run: ShardRun) -> dict[str, float]:
    """Calls and wall time of one shard: its summary's; for an unfinished shard the
    committed counters of its attempts (``run.json``), else its records' own timings."""
    if run.summary is not None:
        return {k: run.summary.get(k, 0) for k in SUMMED}
    try:
        attempts = read_json(run.path / "run.json").get("attempts") or []
    except (OSError, RunFileError, AttributeError):
        attempts = []
    if attempts:
        attempts = reconcile(attempts, {rec["id"] for rec in run.records})
        return {k: sum((a.get("committed") or {}).get(k, 0) for a in attempts) for k in SUMMED}
    return {"wall_time_s": sum(rec.get("wall_time_s", 0.0) for rec in run.records),
            "policy_calls": 0, "prm_calls": 0}


def merge(root: Path, out: Path | None = None, allow_incomplete: bool = False) -> dict[str, Any]:
    """Merge the shard runs below ``root`` into ``out``; returns the merged summary.

    Raises:
        MergeError: when the runs cannot be merged (nothing is written then).
    """
    root = Path(root)
    out = Path(out) if out is not None else root / "merged"
    dirs = find_run_dirs(root, exclude=out)
    if not dirs:
        raise MergeError(f"no run dirs (problems.jsonl + config.yaml) below {root}")
    runs = [load_run(d) for d in dirs]
    check_same_experiment(runs)
    n = check_shards(runs)
    orders = [expected_ids(r) for r in runs]
    complete = True
    for run, ids in zip(runs, orders):
        try:
            check_complete(run, ids)
        except MergeError as exc:
            if not allow_incomplete:
                raise
            log.warning("%s (merged anyway)", exc)
            complete = False
    records = merge_records(runs, orders)
    summaries = [r.summary for r in runs if r.summary is not None]
    counted = _counted_runs(runs)
    extra: dict[str, Any] = {k: sum(_counters(r)[k] for r in counted) for k in SUMMED}
    headline = next((s["kv_headline"] for s in summaries if "kv_headline" in s), None)
    summary = summarize(
        records, **extra, kv_headline=headline,
        selector_stats=_summed_stats([r.summary for r in counted if r.summary is not None]),
        merged_from=[str(r.path) for r in runs], shards=n, complete=complete,
    )
    if len(counted) < len(runs):
        summary["counters_from"] = [str(r.path) for r in counted]
    config = copy.deepcopy(runs[0].config)
    config.setdefault("dataset", {})["shard"] = None
    _write(out, records, config, summary, runs)
    return summary


def _write(out: Path, records: list[dict[str, Any]], config: dict[str, Any],
           summary: dict[str, Any], runs: Sequence[ShardRun]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "problems.jsonl",
                 "".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records).encode())
    OmegaConf.save(OmegaConf.create(config), out / "config.yaml")
    write_json(out / "run.json", {**environment(Path(__file__).resolve().parents[2]),
                                  "merged_from": [str(r.path) for r in runs]})
    write_json(out / "summary.json", summary)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m ets.merge", description=__doc__.split("\n")[0])
    parser.add_argument("dir", type=Path, help="dir holding the shard runs (searched recursively)")
    parser.add_argument("--out", type=Path, default=None, help="merged run dir (default: <dir>/merged)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="merge even when a shard has not finished every problem")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="ets.merge: %(message)s")
    try:
        summary = merge(args.dir, args.out, args.allow_incomplete)
    except MergeError as exc:
        print(f"ets.merge: {exc}", file=sys.stderr)
        return 1
    from ets.rundir.run import format_summary

    out = args.out or args.dir / "merged"
    print(f"merged {summary['shards']} shards ({len(summary['merged_from'])} run dirs) into {out}")
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
