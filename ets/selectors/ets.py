"""ETS: prune the frontier with an integer program that trades reward, KV cost and
semantic coverage, then REBASE-allocate the width over the survivors (ALGORITHMS.md §3)."""

from __future__ import annotations

import time
from typing import Any

from ets.cluster import cluster_labels
from ets.selectors.allocation import rebase_allocation
from ets.selectors.ets_ilp import ETSInstance, Solution, solve_cpsat
from ets.tree import Node, Tree

# Reference quirk: with lambda_b = 0 the reference sets a tiny negative cost, i.e. a
# reward of 1e-4 per kept node, so every candidate survives and ETS reduces to REBASE.
_ZERO_LAMBDA_REWARD = 1e-4


class ETSSelector:
    """Efficient Tree Search selection.

    The config key ``selector.lambda`` (a Python keyword) arrives through ``**options``.

    Args:
        temperature: REBASE temperature T for the reward weights and the allocation.
        coverage_weight: lambda_s, weight of the semantic coverage term.
        node_cost: ``uniform`` (paper: 1/(|B|+|L|)) or ``tokens`` (each node's step
            tokens, normalised to sum to 1; the root is left out because it is pinned
            whatever is selected).
        min_one_child: Improved mode: every kept candidate gets at least one child
            when the width allows (the paper's ceil-based allocation can starve a
            kept cluster representative).
        zero_lambda_quirk: Reproduce the reference's behaviour at lambda = 0.
        cluster_threshold: Cosine-distance cut for average-linkage clustering.
        time_limit_s: CP-SAT time limit per solve.
        num_workers: CP-SAT worker threads.
        objective_scale: Integer scale of the objective coefficients.
        presolve: Apply the exact reductions of ``ets_ilp.presolve`` first (same
            optimum; the solver is skipped when they decide every candidate).
        embedder: Object with ``embed(texts) -> ndarray`` (unit-norm rows).
        **options: ``lambda`` (lambda_b, KV-cost weight, default 1.0).
    """

    def __init__(
        self,
        temperature: float = 0.2,
        coverage_weight: float = 1.4,
        node_cost: str = "uniform",
        min_one_child: bool = False,
        zero_lambda_quirk: bool = True,
        cluster_threshold: float = 0.05,
        time_limit_s: float = 1.0,
        num_workers: int = 1,
        objective_scale: int = 1_000_000,
        presolve: bool = True,
        embedder: Any = None,
        **options: float,
    ) -> None:
        unknown = set(options) - {"lambda"}
        if unknown:
            raise TypeError(f"ETSSelector got unknown options {sorted(unknown)}")
        self.lambda_b = float(options.get("lambda", 1.0))
        self.temperature = temperature
        self.coverage_weight = coverage_weight
        self.node_cost = str(getattr(node_cost, "value", node_cost))
        self.min_one_child = min_one_child
        self.zero_lambda_quirk = zero_lambda_quirk
        self.cluster_threshold = cluster_threshold
        self.time_limit_s = time_limit_s
        self.num_workers = num_workers
        self.objective_scale = objective_scale
        self.presolve = presolve
        self.embedder = embedder
        # solve_s: whole solve_cpsat calls; select_s: whole select calls (instance, clusters,
        # solve, allocation), one per problem and depth (selects).
        self.stats = {"solves": 0, "presolved": 0, "not_optimal": 0, "fallbacks": 0,
                      "solve_s": 0.0, "selects": 0, "select_s": 0.0}

    def build_instance(self, candidates: list[Node], width: int) -> ETSInstance:
        """The integer program for one depth of one problem."""
        scores = [c.score or 0.0 for c in candidates]
        weights = [n / width for n in rebase_allocation(scores, width, self.temperature)]
        branch_ix: dict[int, int] = {}
        branches: list[Node] = []
        for c in candidates:
            for a in c.ancestors():
                if a.id in branch_ix:
                    break
                branch_ix[a.id] = len(branches)
                branches.append(a)
        branch_parent = [branch_ix[b.parent.id] if b.parent is not None else -1 for b in branches]
        cand_parent = [branch_ix[c.parent.id] for c in candidates]
        cand_cost, branch_cost = self._costs(candidates, branches)
        lambda_b = self.lambda_b
        if lambda_b == 0 and self.zero_lambda_quirk:
            lambda_b = -_ZERO_LAMBDA_REWARD
            cand_cost, branch_cost = [1.0] * len(cand_cost), [1.0] * len(branch_cost)
        return ETSInstance(
            weights, cand_parent, branch_parent, cand_cost, branch_cost, lambda_b,
            self._clusters(candidates), self.coverage_weight,
        )

    def _costs(self, candidates: list[Node], branches: list[Node]) -> tuple[list[float], list[float]]:
        if self.node_cost == "tokens":
            toks = [float(c.n_tokens) for c in candidates]
            btoks = [0.0 if b.parent is None else float(b.n_tokens) for b in branches]
            total = sum(toks) + sum(btoks) or 1.0
            return [t / total for t in toks], [t / total for t in btoks]
        uniform = 1.0 / (len(candidates) + len(branches))
        return [uniform] * len(candidates), [uniform] * len(branches)

    def _clusters(self, candidates: list[Node]) -> list[int] | None:
        texts = [c.text for c in candidates]
        if self.coverage_weight == 0 or len(candidates) <= 1 or len(set(texts)) == 1:
            return None
        if self.embedder is None:
            raise ValueError("ETS with coverage_weight > 0 needs selector.embedder")
        return cluster_labels(self.embedder.embed(texts), self.cluster_threshold)

    def prepare(self, candidates: list[Node]) -> None:
        """Embed the step texts of every problem in flight in one batch (the search
        loop calls this once per depth; per-problem selection then hits the cache)."""
        if self.coverage_weight > 0 and self.embedder is not None and len(candidates) > 1:
            self.embedder.embed([c.text for c in candidates])

    def solve(self, inst: ETSInstance) -> Solution:
        sol = solve_cpsat(inst, self.time_limit_s, self.num_workers, self.objective_scale,
                          self.presolve)
        self.stats["solves"] += 1
        self.stats["presolved"] += sol.presolved
        self.stats["solve_s"] += sol.seconds
        self.stats["not_optimal"] += sol.status != "OPTIMAL"
        self.stats["fallbacks"] += sol.status not in ("OPTIMAL", "FEASIBLE")
        return sol

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        if width <= 0 or not candidates:
            return [0] * len(candidates)
        start = time.perf_counter()
        keep = [True] * len(candidates)
        if len(candidates) > 1:
            keep = self.solve(self.build_instance(candidates, width)).keep
        counts = self.allocate(candidates, keep, width)
        self.stats["selects"] += 1
        self.stats["select_s"] += time.perf_counter() - start
        return counts

    def allocate(self, candidates: list[Node], keep: list[bool], width: int) -> list[int]:
        """REBASE of the full width over the kept candidates (pruned ones get zero)."""
        kept = [i for i, k in enumerate(keep) if k]
        scores = [candidates[i].score or 0.0 for i in kept]
        base = 0
        if self.min_one_child and width >= len(kept):
            base = 1
        alloc = rebase_allocation(scores, width - base * len(kept), self.temperature)
        counts = [0] * len(candidates)
        for i, n in zip(kept, alloc):
            counts[i] = n + base
        return counts
