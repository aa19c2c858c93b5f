"""The ETS integer program (ALGORITHMS.md §3.5), its CP-SAT solver and a brute-force oracle.

Variables: ``x_i`` (candidate kept), ``y_b`` (branch node kept), ``z_k`` (cluster covered).
Maximise ``sum O_i x_i - lambda_b (sum c_b y_b + sum c_i x_i) + lambda_s/K sum z_k``
subject to ``y_b >= x_i`` and ``y_b <= sum x_i`` for candidates i below b,
``z_k <= sum_{i in k} x_i`` and ``sum x_i >= 1``.

The "below" constraints are written edge by edge (``y_parent >= var_child`` and
``y_b <= sum of its children's vars``), which is equivalent by induction over the tree
and needs O(|B| + |L|) constraints instead of O(depth * |L|).

CP-SAT needs integer coefficients: every objective coefficient is multiplied by
``scale`` (10^6 by default) and rounded, so the reported optimum can be off the real
one by at most ``(|L| + |B| + K) * 0.5 / scale``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

from ortools.sat.python import cp_model


@dataclass
class ETSInstance:
    """One selection problem.

    Attributes:
        weights: ``O_i`` per candidate.
        cand_parent: Index (into the branch list) of each candidate's parent.
        branch_parent: Index of each branch node's parent, -1 for the root.
        cand_cost: ``c_i`` per candidate.
        branch_cost: ``c_b`` per branch node.
        lambda_b: KV-cost weight.
        clusters: Cluster label per candidate, or ``None`` to drop the coverage term.
        lambda_s: Coverage weight (divided by the number of clusters K).
    """

    weights: list[float]
    cand_parent: list[int]
    branch_parent: list[int]
    cand_cost: list[float]
    branch_cost: list[float]
    lambda_b: float
    clusters: list[int] | None = None
    lambda_s: float = 0.0


@dataclass
class Solution:
    keep: list[bool]
    objective: float
    status: str
    seconds: float


def _below(inst: ETSInstance, x: list, y: list) -> list[list]:
    """For each branch node, the variables of its children (candidates and branches)."""
    below: list[list] = [[] for _ in y]
    for i, b in enumerate(inst.cand_parent):
        below[b].append(x[i])
    for b, p in enumerate(inst.branch_parent):
        if p >= 0:
            below[p].append(y[b])
    return below


def objective(inst: ETSInstance, keep: list[bool]) -> float:
    """The objective of a candidate subset, with y and z at their implied optimum."""
    live_branches: set[int] = set()
    for i, k in enumerate(keep):
        b = inst.cand_parent[i] if k else -1
        while b >= 0 and b not in live_branches:
            live_branches.add(b)
            b = inst.branch_parent[b]
    value = sum(w for w, k in zip(inst.weights, keep) if k)
    cost = sum(c for c, k in zip(inst.cand_cost, keep) if k)
    cost += sum(inst.branch_cost[b] for b in live_branches)
    value -= inst.lambda_b * cost
    if inst.clusters is not None:
        n_clusters = len(set(inst.clusters))
        covered = {c for c, k in zip(inst.clusters, keep) if k}
        value += inst.lambda_s / n_clusters * len(covered)
    return value


def brute_force(inst: ETSInstance) -> Solution:
    """Enumerate every non-empty subset (test oracle; |L| <= ~16)."""
    start = time.perf_counter()
    best: tuple[float, list[bool]] | None = None
    for bits in itertools.product([False, True], repeat=len(inst.weights)):
        if any(bits):
            val = objective(inst, list(bits))
            if best is None or val > best[0] + 1e-12:
                best = (val, list(bits))
    assert best is not None
    return Solution(best[1], best[0], "OPTIMAL", time.perf_counter() - start)


def solve_cpsat(
    inst: ETSInstance, time_limit_s: float = 1.0, num_workers: int = 1, scale: int = 1_000_000
) -> Solution:
    """Solve with CP-SAT; all candidates kept is hinted (always feasible).

    If the time limit stops the search, the best solution found so far is used
    (status ``FEASIBLE``); if none was found (``UNKNOWN``), every candidate is kept,
    which makes the allocation plain REBASE.
    """
    start = time.perf_counter()
    # Built through LinearExpr.sum and direct proto writes (objective, hint) rather than
    # Python sum() / maximize() / add_hint(): the same proto (names aside), ~2x less
    # Python time at width 256 (bench/selector.py).
    model = cp_model.CpModel()
    x = [model.new_bool_var("") for _ in inst.weights]
    y = [model.new_bool_var("") for _ in inst.branch_parent]
    below = _below(inst, x, y)
    total = cp_model.LinearExpr.sum
    for yb, kids in zip(y, below):
        for var in kids:
            model.add_implication(var, yb)
        model.add(yb <= total(kids))
    model.add(total(x) >= 1)
    lb = inst.lambda_b
    coefs = [round(scale * (w - lb * c)) for w, c in zip(inst.weights, inst.cand_cost)]
    coefs += [round(-scale * lb * c) for c in inst.branch_cost]
    index = [v.index for v in x + y]
    if inst.clusters is not None:
        n_clusters = len(set(inst.clusters))
        members: dict[int, list] = {}
        for v, k in zip(x, inst.clusters):
            members.setdefault(k, []).append(v)
        for k in range(n_clusters):
            z = model.new_bool_var("")
            model.add(z <= total(members.get(k, [])))
            index.append(z.index)
            coefs.append(round(scale * inst.lambda_s / n_clusters))
    terms = [(i, c) for i, c in zip(index, coefs) if c != 0]
    proto = model.proto  # maximize = minimise the negation, scaling_factor -1
    proto.objective.vars.extend(i for i, _ in terms)
    proto.objective.coeffs.extend(-c for _, c in terms)
    proto.objective.scaling_factor = -1.0 if terms else 1.0
    proto.solution_hint.vars.extend(v.index for v in x)
    proto.solution_hint.values.extend([1] * len(x))
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = time_limit_s
    solver.parameters.num_workers = num_workers
    status = solver.solve(model)
    name = solver.status_name(status)
    if status in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        keep = [bool(solver.value(v)) for v in x]
    else:
        keep = [True] * len(x)
    return Solution(keep, objective(inst, keep), name, time.perf_counter() - start)


def solve_pulp(inst: ETSInstance, msg: bool = False) -> Solution:
    """Solve the same program with PuLP + CBC (the reference's solver: one CBC
    subprocess per call, no time limit, float coefficients). Bench/test use only."""
    import pulp

    start = time.perf_counter()
    prob = pulp.LpProblem("ets", pulp.LpMaximize)
    x = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(len(inst.weights))]
    y = [pulp.LpVariable(f"y{b}", cat="Binary") for b in range(len(inst.branch_parent))]
    below = _below(inst, x, y)
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
    prob.solve(pulp.PULP_CBC_CMD(msg=msg))
    keep = [(v.value() or 0.0) > 0.5 for v in x]
    return Solution(keep, objective(inst, keep), pulp.LpStatus[prob.status], time.perf_counter() - start)
