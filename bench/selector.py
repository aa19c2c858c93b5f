"""Time the ETS integer program: CP-SAT (``solve_cpsat``) vs the reference PuLP + CBC.

Usage, from the repo root: ``python bench/selector.py [--instances 200] [--problems 20]
[--widths 16 64 256] [--repeats 3] [--source search|random]``.

Instances are the real ``ETSInstance``s an ETS search builds: for each width the
synthetic experiment (``+experiment=synthetic``, paper lambda_s for that width) is run
over ``--problems`` problems with ``ETSSelector.build_instance`` wrapped to record every
instance, and up to ``--instances`` of them (evenly spaced over the run) are kept.
``--source random`` instead builds instances from random trees shaped like a search
frontier (no policy/PRM/embedder needed).

Each instance is solved ``--repeats`` times by each of: ``solve_cpsat`` as the ETS
selector calls it (exact presolve, then CP-SAT on what is left, skipped when presolve
decides every candidate), ``solve_cpsat(reduce=False)`` (CP-SAT on the whole program),
and PuLP + CBC; an instance's time is the fastest of its repeats (filters out other
processes' load). Reported per width: median and p95 wall milliseconds per solve
(Python model building + solve, ``Solution.seconds``), how many instances presolve
decided alone, the median time inside CP-SAT, the speedups (median CBC / median
CP-SAT), CBC's CPU time (this process plus the CBC subprocess), the mean candidate
count, and objective agreement (max |obj - obj_cbc| over both CP-SAT modes and how
many instances differ by more than 1e-6 per objective term, the bound of CP-SAT's
10^6 coefficient scaling).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ets.core.tree import Node, Tree  # noqa: E402
from ets.selectors.ets import ETSSelector  # noqa: E402
from ets.selectors.ets_ilp import ETSInstance, Solution, objective, solve_cpsat  # noqa: E402

CONF = ROOT / "conf"
PAPER_LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}
TARGET_MS, TARGET_SPEEDUP = 10.0, 10.0


def solve_pulp(inst: ETSInstance) -> Solution:
    """Solve the ETS program with PuLP + CBC, as the reference does (one CBC subprocess
    per call, no time limit, float coefficients)."""
    import pulp

    start = time.perf_counter()
    prob = pulp.LpProblem("ets", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(len(inst.weights))]
    y = [pulp.LpVariable(f"y{b}", cat="Binary") for b in range(len(inst.branch_parent))]
    below: list[list] = [[] for _ in y]  # per branch node, its children's variables
    for i, b in enumerate(inst.cand_parent):
        below[b].append(x[i])
    for b, p in enumerate(inst.branch_parent):
        if p >= 0:
            below[p].append(y[b])
    for b, kids in enumerate(below):
        for var in kids:
            prob += y[b] >= var
        prob += y[b] <= pulp.lpSum(kids)
    prob += pulp.lpSum(x) >= 1
    terms = [(w - inst.lambda_b * c, v) for w, c, v in zip(inst.weights, inst.cand_cost, x)]
    terms += [(-inst.lambda_b * c, v) for c, v in zip(inst.branch_cost, y)]
    if inst.clusters is not None:
        n_clusters = len(set(inst.clusters))
        for k in range(n_clusters):
            z = pulp.LpVariable(f"z{k}", cat="Binary")
            prob += z <= pulp.lpSum(v for v, c in zip(x, inst.clusters) if c == k)
            terms.append((inst.lambda_s / n_clusters, z))
    prob += pulp.lpSum(coef * v for coef, v in terms)
    prob.solve(pulp.PULP_CBC_CMD(msg=False))
    keep = [(v.value() or 0.0) > 0.5 for v in x]
    return Solution(keep, objective(inst, keep), pulp.LpStatus[prob.status], time.perf_counter() - start)


def record_search(width: int, problems: int) -> list[ETSInstance]:
    """Every instance an ETS search on the synthetic world builds at this width."""
    from hydra import compose, initialize_config_dir

    from ets.config import register_configs
    from ets.rundir.run import build_search

    register_configs()
    overrides = ["+experiment=synthetic", "selector=ets", f"search.width={width}",
                 f"dataset.limit={problems}",
                 f"selector.coverage_weight={PAPER_LAMBDA_S.get(width, 1.4)}"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    search, dataset = build_search(cfg)
    sel = search.selector
    recorded: list[ETSInstance] = []
    build = sel.build_instance

    def recording(candidates: list[Node], w: int) -> ETSInstance:
        inst = build(candidates, w)
        recorded.append(inst)
        return inst

    sel.build_instance = recording
    search.run(dataset.load(), on_result=lambda r: None)
    return recorded


class _TextEmbedder:
    """Equal texts → equal unit vectors, different texts → orthogonal ones."""

    def embed(self, texts: list[str]) -> np.ndarray:
        vocab = {t: i for i, t in enumerate(dict.fromkeys(texts))}
        out = np.zeros((len(texts), len(vocab)))
        out[np.arange(len(texts)), [vocab[t] for t in texts]] = 1.0
        return out


def record_random(width: int, n: int, seed: int = 0) -> list[ETSInstance]:
    """Instances from random frontiers: ``width`` children spread over the previous
    frontier's kept nodes (REBASE-like), several depths deep; sibling texts repeat."""
    rng = random.Random(seed)
    sel = ETSSelector(coverage_weight=PAPER_LAMBDA_S.get(width, 1.4), embedder=_TextEmbedder())
    out = []
    for _ in range(n):
        tree = Tree("prompt", (0,))
        frontier = [tree.root]
        for _ in range(rng.randint(1, 8)):
            parents = rng.sample(frontier, max(1, int(len(frontier) * rng.uniform(0.2, 0.8))))
            cands = []
            for j in range(width):
                p = parents[min(int(rng.expovariate(3 / len(parents))), len(parents) - 1)]
                cands.append(tree.add_child(p, f"step {rng.randrange(6)}", (j,), score=rng.random()))
            frontier = cands
        out.append(sel.build_instance(frontier, width))
    return out


