"""Time the ETS integer program: CP-SAT (``solve_cpsat``) vs the reference PuLP + CBC.

Usage, from the repo root: ``python bench/selector.py [--instances 200] [--problems 20]
[--widths 16 64 256] [--repeats 3] [--source search|random]``.

Instances are the real ``ETSInstance``s an ETS search builds: for each width the
synthetic experiment (``+experiment=synthetic``, paper lambda_s for that width) is run
over ``--problems`` problems with ``ETSSelector.build_instance`` wrapped to record every
instance, and up to ``--instances`` of them (evenly spaced over the run) are kept.
``--source random`` instead builds instances from random trees shaped like a search
frontier (no policy/PRM/embedder needed).

Both solvers then solve the same instances, each ``--repeats`` times (an instance's
time is the fastest of its repeats, which filters out other processes' load). Reported
per width: median and p95 wall milliseconds per solve (model building + solve, as
``Solution.seconds``), the speedup (median CBC / median CP-SAT), median CPU
milliseconds (CP-SAT: this process, and the part spent inside ``CpSolver.solve``, the
rest being Python model building; CBC: this process plus the CBC subprocess), the
number of instances, the mean candidate count, and objective agreement (max
|obj_cpsat - obj_cbc| and how many instances differ by more than 1e-6 per objective
term, the bound of CP-SAT's 10^6 coefficient scaling).
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

from ortools.sat.python import cp_model  # noqa: E402

from ets.selectors.ets import ETSSelector  # noqa: E402
from ets.selectors.ets_ilp import ETSInstance, solve_cpsat, solve_pulp  # noqa: E402
from ets.tree import Node, Tree  # noqa: E402

CONF = ROOT / "conf"
PAPER_LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}
TARGET_MS, TARGET_SPEEDUP = 10.0, 10.0


def record_search(width: int, problems: int) -> list[ETSInstance]:
    """Every instance an ETS search on the synthetic world builds at this width."""
    from hydra import compose, initialize_config_dir

    from ets.config import register_configs
    from ets.run import build_search

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


class _SolveClock:
    """CPU seconds spent inside ``CpSolver.solve`` (the rest of ``solve_cpsat`` is Python)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._solve = cp_model.CpSolver.solve

    def __enter__(self) -> _SolveClock:
        clock, solve = self, self._solve

        def timed(solver, *args, **kwargs):
            t0 = time.process_time()
            try:
                return solve(solver, *args, **kwargs)
            finally:
                clock.seconds += time.process_time() - t0

        cp_model.CpSolver.solve = timed
        return self

    def __exit__(self, *exc: object) -> None:
        cp_model.CpSolver.solve = self._solve


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_width(insts: list[ETSInstance], repeats: int) -> dict[str, float]:
    cp_ms, cbc_ms, cp_cpu, cp_solve_cpu, cbc_cpu = [], [], [], [], []
    diffs, not_opt, n_bad = [], 0, 0
    for inst in insts:
        best = {k: float("inf") for k in ("cp", "cbc", "cp_cpu", "cp_solve", "cbc_cpu")}
        for _ in range(repeats):
            with _SolveClock() as clock:
                c0 = time.process_time()
                a = solve_cpsat(inst)
                c1 = time.process_time()
            k0 = _children_cpu()
            b = solve_pulp(inst)
            c2, k1 = time.process_time(), _children_cpu()
            for key, val in (("cp", a.seconds), ("cbc", b.seconds), ("cp_cpu", c1 - c0),
                             ("cp_solve", clock.seconds), ("cbc_cpu", c2 - c1 + k1 - k0)):
                best[key] = min(best[key], val * 1e3)
        cp_ms.append(best["cp"])
        cbc_ms.append(best["cbc"])
        cp_cpu.append(best["cp_cpu"])
        cp_solve_cpu.append(best["cp_solve"])
        cbc_cpu.append(best["cbc_cpu"])
        not_opt += a.status != "OPTIMAL"
        d = abs(a.objective - b.objective)
        diffs.append(d)
        n_terms = len(inst.weights) + len(inst.branch_cost) + len(set(inst.clusters or []))
        n_bad += d > 1e-6 * n_terms
    med = statistics.median
    return {
        "n": len(insts), "cands": statistics.mean(len(i.weights) for i in insts),
        "cp_med": med(cp_ms), "cp_p95": pct(cp_ms, 95),
        "cbc_med": med(cbc_ms), "cbc_p95": pct(cbc_ms, 95),
        "cp_cpu": med(cp_cpu), "cp_solve_cpu": med(cp_solve_cpu), "cbc_cpu": med(cbc_cpu),
        "max_diff": max(diffs), "n_bad": n_bad, "not_opt": not_opt,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--instances", type=int, default=200, help="instances kept per width")
    ap.add_argument("--problems", type=int, default=20, help="problems searched per width")
    ap.add_argument("--source", choices=["search", "random"], default="search")
    ap.add_argument("--repeats", type=int, default=3, help="solves per instance and solver (min kept)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    solve_cpsat(ETSInstance([1.0], [0], [-1], [0.5], [0.5], 1.0))  # warm-up (imports)
    solve_pulp(ETSInstance([1.0], [0], [-1], [0.5], [0.5], 1.0))
    rows = {}
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
        rows[w] = bench_width(insts, args.repeats)
        print(f"width {w}: {len(found)} instances recorded in {t1 - t0:.1f}s, "
              f"{len(insts)} timed in {time.perf_counter() - t1:.1f}s", file=sys.stderr)

    src = (f"ETS searches on the synthetic world, {args.problems} problems per width"
           if args.source == "search" else "random search-frontier trees")
    print(f"# ETS selector ILP: CP-SAT vs PuLP+CBC ({src})")
    print(f"Targets: CP-SAT median <= {TARGET_MS:g} ms at width 256 and >= {TARGET_SPEEDUP:g}x "
          "faster than CBC (median wall time).")
    print(f"Wall ms per solve (model building + solve), fastest of {args.repeats} per instance; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end.\n")
    print("| width | instances | mean candidates | CP-SAT median | CP-SAT p95 | CBC median "
          "| CBC p95 | speedup | CP-SAT CPU median (in solve) | CBC CPU median "
          "| max abs obj diff | obj differ |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w, r in rows.items():
        print(f"| {w} | {r['n']} | {r['cands']:.1f} | {r['cp_med']:.2f} | {r['cp_p95']:.2f} "
              f"| {r['cbc_med']:.2f} | {r['cbc_p95']:.2f} | {r['cbc_med'] / r['cp_med']:.1f}x "
              f"| {r['cp_cpu']:.2f} ({r['cp_solve_cpu']:.2f}) | {r['cbc_cpu']:.2f} "
              f"| {r['max_diff']:.2e} | {r['n_bad']} |")
    print(f"\nCP-SAT solves not OPTIMAL: {sum(r['not_opt'] for r in rows.values())} "
          f"of {sum(r['n'] for r in rows.values())}")
    if 256 in rows:
        r = rows[256]
        ok_ms, ok_x = r["cp_med"] <= TARGET_MS, r["cbc_med"] / r["cp_med"] >= TARGET_SPEEDUP
        print(f"width 256: median target {'met' if ok_ms else 'MISSED'}, "
              f"speedup target {'met' if ok_x else 'MISSED'}")


if __name__ == "__main__":
    main()
