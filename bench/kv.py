"""Time the KV backends on a synthetic search tree.

Usage, from the repo root: ``python -m bench.kv [--repeats 200] [--seed 0]``
(or ``python bench/kv.py`` once ``ets`` is installed).

The tree mimics a beam-like search: a 100-token prompt, 10 depths of ~60-token
steps (so ~600-token paths), and at each depth ``live`` frontier nodes, each
expanded into 4 children (one in four an exact copy of a sibling) before
``live`` of them are kept. In the ``header`` trees every step starts with the
same 4 tokens (like "## Step k:"), so siblings share tokens across nodes.
Prints the median microseconds per ``measure`` call, then per selection call of
:class:`ets.kv.accounting.ProblemKV` (all three backends, before and after pruning,
half the frontier kept).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from ets.core.tree import Node, Tree
from ets.kv import PagedKV, PaperKV, RadixKV
from ets.kv.accounting import KVAccounting
from ets.protocols import KVBackend


def synthetic_tree(
    n_live: int, rng: random.Random, header: tuple[int, ...] = (), depth: int = 10, step: int = 60
) -> tuple[Tree, list[Node]]:
    """A random tree and its final frontier of ``n_live`` nodes."""
    tree = Tree("prompt", tuple(rng.randrange(150_000) for _ in range(100)))
    frontier = [tree.root]
    for _ in range(depth):
        candidates: list[Node] = []
        for parent in frontier:
            for _ in range(4):
                if parent.children and rng.random() < 0.25:
                    ids = parent.children[-1].token_ids
                else:
                    n = max(1, int(rng.gauss(step, step / 3)))
                    ids = header + tuple(rng.randrange(150_000) for _ in range(n))
                candidates.append(tree.add_child(parent, "s", ids))
        frontier = rng.sample(candidates, min(n_live, len(candidates)))
    return tree, frontier


def median_us(backend: KVBackend, tree: Tree, live: list[Node], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        backend.measure(tree, live)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    backends: list[KVBackend] = [PaperKV(), RadixKV(), PagedKV(16)]
    print(f"{'steps':>7} {'live':>5} {'mean len':>9} {'backend':>8} {'median us':>10} {'KV tokens':>10}")
    for kind, header in (("random", ()), ("header", (11, 12, 13, 14))):
        for n_live in (64, 256):
            tree, live = synthetic_tree(n_live, rng, header)
            mean_len = statistics.mean(len(tree.context(n)[1]) for n in live)
            for b in backends:
                us = median_us(b, tree, live, args.repeats)
                kv = b.measure(tree, live)
                print(f"{kind:>7} {n_live:>5} {mean_len:>9.0f} {b.name:>8} {us:>10.1f} {kv:>10}")
            accounting = KVAccounting(backends, "paper")
            counts = [i % 2 for i in range(len(live))]
            times = []
            for _ in range(args.repeats):
                log = accounting.problem()
                t0 = time.perf_counter()
                log.observe(tree, live, counts)
                times.append(time.perf_counter() - t0)
            us = statistics.median(times) * 1e6
            print(f"{kind:>7} {n_live:>5} {mean_len:>9.0f} {'observe':>8} {us:>10.1f} {'':>10}")


if __name__ == "__main__":
    main()
