"""The ETS integer program (ALGORITHMS.md §3.5), its CP-SAT solver and a brute-force oracle.

Variables: ``x_i`` (candidate kept), ``y_b`` (branch node kept), ``z_k`` (cluster covered).
Maximise ``sum O_i x_i - lambda_b (sum c_b y_b + sum c_i x_i) + lambda_s/K sum z_k``
subject to ``y_b >= x_i`` and ``y_b <= sum x_i`` for candidates i below b,
``z_k <= sum_{i in k} x_i`` and ``sum x_i >= 1``.

The "below" constraints are written edge by edge (``y_parent >= var_child`` and
``y_b <= sum of its children's vars``, as clauses), which is equivalent by induction
over the tree and needs O(|B| + |L|) constraints instead of O(depth * |L|).
:func:`presolve` first applies exact reductions (forced-in, dominated and useless
candidates, chain merges); on the instances ETS searches build, they decide every
candidate in most solves at widths 16-64 and about half at 256 (bench/selector.py).

CP-SAT needs integer coefficients: every objective coefficient is multiplied by
``scale`` (10^6 by default) and rounded, so the reported optimum can be off the real
one by at most ``(|L| + |B| + K) * 0.5 / scale``.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass


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
    """``seconds``: the whole call; ``solver_seconds``: inside CP-SAT; ``presolved``:
    presolve decided every candidate and CP-SAT was not called."""

    keep: list[bool]
    objective: float
    status: str
    seconds: float
    solver_seconds: float = 0.0
    presolved: bool = False


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


@dataclass
class Reduced:
    """What :func:`presolve` leaves for the solver.

    Attributes:
        fixed: Per candidate ``True``/``False`` when presolve decided it, else ``None``.
        values: Objective value of each remaining variable (candidates first, in
            ``cand_var`` order, then merged branch nodes, then clusters).
        cand_var: Variable index of each undecided candidate (``-1`` if fixed).
        parent: Per variable, the variable it implies (its nearest undecided
            ancestor), or ``-1`` when every ancestor is already kept.
        kids: Per branch variable, the variables directly below it.
        covers: Per cluster variable, its member variables.
        at_least_one: Whether ``sum x >= 1`` still has to be imposed.
    """

    fixed: list[bool | None]
    values: list[float]
    cand_var: list[int]
    parent: list[int]
    kids: dict[int, list[int]]
    covers: dict[int, list[int]]
    at_least_one: bool


def presolve(inst: ETSInstance, rules: bool = True) -> Reduced:
    """Exact reductions that shrink the program before CP-SAT sees it.

    Each rule keeps at least one optimal solution of the program restricted by the
    rules applied before it, so solving what is left is exact:

    * The root is kept whenever anything is (``sum x >= 1``): its cost is a constant.
    * Force in: an undecided candidate ``i`` whose gain ``a_i = O_i - lambda_b c_i``,
      plus the cluster bonus ``lambda_s/K`` when it is the last undecided member of
      a cluster nobody covers yet, minus the positive costs of its ancestors not yet
      kept, is >= 0: adding it to any solution never lowers the objective.
    * Dominated: among undecided candidates with the same parent and cluster, any
      with ``a_j < 0`` other than the best one is dropped (swap it for the best).
    * Useless (only when every cost is >= 0 and something is already forced in):
      ``a_j < 0`` and its cluster already covered (or no clusters) → dropped.
    * Chains: an undecided branch node with a single undecided child equals that
      child; their costs are merged into one variable. A cluster with one undecided
      member becomes a bonus on that member.

    Rules are applied until nothing changes; what remains is often empty, and
    :func:`solve_cpsat` then does not call the solver at all. ``rules=False`` keeps
    only the root and chain merges (the whole program, as CP-SAT would see it).
    """
    nx = len(inst.weights)
    lb = inst.lambda_b
    gain = [w - lb * c for w, c in zip(inst.weights, inst.cand_cost)]
    bcost = [lb * c for c in inst.branch_cost]
    nonneg = all(c >= 0 for c in bcost)
    clusters = inst.clusters
    beta = inst.lambda_s / len(set(clusters)) if clusters is not None else 0.0
    fixed: list[bool | None] = [None] * nx
    kept = [p < 0 for p in inst.branch_parent]  # the root
    covered: set[int] = set()
    members: dict[int, list[int]] = {}
    for i, k in enumerate(clusters or []):
        members.setdefault(k, []).append(i)
    # Dominance groups: candidates with the same parent and cluster.
    group = [(b, clusters[i] if clusters is not None else 0) for i, b in enumerate(inst.cand_parent)]
    any_in = False
    changed = rules

    def ancestors(i: int) -> list[int]:
        out, b = [], inst.cand_parent[i]
        while b >= 0 and not kept[b]:
            out.append(b)
            b = inst.branch_parent[b]
        return out

    def bonus(i: int) -> float:
        if clusters is None or beta <= 0 or clusters[i] in covered:
            return 0.0
        return beta if all(fixed[j] is False for j in members[clusters[i]] if j != i) else 0.0

    while changed:
        changed = False
        for i in range(nx):
            if fixed[i] is None:
                up = ancestors(i)
                if gain[i] + bonus(i) - sum(max(0.0, bcost[b]) for b in up) >= 0:
                    fixed[i], changed, any_in = True, True, True
                    for b in up:
                        kept[b] = True
                    if clusters is not None:
                        covered.add(clusters[i])
        best: dict[tuple[int, int], int] = {}
        for i in range(nx):
            if fixed[i] is None:
                j = best.get(group[i])
                if j is None or gain[i] > gain[j]:
                    best[group[i]] = i
        for i in range(nx):
            if fixed[i] is not None or gain[i] >= 0:
                continue
            useless = nonneg and any_in and (clusters is None or clusters[i] in covered)
            if best[group[i]] != i or useless:
                fixed[i], changed = False, True
    return _reduce(inst, fixed, kept, gain, bcost, covered, members, beta, not any_in)


def _reduce(inst: ETSInstance, fixed: list[bool | None], kept: list[bool], gain: list[float],
            bcost: list[float], covered: set[int], members: dict[int, list[int]],
            beta: float, at_least_one: bool) -> Reduced:
    """Variables and constraints for the candidates :func:`presolve` left undecided."""
    nb = len(inst.branch_parent)
    open_cands = [i for i, f in enumerate(fixed) if f is None]
    # Below each unkept branch node: its undecided children (("c", i) or ("b", b)).
    below: dict[int, list[tuple[str, int]]] = {}
    for i in open_cands:
        node, b = ("c", i), inst.cand_parent[i]
        while b >= 0 and not kept[b]:
            fresh = b not in below
            below.setdefault(b, []).append(node)
            if not fresh:
                break
            node, b = ("b", b), inst.branch_parent[b]
    # A chain node (one child) is the same variable as its child: follow it down.
    def rep(node: tuple[str, int]) -> tuple[str, int]:
        while node[0] == "b" and len(below[node[1]]) == 1:
            node = below[node[1]][0]
        return node

    var: dict[tuple[str, int], int] = {}
    values: list[float] = []
    for i in open_cands:
        var[("c", i)] = len(values)
        values.append(gain[i])
    for b in range(nb):
        if b in below and len(below[b]) > 1:
            var[("b", b)] = len(values)
            values.append(-bcost[b])
    for b in below:  # fold each chain node's cost into its representative
        if len(below[b]) == 1:
            values[var[rep(("b", b))]] -= bcost[b]
    parent = [-1] * len(values)
    kids: dict[int, list[int]] = {}
    for b, children in below.items():
        if len(children) > 1:
            vb = var[("b", b)]
            kids[vb] = [var[rep(c)] for c in children]
            for v in kids[vb]:
                parent[v] = vb
    covers: dict[int, list[int]] = {}
    for k, ms in members.items():
        if k in covered:
            continue
        live = [var[("c", i)] for i in ms if fixed[i] is None]
        if len(live) == 1:
            values[live[0]] += beta
        elif live:
            covers[len(values)] = live
            values.append(beta)
            parent.append(-1)
    cand_var = [var.get(("c", i), -1) for i in range(len(fixed))]
    return Reduced(fixed, values, cand_var, parent, kids, covers, at_least_one)


def solve_cpsat(
    inst: ETSInstance,
    time_limit_s: float = 1.0,
    num_workers: int = 1,
    scale: int = 1_000_000,
    reduce: bool = True,
) -> Solution:
    """Solve with CP-SAT after :func:`presolve` (``reduce=False`` skips it); all
    candidates kept is hinted (always feasible).

    The model is written straight into CP-SAT's proto (``cp_model_helper``) and solved
    through ``SolveWrapper``: building a ``CpModel`` costs ~0.25 ms of Python before any
    constraint is added, more than a whole presolved solve (bench/selector.py).
    Constraints are clauses: ``x -> y_parent``, ``y_b -> OR(below b)``,
    ``z_k -> OR(members)``, ``OR(x)``.

    If the time limit stops the search, the best solution found so far is used
    (status ``FEASIBLE``); if none was found (``UNKNOWN``), every candidate is kept,
    which makes the allocation plain REBASE. When presolve decides every candidate
    the status is ``OPTIMAL`` and the solver is not called.
    """
    # ortools is imported here, not at module level: registering the config schemas
    # imports this module (ets.config.register_configs), and start-up must stay cheap.
    from ortools.sat.python import cp_model_helper as cmh

    start = time.perf_counter()
    red = presolve(inst, rules=reduce)
    x = [v for v in red.cand_var if v >= 0]
    keep = [bool(f) for f in red.fixed]
    status, solver_seconds = "OPTIMAL", 0.0
    if x:
        proto = cmh.CpModelProto()
        for _ in red.values:
            proto.variables.add().domain.extend((0, 1))
        cons = proto.constraints
        for v, p in enumerate(red.parent):
            if p >= 0:
                ct = cons.add()
                ct.enforcement_literal.append(v)
                ct.bool_and.literals.append(p)
        for v, below in (*red.kids.items(), *red.covers.items()):
            ct = cons.add()
            ct.enforcement_literal.append(v)
            ct.bool_or.literals.extend(below)
        if red.at_least_one:
            cons.add().bool_or.literals.extend(x)
        terms = [(v, round(scale * c)) for v, c in enumerate(red.values)]
        terms = [(v, c) for v, c in terms if c != 0]
        objective_proto = proto.objective  # maximise = minimise the negation
        objective_proto.vars.extend(v for v, _ in terms)
        objective_proto.coeffs.extend(-c for _, c in terms)
        objective_proto.scaling_factor = -1.0 if terms else 1.0
        proto.solution_hint.vars.extend(x)
        proto.solution_hint.values.extend([1] * len(x))
        params = cmh.SatParameters()
        params.max_time_in_seconds = time_limit_s
        params.num_workers = num_workers
        params.symmetry_level = 0  # tiny models: symmetry detection and probing cost
        params.cp_model_probing_level = 0  # more than they save (bench/selector.py)
        # CP-SAT's default installs its own SIGINT handler during a solve and leaves SIGINT
        # at SIG_DFL afterwards: Ctrl-C would then kill the run with no message (issue 12).
        params.catch_sigint_signal = False
        solver = cmh.SolveWrapper()
        solver.set_parameters(params)
        t0 = time.perf_counter()
        response = solver.solve(proto)
        solver_seconds = time.perf_counter() - t0
        status = response.status.name
        if response.status in (cmh.CpSolverStatus.OPTIMAL, cmh.CpSolverStatus.FEASIBLE):
            values = response.solution
            for i, v in enumerate(red.cand_var):
                if v >= 0:
                    keep[i] = bool(values[v])
        else:
            keep = [True] * len(inst.weights)
    return Solution(keep, objective(inst, keep), status, time.perf_counter() - start,
                    solver_seconds, presolved=not x)