def evenly(items: list, n: int) -> list:
    if len(items) <= n:
        return items
    return [items[int(i * len(items) / n)] for i in range(n)]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(xs, q))


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_width(insts: list[ETSInstance], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in ("cp", "raw", "cbc", "in_solver", "cbc_cpu")}
    diffs, not_opt, n_bad, n_presolved = [], 0, 0, 0
    for inst in insts:
        best = {k: float("inf") for k in times}
        for _ in range(repeats):
            a = solve_cpsat(inst)
            raw = solve_cpsat(inst, reduce=False)
            c1, k0 = time.process_time(), _children_cpu()
            b = solve_pulp(inst)
            c2, k1 = time.process_time(), _children_cpu()
            for key, val in (("cp", a.seconds), ("raw", raw.seconds), ("cbc", b.seconds),
                             ("in_solver", a.solver_seconds), ("cbc_cpu", c2 - c1 + k1 - k0)):
                best[key] = min(best[key], val * 1e3)
        for key, val in best.items():
            times[key].append(val)
        not_opt += a.status != "OPTIMAL" or raw.status != "OPTIMAL"
        n_presolved += a.presolved
        d = max(abs(a.objective - b.objective), abs(raw.objective - b.objective))
        diffs.append(d)
        n_terms = len(inst.weights) + len(inst.branch_cost) + len(set(inst.clusters or []))
        n_bad += d > 1e-6 * n_terms
    med = statistics.median
    return {
        "n": len(insts), "cands": statistics.mean(len(i.weights) for i in insts),
        "cp_med": med(times["cp"]), "cp_p95": pct(times["cp"], 95),
        "raw_med": med(times["raw"]), "raw_p95": pct(times["raw"], 95),
        "cbc_med": med(times["cbc"]), "cbc_p95": pct(times["cbc"], 95),
        "in_solver": med(times["in_solver"]), "cbc_cpu": med(times["cbc_cpu"]),
        "presolved": n_presolved, "max_diff": max(diffs), "n_bad": n_bad, "not_opt": not_opt,
    }


