"""ETS: prune the frontier with an integer program that trades reward, KV cost and
semantic coverage, then REBASE-allocate the width over the survivors (ALGORITHMS.md §3)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from ets.core.tree import Node, Tree
from ets.schema import num, schema
from ets.selectors.allocation import rebase_allocation, softmax_weights
from ets.selectors.cluster import cluster_labels
from ets.selectors.ets_ilp import ETSInstance, Solution, solve_cpsat
from ets.selectors.rebase import RebaseConf

# Reference quirk: with lambda_b = 0 the reference sets a tiny negative cost, i.e. a
# reward of 1e-4 per kept node, so every candidate survives and ETS reduces to REBASE.
_ZERO_LAMBDA_REWARD = 1e-4

log = logging.getLogger(__name__)

#: ``min_one_child`` rules (see :meth:`ETSSelector.guaranteed`).
MIN_CHILD_RULES = ("representative", "cluster", "every")


@dataclass
class SelectionLog:
    """One selection call with at least two candidates (one is always kept).

    Attributes:
        candidates: N, live candidates at this depth.
        clusters: K, semantic clusters among them (``None`` when ETS does not cluster,
            i.e. ``coverage_weight == 0``).
        kept: Candidates the integer program keeps.
        expanded: Candidates that get at least one child.
        rebase_expand: Candidates REBASE would expand (same softmax allocation of the
            same width over all N, ``ets.selectors.rebase``).
        mass_pruned: Softmax mass ``sum exp(s_i/T) / sum_j exp(s_j/T)`` of the pruned
            candidates: the share of REBASE's allocation that ETS takes away.
        guaranteed: Candidates given a child by ``min_one_child``.
        width: Remaining width handed out.
        rebase_pruned: Candidates REBASE would expand that the program pruned.
        rebase_pruned_parent_kept: Of those, the ones whose parent keeps another child
            (with lambda_b = 1 and uniform cost the paper's objective should never prune
            one: its reward share exceeds its node's cost; issue 8 section 5).
    """

    candidates: int
    clusters: int | None
    kept: int
    expanded: int
    rebase_expand: int
    mass_pruned: float
    guaranteed: int
    width: int
    rebase_pruned: int = 0
    rebase_pruned_parent_kept: int = 0


class ETSSelector:
    """Efficient Tree Search selection.

    The config key ``selector.lambda`` (a Python keyword) arrives through ``**options``.

    Args:
        temperature: REBASE temperature T for the reward weights and the allocation.
        coverage_weight: lambda_s, weight of the semantic coverage term.
        node_cost: ``uniform`` (paper: 1/(|B|+|L|)) or ``tokens`` (each node's step
            tokens, normalised to sum to 1; the root is left out because it is pinned
            whatever is selected).
        min_one_child: Improved mode: guarantee a child to some kept candidates when
            the width allows (the paper's ceil-based allocation over the kept nodes
            can starve a node the program kept for its cluster, so the coverage it
            paid for is never explored). Who gets it: ``min_child_rule``.
        min_child_rule: ``representative`` (default): see :meth:`guaranteed`;
            ``every``: every kept candidate (the first version of this option; it
            kept looping trajectories alive to the depth cap).
        zero_lambda_quirk: Reproduce the reference's behaviour at lambda = 0.
        cluster_threshold: Cosine-distance cut for average-linkage clustering;
            ``None`` (default): the embedder's own ``threshold`` (a property of the
            embedding model, ``selector.embedder.threshold``); an embedder object
            without one (a test double) is cut at the paper's 0.05.
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
        min_child_rule: str = "representative",
        zero_lambda_quirk: bool = True,
        cluster_threshold: float | None = None,
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
        min_child_rule = str(getattr(min_child_rule, "value", min_child_rule))
        if min_child_rule not in MIN_CHILD_RULES:
            raise ValueError(f"selector.min_child_rule={min_child_rule!r} is invalid: "
                             f"use one of {', '.join(MIN_CHILD_RULES)}")
        self.min_child_rule = min_child_rule
        self.zero_lambda_quirk = zero_lambda_quirk
        self.cluster_threshold = cluster_threshold
        self.time_limit_s = time_limit_s
        self.num_workers = num_workers
        self.objective_scale = objective_scale
        self.presolve = presolve
        self.embedder = embedder
        # solve_s: whole solve_cpsat calls; select_s: whole select calls (instance, clusters,
        # solve, allocation), one per problem and depth (selects).
        self.stats: dict[str, float] = {
            "solves": 0, "presolved": 0, "not_optimal": 0, "fallbacks": 0, "solve_s": 0.0,
            "selects": 0, "select_s": 0.0, **dict.fromkeys(_SUMS, 0),
        }
        self.stats.update(derived_stats(self.stats))
        self._guaranteed = 0
        #: Every selection call with >= 2 candidates, in order (also logged at DEBUG).
        self.calls: list[SelectionLog] = []

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

    def threshold(self) -> float:
        """The clustering cut in use (see ``cluster_threshold``)."""
        if self.cluster_threshold is not None:
            return self.cluster_threshold
        return float(getattr(self.embedder, "threshold", _PAPER_THRESHOLD))

    def _clusters(self, candidates: list[Node]) -> list[int] | None:
        texts = [c.text for c in candidates]
        if self.coverage_weight == 0 or len(candidates) <= 1 or len(set(texts)) == 1:
            return None
        if self.embedder is None:
            raise ValueError("ETS with coverage_weight > 0 needs selector.embedder")
        return cluster_labels(self.embedder.embed(texts), self.threshold())

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
        if len(candidates) == 1:
            counts = self.allocate(candidates, [True], width)
        else:
            inst = self.build_instance(candidates, width)
            keep = self.solve(inst).keep
            labels = _labels(candidates, inst.clusters, self.coverage_weight > 0)
            for node, label in zip(candidates, labels or ()):
                node.cluster = label  # shown by the tree pages (python -m ets.report --trees)
            counts = self.allocate(candidates, keep, width, labels)
            self._log(candidates, keep, counts, labels, width)
        self.stats["selects"] += 1
        self.stats["select_s"] += time.perf_counter() - start
        return counts

    def guaranteed(self, candidates: list[Node], keep: list[bool], width: int,
                   labels: list[int] | None = None) -> list[int]:
        """Indices of the kept candidates ``min_one_child`` gives a child to.

        ``representative`` (default): one per cluster, its best-scored kept member
        (ties: the first), and only for a cluster that REBASE over the whole frontier
        would explore (some member gets a child from ``rebase_allocation`` of the same
        width). Why both parts: the option exists because REBASE over the *kept* nodes
        can starve a node the program kept to cover its cluster, so the coverage ETS
        paid for is never explored; one child per cluster restores that, and more than
        one per cluster buys no coverage. But a cluster that REBASE itself would starve
        (low reward everywhere in it, e.g. a trajectory repeating "wait, let me
        recheck") is one the paper's allocation lets die; guaranteeing it a child kept
        such loops alive until the depth cap (synthetic world, ``every``: accuracy 0.945
        -> 0.63, 21 depths instead of 8.5). With this rule ETS explores no cluster that
        REBASE would not, and none that it would is starved by the pruning.

        ``cluster``: the best kept member of every cluster (no REBASE condition).
        ``every``: every kept candidate.

        Args:
            candidates, keep: The frontier and the program's choice.
            width: Remaining width.
            labels: Cluster label per candidate; ``None``: equal texts form a cluster.
        """
        kept = [i for i, k in enumerate(keep) if k]
        if self.min_child_rule == "every":
            return kept
        if labels is None:
            labels = _text_labels(candidates)
        explored = set(labels)
        if self.min_child_rule == "representative":
            rebase = rebase_allocation([c.score or 0.0 for c in candidates], width,
                                       self.temperature)
            explored = {labels[i] for i, n in enumerate(rebase) if n > 0}
        best: dict[int, int] = {}
        for i in kept:
            lab = labels[i]
            if lab in explored and (lab not in best or
                                    (candidates[i].score or 0.0) > (candidates[best[lab]].score or 0.0)):
                best[lab] = i
        return sorted(best.values())

    def allocate(self, candidates: list[Node], keep: list[bool], width: int,
                 labels: list[int] | None = None) -> list[int]:
        """REBASE of the full width over the kept candidates (pruned ones get zero).

        With ``min_one_child``: rules ``every`` and ``cluster`` first give one child to
        each of :meth:`guaranteed` (when the width covers them all), then REBASE the
        rest of the width over all kept. Rule ``representative`` keeps the paper's
        allocation and only repairs it: a guaranteed representative whose cluster got
        no child takes one from the candidate with the most children (if that has two
        or more), so the allocation moves as little as possible from REBASE's.
        """
        kept = [i for i, k in enumerate(keep) if k]
        sure: list[int] = []
        if self.min_one_child:
            sure = self.guaranteed(candidates, keep, width, labels)
            if width < len(sure):
                sure = []
        repair = self.min_child_rule == "representative"
        scores = [candidates[i].score or 0.0 for i in kept]
        alloc = rebase_allocation(scores, width - (0 if repair else len(sure)), self.temperature)
        counts = [0] * len(candidates)
        for i, n in zip(kept, alloc):
            counts[i] = n
        given = 0
        if repair and sure:
            lab = labels if labels is not None else _text_labels(candidates)
            served = {lab[i] for i in kept if counts[i] > 0}
            for i in sure:
                if lab[i] in served:
                    continue
                donor = max(kept, key=lambda j: (counts[j], -(candidates[j].score or 0.0)))
                if counts[donor] < 2:
                    break
                counts[donor] -= 1
                counts[i] += 1
                served.add(lab[i])
                given += 1
        else:
            for i in sure:
                counts[i] += 1
            given = len(sure)
        self._guaranteed = given
        return counts

    def _log(self, candidates: list[Node], keep: list[bool], counts: list[int],
             labels: list[int] | None, width: int) -> None:
        scores = [c.score or 0.0 for c in candidates]
        weights = softmax_weights(scores, self.temperature)
        total = sum(weights)
        rebase = rebase_allocation(scores, width, self.temperature)
        k = len(set(labels)) if labels is not None else None  # None: no coverage term
        kept_parents = {id(c.parent) for c, kp in zip(candidates, keep) if kp}
        lost = [i for i, n in enumerate(rebase) if n > 0 and not keep[i]]
        entry = SelectionLog(
            candidates=len(candidates), clusters=k, kept=sum(keep),
            expanded=sum(n > 0 for n in counts), rebase_expand=sum(n > 0 for n in rebase),
            mass_pruned=sum(w for w, kp in zip(weights, keep) if not kp) / total,
            guaranteed=self._guaranteed, width=width, rebase_pruned=len(lost),
            rebase_pruned_parent_kept=sum(id(candidates[i].parent) in kept_parents for i in lost),
        )
        self.calls.append(entry)
        if log.isEnabledFor(logging.DEBUG):  # asdict is ~0.05 ms: not on every call for nothing
            log.debug("ets selection %s", asdict(entry))
        st = self.stats
        st["selection_calls"] += 1
        st["candidates"] += entry.candidates
        st["candidates_kept"] += entry.kept
        st["candidates_expanded"] += entry.expanded
        st["rebase_would_expand"] += entry.rebase_expand
        st["softmax_mass_pruned"] += entry.mass_pruned
        st["guaranteed_children"] += entry.guaranteed
        st["rebase_pruned"] += entry.rebase_pruned
        st["rebase_pruned_parent_kept"] += entry.rebase_pruned_parent_kept
        if k is not None:
            st["clustered_candidates"] += entry.candidates
            st["clusters"] += k
        st.update(derived_stats(st))


