"""Issue 8 §5 on the synthetic world: ETS with the paper's λ_s per width vs REBASE, and an
ETS λ_b × λ_s grid at W = 64 with its accuracy–KV Pareto front.

Every search is an ordinary run directory (``--out``/runs/NAME, resumable, readable by
``python -m ets.report``); runs go to ``--jobs`` worker processes, each loading the
embedding model once and sharing its per-text cache across its runs (embeddings are a
pure function of the text). Writes ``study.json``, ``study.md`` and ``grid.png`` to ``--out``.

    python bench/search.py --out runs/study --jobs 2
    python bench/search.py --problems 500 --seeds 3 --size 256=100x1 --grid-size 100x1

Every other method (issue 10: particle filtering/Gibbs, MCTS, A*, look-ahead, step-level
best-of-N, FFS, ...) at matched budgets, on this module's worker pool and run directories,
with tokens and PRM calls as compute axes: :mod:`bench.methods`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ets.rundir.results import read_records, summarize, write_json

CONF = Path(__file__).resolve().parents[1] / "conf"
#: ETS paper's coverage weight λ_s per width (hype-parameters/ets_*_math500.yaml); λ_b = 1.
PAPER_LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}
GRID_LAMBDA_B = (0.0, 0.5, 1.0, 2.0)
GRID_LAMBDA_S = (0.0, 0.7, 1.4, 2.8)
BACKENDS = ("paper", "radix")


@dataclass(frozen=True)
class Job:
    """One search: a run directory name and its config overrides."""

    name: str
    group: str  # "main" or "grid"
    method: str  # "ets" or "rebase"
    width: int
    problems: int
    seed: int
    lambda_b: float | None = None
    lambda_s: float | None = None
    overrides: tuple[str, ...] = field(default=())


def ets_job(group: str, width: int, problems: int, seed: int, lb: float, ls: float) -> Job:
    return Job(f"{group}-ets-w{width}-lb{lb:g}-ls{ls:g}-n{problems}-s{seed}", group, "ets", width,
               problems, seed, lb, ls, ("selector=ets", f"selector.lambda={lb}",
                                        f"selector.coverage_weight={ls}", "selector.temperature=0.2"))


def rebase_job(group: str, width: int, problems: int, seed: int) -> Job:
    return Job(f"{group}-rebase-w{width}-n{problems}-s{seed}", group, "rebase", width, problems,
               seed, overrides=("selector=rebase", "selector.temperature=0.2"))


def plan(widths: Sequence[int], sizes: dict[int, tuple[int, int]], grid: tuple[int, int] | None) -> list[Job]:
    """All searches: per width and seed ETS (paper λ_s) and REBASE; then the W = 64 grid."""
    jobs = []
    for w in widths:
        n, seeds = sizes[w]
        for s in range(seeds):
            jobs += [ets_job("main", w, n, s, 1.0, PAPER_LAMBDA_S[w]), rebase_job("main", w, n, s)]
    if grid:
        n, seeds = grid
        for s in range(seeds):
            jobs.append(rebase_job("grid", 64, n, s))
            jobs += [ets_job("grid", 64, n, s, lb, ls) for lb in GRID_LAMBDA_B for ls in GRID_LAMBDA_S]
    return jobs


_MODELS: dict[Any, Any] = {}


def _share_embedders() -> None:
    """One embedding model and text cache per worker process, whatever run builds it."""
    from ets.selectors.cluster import SentenceEmbedder

    load = SentenceEmbedder._load

    def shared(self: SentenceEmbedder) -> Any:
        key = (self.model_name, self.device)
        if key not in _MODELS:
            _MODELS[key] = (load(self), self._cache)
        model, self._cache = _MODELS[key]
        return model

    SentenceEmbedder._load = shared  # type: ignore[method-assign]


def run_job(job: Job, out: Path) -> tuple[Job, dict[str, Any]]:
    """Run (or resume) one search; returns its summary."""
    from hydra import compose, initialize_config_dir

    from ets.config import register_configs
    from ets.rundir.run import run

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # The job's own overrides last: a method may map its budget onto other keys
        # (bench/methods.py), and Hydra's later value wins.
        cfg = compose("config", overrides=[
            "+experiment=synthetic", f"search.width={job.width}",
            f"dataset.limit={job.problems}", f"search.seed={job.seed}", *job.overrides,
        ])
    start = time.perf_counter()
    summary = run(cfg, out / "runs" / job.name)
    summary["bench_wall_s"] = time.perf_counter() - start
    return job, summary


def _star(args: tuple[Job, Path]) -> tuple[Job, dict[str, Any]]:
    return run_job(*args)


def pool(runs: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]]) -> dict[str, Any]:
    """Pool several seeds' runs of one setting: each run is (problem records, selector_stats).

    Accuracy (weighted vote) is the mean over all (problem, seed) pairs with a t-based 95%
    CI over those pairs; KV is :func:`ets.rundir.results.summarize` over all records (``mean``
    over every (problem, seed, call), ``total`` the mean per-(problem, seed) sum); the
    selector counts are summed over seeds and their ratios recomputed
    (:func:`ets.selectors.ets.derived_stats`).
    """
    from ets.rundir.runs import mean_ci
    from ets.selectors.ets import _SUMS, derived_stats

    records = [r for recs, _ in runs for r in recs]
    acc, ci = mean_ci([float(r["correct"]["weighted_majority"]) for r in records])
    kv = summarize(records)["kv"]
    stats: dict[str, float] = {}
    for _, st in runs:
        for key in _SUMS:
            if key in st:
                stats[key] = stats.get(key, 0) + st[key]
    stats.update(derived_stats(stats) if stats else {})
    n = len(records)
    return {
        "pairs": n, "accuracy": acc, "ci95": ci,
        "kv": {b: {"mean": kv[b]["mean"], "total": kv[b]["total"]} for b in BACKENDS},
        "tokens_per_problem": sum(r["tokens"] for r in records) / n,
        "depths": sum(r["depths"] for r in records) / n,
        "selector_stats": stats,
    }


def ratios(base: dict[str, Any], row: dict[str, Any]) -> dict[str, float]:
    """KV of ``base`` (REBASE) over ``row`` per backend and statistic (> 1: row holds less)."""
    return {f"{b}.{s}": base["kv"][b][s] / row["kv"][b][s] if row["kv"][b][s] else float("nan")
            for b in BACKENDS for s in ("mean", "total")}


def _pct(row: dict[str, Any]) -> str:
    ci = "" if row["ci95"] is None else f" ± {100 * row['ci95']:.1f}"
    return f"{100 * row['accuracy']:.1f}{ci}"


def _sel(row: dict[str, Any], key: str, spec: str) -> str:
    st = row["selector_stats"]
    return format(st[key], spec) if key in st else "–"


def tables(result: dict[str, Any]) -> str:
    """The study as Markdown (main table, then the grid with its Pareto front)."""
    from ets.analysis.plots import pareto_front
    from ets.analysis.report import markdown

    head = ["W", "method", "problems×seeds", "acc % (wvote) ± 95% CI", "REBASE/x KV paper mean",
            "paper total", "radix mean", "radix total", "K/N", "kept/call", "REBASE-expand/call",
            "REBASE-expanded pruned (parent kept)", "tokens/problem", "depths"]
    rows = []
    for row in result["main"].values():
        r = row["ratio_vs_rebase"]
        rows.append([str(row["width"]), row["method"], f"{row['problems']}×{row['seeds']}", _pct(row),
                     *(f"{r[k]:.2f}x" for k in ("paper.mean", "paper.total", "radix.mean", "radix.total")),
                     _sel(row, "clusters_per_candidate", ".2f"), _sel(row, "kept_per_call", ".1f"),
                     _sel(row, "rebase_expand_per_call", ".1f"),
                     f"{_sel(row, 'rebase_pruned', '.0f')} ({_sel(row, 'rebase_pruned_parent_kept', '.0f')})",
                     f"{row['tokens_per_problem']:.0f}", f"{row['depths']:.2f}"])
    md = markdown(head, rows)
    grid = result.get("grid")
    if grid:
        points = list(grid.values())
        front = set(pareto_front([p["kv"]["paper"]["total"] for p in points],
                                 [p["accuracy"] for p in points]))
        head = ["λ_b", "λ_s", "acc % ± 95% CI", "KV paper total", "REBASE/x paper total",
                "REBASE/x radix total", "K/N", "kept/call", "Pareto"]
        rows = [[("REBASE" if p["method"] == "rebase" else f"{p['lambda_b']:g}"),
                 ("" if p["method"] == "rebase" else f"{p['lambda_s']:g}"), _pct(p),
                 f"{p['kv']['paper']['total']:.0f}", f"{p['ratio_vs_rebase']['paper.total']:.2f}x",
                 f"{p['ratio_vs_rebase']['radix.total']:.2f}x", _sel(p, "clusters_per_candidate", ".2f"),
                 _sel(p, "kept_per_call", ".1f"), "★" if i in front else ""]
                for i, p in enumerate(points)]
        n, s = result["grid_size"]
        md += (f"\n\nETS λ_b × λ_s grid at W = 64 ({n} problems × {s} seed(s)); ★ = on the "
               "accuracy–KV Pareto front (KV = paper total, REBASE included)\n\n" + markdown(head, rows))
    return md


def _size(text: str) -> tuple[int, int]:
    n, _, s = text.partition("x")
    return int(n), int(s or 1)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256], choices=sorted(PAPER_LAMBDA_S))
    ap.add_argument("--size", action="append", default=[], metavar="W=NxS",
                    help="problems x seeds for one width (default --problems x --seeds)")
    ap.add_argument("--grid", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--grid-size", type=_size, default=(100, 1), metavar="NxS")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/study"))
    args = ap.parse_args(argv)
    sizes = {w: (args.problems, args.seeds) for w in args.widths}
    for spec in args.size:
        w, _, ns = spec.partition("=")
        sizes[int(w)] = _size(ns)
    jobs = sorted(plan(args.widths, sizes, args.grid_size if args.grid else None),
                  key=lambda j: -j.width * j.problems)  # longest first, for the pool
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.jobs, initializer=_share_embedders) as workers:
        done = list(workers.imap_unordered(_star, [(j, args.out) for j in jobs]))
    runs: dict[tuple, list[tuple[list[dict], dict]]] = {}
    for job, summary in done:
        key = (job.group, job.method, job.width, job.problems, job.lambda_b, job.lambda_s)
        recs = read_records(args.out / "runs" / job.name / "problems.jsonl")
        runs.setdefault(key, []).append((recs, summary.get("selector_stats", {})))
    result: dict[str, Any] = {"wall_s": time.perf_counter() - start, "grid_size": args.grid_size,
                              "argv": argv, "main": {}, "grid": {}}
    for key in sorted(runs, key=lambda k: (k[0], k[2], k[1] == "rebase", k[4] or 0, k[5] or 0)):
        group, method, width, problems, lb, ls = key
        row = {"method": method, "width": width, "problems": problems, "seeds": len(runs[key]),
               "lambda_b": lb, "lambda_s": ls, **pool(runs[key])}
        result[group]["-".join(map(str, key[1:]))] = row
    for group in ("main", "grid"):
        for row in result[group].values():
            base = next(r for r in result[group].values()
                        if r["method"] == "rebase" and r["width"] == row["width"])
            row["ratio_vs_rebase"] = ratios(base, row)
    md = tables(result)
    write_json(args.out / "study.json", result)
    (args.out / "study.md").write_text(md + "\n")
    if result["grid"]:
        from ets.analysis.plots import plot_accuracy_vs_kv

        plot_accuracy_vs_kv([{"kv": p["kv"]["paper"]["total"], "accuracy": p["accuracy"],
                              "selector": p["method"], "label": f"{p['lambda_b']},{p['lambda_s']}"}
                             for p in result["grid"].values()], "paper", args.out / "grid.png",
                            xlabel="KV total (paper, tokens per problem)")
    print(md)
    print(f"\n{len(jobs)} searches in {result['wall_s']:.0f} s; {args.out}/study.json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
