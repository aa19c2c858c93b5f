"""Budget curves from one run: accuracy at N = 1, 2, 4, ... finished trajectories per problem,
subsampled from the trees stored in ``problems.jsonl`` and voted on with :func:`ets.core.answers.vote`.

When C(pool, N) is at most ``samples`` every subset is enumerated (exact); otherwise
``samples`` random subsets are drawn with a seeded RNG. Subsets keep node-id order, so at
N >= pool size the vote is exactly the run's own (for every selector but FFS, whose run
votes over its first finishers only).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from ets.core.answers import vote
from ets.core.tree import Node
from ets.protocols import Grader
from ets.rundir.results import VOTES


@dataclass
class Trajectory:
    """A finished node of a stored tree: its answer and its path's step scores."""

    id: int
    answer: str | None
    scores: list[float]

    def step_scores(self) -> list[float]:
        return self.scores


class CachedGrader:
    """Memoises ``grader.equivalent`` (votes over many subsets ask the same pairs)."""

    def __init__(self, grader: Grader) -> None:
        self.grader = grader
        self._cache: dict[tuple[str, str], bool] = {}

    def equivalent(self, gold: str, pred: str) -> bool:
        key = (gold, pred)
        if key not in self._cache:
            self._cache[key] = bool(self.grader.equivalent(gold, pred))
        return self._cache[key]


def trajectories(tree: Sequence[dict[str, Any]]) -> list[Trajectory]:
    """Finished nodes in node-id order, step scores collected through parent links."""
    by_id = {n["id"]: n for n in tree}
    out = []
    for node in sorted(tree, key=lambda n: n["id"]):
        if not node["finished"]:
            continue
        scores: list[float] = []
        cur: dict[str, Any] | None = node
        while cur is not None and cur["parent"] is not None:
            if cur["score"] is not None:
                scores.append(float(cur["score"]))
            cur = by_id.get(cur["parent"])
        out.append(Trajectory(node["id"], node["answer"], scores[::-1]))
    return out


def budgets(n_max: int) -> list[int]:
    """1, 2, 4, ... below ``n_max``, then ``n_max``."""
    ns, n = [], 1
    while n < n_max:
        ns.append(n)
        n *= 2
    return ns + [n_max]


def subsets(pool: int, k: int, samples: int, rng: random.Random) -> tuple[list[tuple[int, ...]], bool]:
    """Index subsets of size ``min(k, pool)`` in increasing order; True when enumerated exactly."""
    k = min(k, pool)
    if math.comb(pool, k) <= samples:
        return list(itertools.combinations(range(pool), k)), True
    return [tuple(sorted(rng.sample(range(pool), k))) for _ in range(samples)], False


def budget_curve(records: Sequence[dict[str, Any]], grader: Grader, *, n_source: int,
                 aggregation: str = "last", samples: int = 64, seed: int = 0) -> dict[str, Any]:
    """Accuracy per vote at each budget N, averaged over subsets, then over problems.

    Args:
        records: ``problems.jsonl`` records (with ``tree``).
        grader: The dataset's answer-equivalence grader.
        n_source: N of the source run (its ``search.width``); the largest budget.
        aggregation: Step-score aggregation for the vote weights (the run's).
        samples: Random subsets per (problem, N) when not enumerating.
        seed: Seed of the subsampling RNG.

    Returns:
        ``{"n_source", "samples", "seed", "rows": [{"n", "exact", <vote>: accuracy, ...}]}``.
    """
    rng = random.Random(seed)
    cached = CachedGrader(grader)
    pools = [(r["gold"], trajectories(r["tree"])) for r in records]
    rows = []
    for n in budgets(n_source):
        totals = dict.fromkeys(VOTES, 0.0)
        exact_all = True
        for gold, pool in pools:
            if not pool:
                continue
            picks, exact = subsets(len(pool), n, samples, rng)
            exact_all &= exact
            for pick in picks:
                nodes = cast("list[Node]", [pool[i] for i in pick])  # duck-typed: answer, step_scores()
                result = vote(nodes, gold, cached, aggregation)
                for v in VOTES:
                    totals[v] += result[v]["correct"] / len(picks)
        rows.append({"n": n, "exact": exact_all,
                     **{v: totals[v] / len(records) if records else 0.0 for v in VOTES}})
    return {"n_source": n_source, "samples": samples, "seed": seed, "rows": rows}


def iter_rows(curve: dict[str, Any]) -> Iterator[list[str]]:
    """Markdown cells per budget row."""
    for row in curve["rows"]:
        yield [str(row["n"]), *(f"{row[v]:.4f}" for v in VOTES), "yes" if row["exact"] else "no"]
