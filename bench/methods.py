"""Every search method at matched budgets on the synthetic world (issue 10): accuracy against
generated tokens, PRM calls and KV, with the Pareto fronts.

A budget B is mapped onto each method's own config by one line of :data:`METHODS`; every
(method, B, seed) is an ordinary run directory (``--out``/runs/NAME, resumable, readable by
``python -m ets.report --pareto-x tokens``) run by :mod:`bench.search`'s worker pool.
Writes ``methods.json``, ``methods.md``, ``accuracy_vs_tokens.png`` and
``accuracy_vs_kv.png`` to ``--out``.

    python -m bench.methods --problems 500 --budgets 16 64 --seeds 1 --jobs 2 --out runs/methods
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # ``python bench/methods.py``: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.search import PAPER_LAMBDA_S, Job, _share_embedders, _star  # noqa: E402
from ets.rundir.results import VOTES, read_records, summarize, write_json  # noqa: E402

#: name -> Hydra overrides for budget ``{B}`` (``{lambda_s}``: the ETS paper's coverage
#: weight at width B). Every run also gets ``search.width={B}``; a method whose budget is
#: not a width overrides the keys it maps B onto (its overrides come last and win).
METHODS: dict[str, str] = {
    "ets": "selector=ets selector.coverage_weight={lambda_s}",  # B trajectories; paper λ_s
    "ets_improved": "selector=ets_improved selector.coverage_weight={lambda_s}",  # as ets
    "rebase": "selector=rebase",  # B trajectories to finish
    "rebase_trunc": "selector=rebase_trunc",  # B trajectories, top half of candidates
    "beam": "selector=beam",  # B trajectories: B/4 beams of 4 children (search-and-learn)
    "dvts": "selector=dvts",  # B trajectories: B/4 subtrees of 4
    "best_of_n": "selector=best_of_n expander=full",  # B whole samples, each scored once
    "ffs": "selector=ffs expander=fixed_tokens",  # B samples race in 64-token chunks, k=1
    "ffs_sync": "selector=ffs_sync expander=fixed_tokens",  # B samples, all stop at the first finish
    "ffs_async": "selector=ffs_async",  # B samples stepping; first = fewest tokens at finish
    "beam_lookahead1": "selector=beam selector.lookahead=1",  # as beam + 1 greedy rollout step
    "dvts_lookahead1": "selector=dvts selector.lookahead=1",  # as dvts + 1 greedy rollout step
    "pf": "selector=pf",  # B particles, argmax pick (its_hub)
    "pf_vote": "selector=pf selector.selection=vote",  # B particles, weighted vote
    "pgibbs": "selector=pgibbs selector.num_iterations=2",  # 2 sweeps of B/2 particles
    "mcts_puct": "selector=mcts_puct",  # B paths (OpenR num_path), 4 children per expansion
    "mcts_uct": "selector=mcts_uct",  # B iterations (llm-reasoners n_iters), depth limit 5
    # B solutions popped, k=4; 16 nodes expanded per round (exact A*, 1, is too slow at 500x64)
    "astar": "selector=astar selector.expand_per_round=16",
    "step_bon": "selector=step_bon",  # B trajectories, 8 candidates per step each
}
BACKEND = "paper"  # the KV the table and the KV plot use (the ETS paper's measure)


def overrides(method: str, budget: int) -> tuple[str, ...]:
    """The method's overrides at budget ``budget``.

    Raises:
        SystemExit: An unknown method (the allowed ones named).
    """
    if method not in METHODS:
        raise SystemExit(f"bench.methods: method {method!r} is unknown; allowed: {', '.join(METHODS)}")
    return tuple(METHODS[method].format(B=budget, lambda_s=PAPER_LAMBDA_S.get(budget, 1.4)).split())


def plan(methods: Sequence[str], budgets: Sequence[int], problems: int, seeds: int) -> list[Job]:
    """One run per (method, budget, seed), largest budgets first (for the pool)."""
    jobs = [Job(f"{m}-b{b}-n{problems}-s{s}", "methods", m, b, problems, s, overrides=overrides(m, b))
            for b in sorted(budgets, reverse=True) for m in methods for s in range(seeds)]
    return jobs


def row(method: str, budget: int, runs: Sequence[tuple[list[dict[str, Any]], dict[str, Any]]]) -> dict[str, Any]:
    """One table row from the seeds' runs, each (problem records, run summary).

    Accuracy per vote: the mean over all (problem, seed) pairs (weighted vote with a t-based
    95% CI over the pairs); tokens and PRM calls: means per (problem, seed)
    (:func:`ets.rundir.results.per_problem`); KV: :func:`ets.rundir.results.summarize` over all records
    (``total``: mean per-problem sum, ``mean``: over every (problem, seed, call)), None when
    no selection call was measured (best-of-N with the ``full`` expander never selects, so
    the reference's KV measure has nothing to count); wall time: the runs' wall time summed
    over seeds, per problem.
    """
    from ets.rundir.runs import mean_ci

    records = [r for recs, _ in runs for r in recs]
    summary = summarize(records)
    _, ci = mean_ci([float(r["correct"]["weighted_majority"]) for r in records])
    wall = sum(float(s.get("wall_time_s", 0.0)) for _, s in runs)
    measured = any(r["kv"][BACKEND]["per_depth"] for r in records)
    kv = summary["kv"][BACKEND]
    return {"method": method, "budget": budget, "problems": len(records) // max(1, len(runs)),
            "seeds": len(runs), "pairs": len(records), "accuracy": summary["accuracy"], "ci95": ci,
            "tokens": summary["per_problem"]["generated_tokens"],
            "rollout_tokens": summary["per_problem"]["rollout_tokens"],
            "prm_calls": summary["per_problem"]["prm_scored"],
            "kv": {"total": kv["total"], "mean": kv["mean"]} if measured else None,
            "wall_s": wall, "wall_ms_per_problem": 1000 * wall / max(1, len(records))}


def fronts(rows: Sequence[dict[str, Any]]) -> None:
    """Mark each row on the accuracy (weighted vote) vs tokens / vs KV total Pareto front
    (rows without a KV measurement are on neither side of the KV front)."""
    from ets.analysis.plots import pareto_front

    for axis in ("tokens", "kv"):
        on = [r for r in rows if axis == "tokens" or r["kv"] is not None]
        xs = [r["tokens"] if axis == "tokens" else r["kv"]["total"] for r in on]
        front = {id(on[i]) for i in pareto_front(xs, [r["accuracy"]["weighted_majority"] for r in on])}
        for r in rows:
            r.setdefault("front", {})[axis] = id(r) in front


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as Markdown, by budget then method."""
    from ets.analysis.report import markdown

    head = ["B", "method", "problems×seeds", "acc % wvote ± 95% CI", "acc % maj", "acc % best-of",
            "tokens/problem", "PRM calls/problem", f"KV {BACKEND} total", f"KV {BACKEND} mean",
            "wall ms/problem", "front tokens", "front KV"]
    out = []
    for r in rows:
        acc = r["accuracy"]
        ci = "" if r["ci95"] is None else f" ± {100 * r['ci95']:.1f}"
        prm = "—" if r["prm_calls"] is None else f"{r['prm_calls']:.1f}"
        kv = ("—", "—") if r["kv"] is None else (f"{r['kv']['total']:.0f}", f"{r['kv']['mean']:.1f}")
        out.append([str(r["budget"]), r["method"], f"{r['problems']}×{r['seeds']}",
                    f"{100 * acc['weighted_majority']:.1f}{ci}", f"{100 * acc['majority']:.1f}",
                    f"{100 * acc['best_of_n']:.1f}", f"{r['tokens']:.0f}", prm,
                    *kv,
                    f"{r['wall_ms_per_problem']:.1f}", "★" if r["front"]["tokens"] else "",
                    "★" if r["front"]["kv"] else ""])
    return markdown(head, out)


def plots(rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """Accuracy (weighted vote) vs tokens and vs KV total, one point per (method, B)."""
    from ets.analysis.plots import plot_accuracy_vs_kv

    points = [{"tokens": r["tokens"], "kv": None if r["kv"] is None else r["kv"]["total"],
               "selector": r["method"], "accuracy": r["accuracy"]["weighted_majority"],
               "label": f"{r['method']} B={r['budget']}"} for r in rows]
    images = [plot_accuracy_vs_kv(points, BACKEND, out / "accuracy_vs_tokens.png", x="tokens",
                                  xlabel="generated tokens per problem (tree steps + rollouts)")]
    measured = [p for p in points if p["kv"] is not None]
    if measured:
        images.append(plot_accuracy_vs_kv(measured, BACKEND, out / "accuracy_vs_kv.png",
                                          xlabel=f"KV total per problem ({BACKEND}, tokens)"))
    return images


def study(jobs: Sequence[Job], out: Path, workers: int) -> dict[str, Any]:
    """Run ``jobs`` (``workers`` processes) and build the result: rows, fronts, wall time."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_share_embedders) as pool:
        done = list(pool.imap_unordered(_star, [(j, out) for j in jobs]))
    runs: dict[tuple[str, int], list[tuple[list[dict[str, Any]], dict[str, Any]]]] = {}
    for job, summary in done:
        recs = read_records(out / "runs" / job.name / "problems.jsonl")
        runs.setdefault((job.method, job.width), []).append((recs, summary))
    order = {m: i for i, m in enumerate(METHODS)}
    keys = sorted(runs, key=lambda k: (k[1], order.get(k[0], len(order)), k[0]))
    rows = [row(m, b, runs[(m, b)]) for m, b in keys]
    fronts(rows)
    return {"wall_s": time.perf_counter() - start, "votes": list(VOTES), "kv_backend": BACKEND,
            "rows": rows}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--budgets", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--methods", nargs="+", default=list(METHODS), metavar="NAME",
                    help=f"default: all of {', '.join(METHODS)}")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/methods"))
    args = ap.parse_args(argv)
    jobs = plan(args.methods, args.budgets, args.problems, args.seeds)
    result = study(jobs, args.out, args.jobs)
    result["argv"] = list(argv) if argv is not None else sys.argv[1:]
    md = table(result["rows"])
    write_json(args.out / "methods.json", result)
    (args.out / "methods.md").write_text(md + "\n")
    plots(result["rows"], args.out)
    print(md)
    print(f"\n{len(jobs)} searches in {result['wall_s']:.0f} s; {args.out}/methods.json", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