_PAPER_THRESHOLD = 0.05
#: Summed per-call counts in ``stats`` (a merge of shards may add them up).
_SUMS = ("selection_calls", "candidates", "clustered_candidates", "clusters",
         "candidates_kept", "candidates_expanded", "rebase_would_expand",
         "softmax_mass_pruned", "guaranteed_children", "rebase_pruned",
         "rebase_pruned_parent_kept")


def derived_stats(stats: dict[str, float]) -> dict[str, float]:
    """Per-call means and K/N from the summed counts (recompute them after summing
    the counts of several runs; summing these ratios is meaningless).

    ``clusters_per_candidate`` is K/N pooled over the calls that cluster (total
    clusters over total candidates); the ``*_per_call`` keys are means over selection
    calls with at least two candidates.
    """
    calls = stats.get("selection_calls", 0) or 0
    per = (lambda key: stats.get(key, 0) / calls) if calls else (lambda key: 0.0)
    n_clustered = stats.get("clustered_candidates", 0)
    return {
        "clusters_per_candidate": stats.get("clusters", 0) / n_clustered if n_clustered else 0.0,
        "candidates_per_call": per("candidates"),
        "kept_per_call": per("candidates_kept"),
        "expanded_per_call": per("candidates_expanded"),
        "rebase_expand_per_call": per("rebase_would_expand"),
        "mass_pruned_per_call": per("softmax_mass_pruned"),
    }


