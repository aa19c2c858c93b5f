"""Compose → instantiate → search → write. The thin layer between Hydra and the loop."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ets.config import save_config, validate
from ets.core.search import Search
from ets.kv.accounting import KVAccounting
from ets.policies.vllm import begin_job
from ets.rundir.integrity import Attempts, RunLock, check_resume, engine_over_attempts, engine_partial
from ets.rundir.preflight import check_context
from ets.rundir.results import ResultsFile, environment, summarize, write_json
from ets.rundir.signals import checkpoint

log = logging.getLogger("ets")
ROOT = Path(__file__).resolve().parents[2]


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
        scheduler=str(getattr(s.scheduler, "value", s.scheduler)), round_chunk=s.round_chunk,
        switch_interval_ms=s.switch_interval_ms,
    )
    return search, dataset


def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="problems", unit="problem", dynamic_ncols=True)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run (or resume) one search experiment into ``run_dir``; returns the summary.

    The directory is locked for the whole run and resumed only with the config it was
    started with (:mod:`ets.rundir.integrity`); counters are kept per attempt in ``run.json``.
    """
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    begin_job()  # engines of earlier jobs in this process are idle from now on (issue 12.8)
    with RunLock(run_dir, wait=bool(cfg.get("lock_wait", False))):
        resolved = yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))  # as config.yaml holds it
        forced = check_resume(run_dir, resolved, force=bool(cfg.get("resume_force", False)))
        return _run_locked(cfg, run_dir, forced)


def _run_locked(cfg: DictConfig, run_dir: Path, forced: list[str]) -> dict[str, Any]:
    search, dataset = build_search(cfg)
    tracker = _build(cfg, "tracker")
    problems = dataset.load()
    check_context(search.policy, problems, cfg.search.max_tokens)
    results = ResultsFile(run_dir / "problems.jsonl")
    records = results.load()  # the file is read once; new records are kept as they are written
    done = {r["id"] for r in records}
    ids = {p.id for p in problems}
    todo = [p for p in problems if p.id not in done]
    if done:
        log.info("resuming: %d of %d problems already done", len(done & ids), len(problems))
    save_config(cfg, run_dir / "config.yaml")
    attempt: dict[str, Any] = {"problems_todo": len(todo)}
    if forced:
        attempt["resume_forced"] = forced
    attempts = Attempts(run_dir, {**environment(ROOT), "seed": cfg.search.seed}, attempt, done)
    status = "failed"
    summary: dict[str, Any] | None = None
    tracker.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    # Engines (vLLM: 30-65 s on a GPU) start before the clock: reported on their own.
    engine_start_s = sum(c.start_engine() for c in (search.policy, search.prm)
                         if callable(getattr(c, "start_engine", None)))
    attempts.start_clock()  # after the tracker's and engines' start-up, which is not search time
    checkpoint()  # a signal during start-up; handlers a library replaced (ets.rundir.signals)

    def persist(record: str | None = None) -> None:
        checkpoint()
        attempts.progress(search.counters, search.stats(),
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
        from ets.analysis.compute import run_compute  # FLOPs from the dumped trees

        rows = _unique([r for r in records if r["id"] in ids])  # one record per problem
        summary = summarize(
            rows,
            **totals,
            kv_headline=search.kv.headline,
            counters_this_session=asdict(counters),
            compute=run_compute(rows, OmegaConf.to_container(cfg, resolve=True)),  # FLOPs
        )
        summary["engine_start_s"] = engine_start_s
        if engine is not None:
            summary["kv"]["engine"] = engine
        summary["grading_failures"] = getattr(search.grader, "failures", 0)
        write_json(run_dir / "summary.json", summary)
        return summary
    finally:
        try:
            if status != "finished":
                attempts.finish(status)
            tracker.finish(summary)  # summary None (a crash, Ctrl-C, SIGTERM): finished as failed
        finally:
            close_components(search)


def close_components(search: Search) -> None:
    """Close the policy, the PRM and the grader (engines, worker processes) after a run,
    however it ended."""
    for part in (search.policy, search.prm, search.grader):
        close = getattr(part, "close", None)
        if callable(close):
            close()


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
    """Run-level engine numbers of one engine's series (see :func:`ets.rundir.integrity.engine_over_attempts`)."""
    part = engine_partial(series)
    assert part is not None, "an empty engine series"
    return engine_over_attempts([part])


def format_summary(summary: dict[str, Any]) -> str:
    """A small plain-text table for the terminal."""
    acc = summary["accuracy"]
    lines = [f"problems: {summary['problems']}   wall time: {summary['wall_time_s']:.1f}s   "
             f"tokens: {summary['tokens_generated']}",
             *([f"engine start: {summary['engine_start_s']:.1f}s (not in the wall time)"]
               if summary.get("engine_start_s") else []),
             "accuracy  " + "  ".join(f"{k}={v:.3f}" for k, v in acc.items())]
    for name, kv in summary["kv"].items():
        star = " *" if name == summary.get("kv_headline") else ""
        line = f"kv {name:<7} mean={kv['mean']:.1f}  peak={kv['peak']}"
        if "preemptions" in kv:  # the engine's own: requests preempted when its KV ran out
            line += f"  preemptions={kv['preemptions']:.0f}"
        if "total" in kv:  # per problem, summed over selection calls (the paper's number)
            line += f"  total={kv['total']:.1f}"
        if "after_pruning" in kv:
            after, newest = kv["after_pruning"], kv["newest_step"]
            line += (f"  after pruning: mean={after['mean']:.1f} total={after['total']:.1f}"
                     f"  newest-step share={newest['share']:.3f}")
        lines.append(line + star)
    return "\n".join(lines)