def bench_workers(insts: list[ETSInstance], workers: list[int], repeats: int) -> dict[int, dict[str, float]]:
    """Whole-call and in-solver ms of ``solve_cpsat`` per CP-SAT worker count (fastest of
    ``repeats`` per instance). More than one worker starts a thread pool in every call,
    whatever the model's size; 0 is CP-SAT's own default, one worker per core."""
    out = {}
    for nw in workers:
        whole, inside = [], []
        for inst in insts:
            runs = [solve_cpsat(inst, num_workers=nw) for _ in range(repeats)]
            whole.append(min(r.seconds for r in runs) * 1e3)
            inside.append(min(r.solver_seconds for r in runs) * 1e3)
        out[nw] = {"med": statistics.median(whole), "p95": pct(whole, 95), "in_solver": statistics.median(inside)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--instances", type=int, default=200, help="instances kept per width")
    ap.add_argument("--problems", type=int, default=20, help="problems searched per width")
    ap.add_argument("--source", choices=["search", "random"], default="search")
    ap.add_argument("--repeats", type=int, default=3, help="solves per instance and solver (min kept)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, nargs="*", default=[],
                    help="also time solve_cpsat with these CP-SAT worker counts (0 = one per core)")
    ap.add_argument("--no-cbc", action="store_true", help="skip the CP-SAT vs CBC table")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    solve_cpsat(ETSInstance([1.0], [0], [-1], [0.5], [0.5], 1.0))  # warm-up (imports)
    if not args.no_cbc:  # PuLP is only needed for the CBC table (absent on the GPU node)
        solve_pulp(ETSInstance([1.0], [0], [-1], [0.5], [0.5], 1.0))
    rows, worker_rows = {}, {}
    for w in args.widths:
        t0 = time.perf_counter()
        if args.source == "search":
            try:
                found = record_search(w, args.problems)
            except ImportError as exc:  # the synthetic world is missing
                print(f"cannot record searches ({exc}); using random trees", file=sys.stderr)
                args.source = "random"
        if args.source == "random":
            found = record_random(w, args.instances, args.seed)
        insts = evenly(found, args.instances)
        t1 = time.perf_counter()
        if not args.no_cbc:
            rows[w] = bench_width(insts, args.repeats)
        if args.workers:
            worker_rows[w] = bench_workers(insts, args.workers, args.repeats)
        print(f"width {w}: {len(found)} instances recorded in {t1 - t0:.1f}s, "
              f"{len(insts)} timed in {time.perf_counter() - t1:.1f}s", file=sys.stderr)

    if worker_rows:
        print_workers(worker_rows, args.workers)
    if not rows:
        return
    src = (f"ETS searches on the synthetic world, {args.problems} problems per width"
           if args.source == "search" else "random search-frontier trees")
    print(f"# ETS selector ILP: CP-SAT vs PuLP+CBC ({src})")
    print(f"Targets: CP-SAT median <= {TARGET_MS:g} ms at width 256 and >= {TARGET_SPEEDUP:g}x "
          "faster than CBC (median wall time).")
    print(f"Wall ms per solve (model building + solve), fastest of {args.repeats} per instance; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| width | instances | mean candidates | CP-SAT median | CP-SAT p95 "
          "| decided by presolve | median in CP-SAT | no-presolve median | no-presolve p95 "
          "| CBC median | CBC p95 | speedup | no-presolve speedup | CBC CPU median "
          "| max abs obj diff | obj differ |")
    print("|---:" * 16 + "|")
    for w, r in rows.items():
        print(f"| {w} | {r['n']} | {r['cands']:.1f} | {r['cp_med']:.3f} | {r['cp_p95']:.3f} "
              f"| {r['presolved']} | {r['in_solver']:.3f} | {r['raw_med']:.3f} "
              f"| {r['raw_p95']:.3f} | {r['cbc_med']:.2f} | {r['cbc_p95']:.2f} "
              f"| {r['cbc_med'] / r['cp_med']:.1f}x | {r['cbc_med'] / r['raw_med']:.1f}x "
              f"| {r['cbc_cpu']:.2f} | {r['max_diff']:.2e} | {r['n_bad']} |")
    print(f"\nCP-SAT solves not OPTIMAL (either mode): {sum(r['not_opt'] for r in rows.values())} "
          f"of {sum(r['n'] for r in rows.values())}")
    if 256 in rows:
        r = rows[256]
        ok_ms, ok_x = r["cp_med"] <= TARGET_MS, r["cbc_med"] / r["cp_med"] >= TARGET_SPEEDUP
        print(f"width 256: median target {'met' if ok_ms else 'MISSED'}, "
              f"speedup target {'met' if ok_x else 'MISSED'}")


def print_workers(rows: dict[int, dict[int, dict[str, float]]], workers: list[int]) -> None:
    print(f"# solve_cpsat by CP-SAT worker count ({os.cpu_count()} CPUs here; the ETS selector uses "
          "selector.num_workers, default 1)")
    print("Wall ms per call (presolve + model + solve), median / p95, and median ms inside CP-SAT.\n")
    print("| width | " + " | ".join(f"{nw} workers: median / p95 / in CP-SAT" for nw in workers) + " |")
    print("|---:" * (len(workers) + 1) + "|")
    for w, per in rows.items():
        print(f"| {w} | " + " | ".join(f"{per[nw]['med']:.3f} / {per[nw]['p95']:.3f} / {per[nw]['in_solver']:.3f}"
                                       for nw in workers) + " |")
    print()


if __name__ == "__main__":
    main()
