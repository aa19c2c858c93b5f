"""Compose → instantiate → search → write. The thin layer between Hydra and the loop."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ets.config import validate
from ets.kv.accounting import KVAccounting
from ets.results import ResultsFile, environment, summarize, write_json
from ets.rundir import Attempts, RunLock, check_resume, engine_over_attempts, engine_partial
from ets.search import Search

log = logging.getLogger("ets")
ROOT = Path(__file__).resolve().parents[1]


def _build(cfg: DictConfig, group: str) -> Any:
    node = cfg[group]
    log.info("%s: %s", group, node.get("_target_"))
    return instantiate(node, _convert_="partial")


def build_kv(cfg: DictConfig) -> KVAccounting:
    """Every backend in ``kv_backends``; the ``kv`` group's choice (with its settings) is the headline."""
    headline = _build(cfg, "kv")
    backends = {b.name: b for b in (instantiate(n) for n in cfg.kv_backends.values())}
    backends[headline.name] = headline
    return KVAccounting(list(backends.values()), headline.name)


def build_search(cfg: DictConfig) -> tuple[Search, Any]:
    """Instantiate every component; returns the search and the dataset."""
    dataset = _build(cfg, "dataset")
    s = cfg.search
    search = Search(
        _build(cfg, "policy"), _build(cfg, "prm"), _build(cfg, "expander"), _build(cfg, "selector"),
        build_kv(cfg), dataset.grader, width=s.width, max_depth=s.max_depth,
        max_tokens=s.max_tokens, seed=s.seed, concurrency=s.concurrency,
        aggregation=str(getattr(s.aggregation, "value", s.aggregation)),
    )
    return search, dataset


def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="problems", unit="problem", dynamic_ncols=True)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run (or resume) one search experiment into ``run_dir``; returns the summary.

    The directory is locked for the whole run and resumed only with the config it was
    started with (:mod:`ets.rundir`); counters are kept per attempt in ``run.json``.
    """
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir, wait=bool(cfg.get("lock_wait", False))):
        resolved = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))  # as config.yaml holds it
        forced = check_resume(run_dir, resolved, force=bool(cfg.get("resume_force", False)))
        return _run_locked(cfg, run_dir, forced)


def _run_locked(cfg: DictConfig, run_dir: Path, forced: list[str]) -> dict[str, Any]:
    search, dataset = build_search(cfg)
    tracker = _build(cfg, "tracker")
    problems = dataset.load()
    results = ResultsFile(run_dir / "problems.jsonl")
    records = results.load()  # the file is read once; new records are kept as they are written
    done = {r["id"] for r in records}
    ids = {p.id for p in problems}
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info("resuming: %d of %d problems already done", len(done & ids), len(problems))
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    attempt: dict[str, Any] = {"problems_todo": len(todo)}
    if forced:
        attempt["resume_forced"] = forced
    attempts = Attempts(run_dir, {**environment(ROOT), "seed": cfg.search.seed}, attempt, done)
    status = "failed"
    summary: dict[str, Any] | None = None
    tracker.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    attempts.start_clock()  # after the tracker's start-up, which is not search time

    def persist(record: str | None = None) -> None:
        attempts.progress(search.counters, getattr(search.selector, "stats", {}),
                          engine_partial(search.engine_series), record)

    try:
        with _progress(len(problems), len(problems) - len(todo)) as bar:
            def on_result(rec: dict[str, Any]) -> None:
                persist(record=rec["id"])
                results.append(rec)
                attempts.committed()
                records.append(rec)
                tracker.log_problem(rec)
                bar.update()

            def on_depth(metrics: dict[str, float]) -> None:
                persist()
                tracker.log_depth(metrics)
                bar.set_postfix(depth=metrics["depth_iteration"], refresh=False)

            counters = search.run(todo, on_result, on_depth)
        persist()
        attempts.finish("finished")
        status = "finished"
        totals = attempts.summary_counters()
        engine = totals.pop("engine")
        summary = summarize(
            _unique([r for r in records if r["id"] in ids]),
            **totals,
            kv_headline=search.kv.headline,
            counters_this_session=asdict(counters),
        )
        if engine is not None:
            summary["kv"]["engine"] = engine
        write_json(run_dir / "summary.json", summary)
        return summary
    finally:
        if status != "finished":
            attempts.finish(status)
        tracker.finish(summary)


def _unique(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per id (the first), warning about duplicates (a directory written by two
    processes before run directories were locked)."""
    seen: dict[str, dict[str, Any]] = {}
    for rec in records:
        seen.setdefault(rec["id"], rec)
    if len(seen) < len(records):
        log.warning("problems.jsonl holds %d records for %d problems; each problem is counted "
                    "once (its first record)", len(records), len(seen))
    return list(seen.values())


def engine_kv(series: list[dict[str, float]]) -> dict[str, float]:
    """Run-level engine numbers of one engine's series (see :func:`ets.rundir.engine_over_attempts`)."""
    part = engine_partial(series)
    assert part is not None, "an empty engine series"
    return engine_over_attempts([part])


def format_summary(summary: dict[str, Any]) -> str:
    """A small plain-text table for the terminal."""
    acc = summary["accuracy"]
    lines = [f"problems: {summary['problems']}   wall time: {summary['wall_time_s']:.1f}s   "
             f"tokens: {summary['tokens_generated']}",
             "accuracy  " + "  ".join(f"{k}={v:.3f}" for k, v in acc.items())]
    for name, kv in summary["kv"].items():
        star = " *" if name == summary.get("kv_headline") else ""
        lines.append(f"kv {name:<7} mean={kv['mean']:.1f}  peak={kv['peak']}{star}")
    return "\n".join(lines)
