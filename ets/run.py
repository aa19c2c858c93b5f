"""Compose → instantiate → search → write. The thin layer between Hydra and the loop."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ets.config import validate
from ets.kv.accounting import KVAccounting
from ets.results import ResultsFile, environment, summarize, write_json
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
        scheduler=str(getattr(s.scheduler, "value", s.scheduler)),
    )
    return search, dataset


def _progress(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="problems", unit="problem", dynamic_ncols=True)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Run (or resume) one search experiment into ``run_dir``; returns the summary."""
    validate(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
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
    previous = _previous_summary(run_dir)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    write_json(run_dir / "run.json", {**environment(ROOT), "seed": cfg.search.seed,
                                      "problems_todo": len(todo)})
    summary: dict[str, Any] | None = None
    tracker.start(OmegaConf.to_container(cfg, resolve=True), str(run_dir))
    start = time.perf_counter()  # after the tracker's start-up, which is not search time
    try:
        with _progress(len(problems), len(problems) - len(todo)) as bar:
            def on_result(rec: dict[str, Any]) -> None:
                results.append(rec)
                records.append(rec)
                tracker.log_problem(rec)
                bar.update()

            def on_depth(metrics: dict[str, float]) -> None:
                tracker.log_depth(metrics)
                bar.set_postfix(depth=metrics["depth_iteration"], refresh=False)

            counters = search.run(todo, on_result, on_depth)
        summary = summarize(
            [r for r in records if r["id"] in ids],
            wall_time_s=previous.get("wall_time_s", 0.0) + time.perf_counter() - start,
            policy_calls=previous.get("policy_calls", 0) + counters.policy_calls,
            prm_calls=previous.get("prm_calls", 0) + counters.prm_calls,
            kv_headline=search.kv.headline,
            selector_stats=search.stats(),
            counters_this_session=asdict(counters),
        )
        if search.engine_series:
            summary["kv"]["engine"] = engine_kv(search.engine_series)
        write_json(run_dir / "summary.json", summary)
        return summary
    finally:
        tracker.finish(summary)


def engine_kv(series: list[dict[str, float]]) -> dict[str, float]:
    """Run-level engine numbers: KV tokens in use (mean/peak over depth iterations,
    from the engine's own gauge) and the prefix-cache hit rate over the run."""
    used = [m.get("kv_tokens", 0.0) for m in series]
    last = series[-1]
    queries = last.get("prefix_cache_queries", 0.0)
    return {"mean": sum(used) / len(used), "peak": max(used),
            "prefix_cache_hit_rate": last.get("prefix_cache_hits", 0.0) / queries if queries else 0.0,
            "prompt_tokens_cached": last.get("prompt_tokens_cached", 0.0)}


def _previous_summary(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


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