def _text_labels(candidates: list[Node]) -> list[int]:
    """Equal step texts share a label (the clustering at cut 0)."""
    ids: dict[str, int] = {}
    return [ids.setdefault(c.text, len(ids)) for c in candidates]


def _labels(candidates: list[Node], clusters: list[int] | None, coverage: bool) -> list[int] | None:
    """Cluster labels of the program (``None`` there means one text or no coverage term)."""
    if clusters is not None:
        return clusters
    return _text_labels(candidates) if coverage else None


class NodeCost(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    uniform = "uniform"
    tokens = "tokens"


class MinChildRule(str, Enum):  # noqa: UP042 (ETSSelector.guaranteed)
    representative = "representative"
    cluster = "cluster"
    every = "every"


@schema("selector", "ets", ETSSelector)
class ETSConf(RebaseConf):
    lambda_: float = num(1.0, ge=0)  # the key `lambda`; ETSSelector takes it through **options
    coverage_weight: float = num(ge=0)
    node_cost: NodeCost
    min_one_child: bool
    min_child_rule: MinChildRule  # with min_one_child: who gets the guaranteed child
    zero_lambda_quirk: bool
    cluster_threshold: float | None = num(ge=0)  # None: selector.embedder.threshold
    time_limit_s: float = num(gt=0)
    num_workers: int = num(ge=1)
    objective_scale: int = num(ge=1)
    presolve: bool  # exact reductions before CP-SAT (false: solve the whole program)
    embedder: Any
