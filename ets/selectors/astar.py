"""A*-decoding (``selector=astar``; Chatziveroglou, arXiv 2505.13672; ALGORITHMS.md §7).

Best-first search over partial solutions: an open list (priority queue) ordered by
``f(s) = g(s) + h(s)`` with the heuristic ``h(s) = 1 - PRM score of s``; the node with
the lowest ``f`` is popped and expanded by sampling ``k`` continuations, each scored
by the PRM and pushed back into the open list.

Where each rule comes from. The reference code (``gchatz22/a_star_decoding``) could not
be read here (no snapshot of it is stored; its README lists an ``a_star_decoding/``
package but no file of it was available), and of the paper only the abstract
(arxiv.org/abs/2505.13672) and third-party summaries of its method section (the
themoonlight.io reviews, de/ja) were: a state is a partial token sequence, the prompt
is the start, goal states end with EOS; the transition samples ``k`` continuations
``C(s)`` from the policy (stochastic step) and selects among the successors by
``argmin f(s') = g(s') + h(s')`` (deterministic step); a reward ``r(s)`` in [0, 1] from
the PRM gives ``h(s) = 1 - r(s)``; ``g`` is a cost of the transition ``g(s, s')``
whose exact form we could not read; compute is counted in generated tokens and PRM
passes. Everything below that this leaves open is our choice, a config key, and listed
here:

- ``cost`` - what ``g`` is: ``depth`` (default): ``g(s) = step_cost * depth(s)``, the
  textbook A* path cost when every transition (one step) costs the same; ``step_cost``
  (0.1, ours) is a tenth of ``h``'s range, so a path goes one step deeper as long as
  its PRM score drops by less than 0.1 against the best alternative. ``accumulated``:
  ``g(s) = sum(1 - r(x))`` over the steps ``x`` *before* ``s`` on its path, so ``f(s)``
  is the summed PRM cost of the whole path; with PRM scores well below 1 this is close
  to breadth-first (on the synthetic world at W=4 it spent the node budget on 17 of 40
  problems, ``depth`` on 9). ``zero``: ``g = 0`` (greedy best-first on the PRM).
- ``push`` - which successors enter the open list: ``all`` (default; textbook A*:
  every scored child, the best ``f`` is popped next wherever it is), or ``best``
  (only ``argmin f`` of the ``k`` children, the paper's "deterministic selection step";
  the other ``k - 1`` are dropped).
- ``tie_break`` - equal ``f`` (equal up to 1e-12): ``fifo`` (default; the node pushed
  first) or ``deeper`` (the deeper node first, then fifo).
- ``expand_per_round`` - nodes popped and expanded per round (default 1: sequential A*,
  one expansion per policy call). More than 1 pops up to ``n`` non-goal nodes from the
  top at once (batched A*, an approximation: a child of this round could have beaten a
  later pop); a goal is accepted only when no expansion is pending in the round (it
  waits for the pending children, which might beat it), so ``n = 1`` is exact A*.
- ``stop`` - the goal test is applied when a node is *popped* (textbook A*): a popped
  finished node is a solution. ``width`` (default): stop once ``search.width`` = W
  solutions have been popped (the vote runs over them; ``search.width`` scales the
  compute like every other method's width); ``first``: stop at the first solution
  popped (classic A*, W is then unused except by the node budget).
- ``open_max`` - cap on the open list (default none, as A*); when over, the worst
  ``f`` (last in pop order) are dropped.
- budgets (all optional, checked before each expansion is proposed):
  ``max_expansions`` (expansions of this problem), ``max_prm_calls`` (PRM passes, one
  per scored child: an expansion is proposed only while ``prm_calls + k`` fits, so
  the cap holds exactly), ``max_total_tokens`` (generated tokens of this problem; a
  round is only started while the tokens so far are below it, so a run may overshoot
  by the tokens of one round, at most ``expand_per_round * k`` steps). The loop's node
  budget ``budget.max_nodes`` (``2 * W * max_depth``) is a further cap that A* keeps
  itself: an expansion is proposed only while its ``k`` children fit.
- Out of budget: goals already at the top of the open list are still popped (that
  costs nothing); if no solution was popped at all, the vote runs over every finished
  node of the tree (``fallback`` in the stats).

Nothing here is math-specific: the strategy reads only the tree (``finished``,
``depth``, ``score``) and the PRM's scores, so any step PRM - e.g. a tool-call
verifier, as ToolChain* runs A* over tool-call plans - can drive it.

KV: ``kv_nodes()`` are the open list's (unfinished) nodes - every one of them may be
expanded later, so an engine keeping prefixes alive for A* keeps all their paths.
"""

from __future__ import annotations

import heapq
import random
from typing import Any

from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion
from ets.schema import Component, choice, num, schema
from ets.types import Problem

COSTS = ("accumulated", "depth", "zero")
STOPS = ("width", "first")
TIE_BREAKS = ("fifo", "deeper")
PUSHES = ("all", "best")


def _choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {', '.join(allowed)}")
    return value


def _positive_or_none(key: str, value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise ValueError(f"{key}={value!r} is invalid: must be an integer >= 1 or null")
    return value


class AStarStrategy:
    """One problem's A* search (module docstring for every rule)."""

    name = "astar"

    def __init__(self, tree: Tree, budget: Budget, conf: AStarStrategies) -> None:
        self.tree, self.budget, self.conf = tree, budget, conf
        self.target = 1 if conf.stop == "first" else budget.width
        self.g: dict[int, float] = {tree.root.id: 0.0}
        self.f: dict[int, float] = {tree.root.id: 0.0}
        self._open: list[tuple[Any, ...]] = []
        self._seq = 0
        self.solutions: list[Node] = []
        self.expansions = 0
        self.prm_calls = 0
        self.tokens = 0
        self.generated = 0
        self.dropped = 0
        self.open_peak = 0
        self.stop_reason = ""
        self._push(tree.root)
        self._next: list[Expansion] = []
        self._plan()

    # -- the open list ---------------------------------------------------------------------
    def _key(self, node: Node) -> tuple[Any, ...]:
        f = round(self.f[node.id], 12)  # float sums: equal f must tie (tie_break decides)
        self._seq += 1
        if self.conf.tie_break == "deeper":
            return (f, -node.depth, self._seq)
        return (f, self._seq)

    def _push(self, node: Node) -> None:
        heapq.heappush(self._open, (*self._key(node), node))

    def _cap_open(self) -> None:
        cap = self.conf.open_max
        if cap is not None and len(self._open) > cap:
            keep = heapq.nsmallest(cap, self._open, key=lambda e: e[:-1])
            self.dropped += len(self._open) - cap
            self._open = keep
            heapq.heapify(self._open)

    def g_of(self, child: Node) -> float:
        """``g`` of a new child from its parent (``cost`` key)."""
        if self.conf.cost == "depth":
            return self.conf.step_cost * child.depth
        if self.conf.cost == "zero":
            return 0.0
        parent = child.parent
        assert parent is not None
        if parent.parent is None:  # a first step: nothing paid before it
            return 0.0
        return self.g[parent.id] + (1.0 - (parent.score or 0.0))

    # -- budgets --------------------------------------------------------------------------
    def _can_expand(self, planned: int) -> bool:
        c, k = self.conf, self.conf.k
        if c.max_expansions is not None and self.expansions + planned + 1 > c.max_expansions:
            return False
        if c.max_prm_calls is not None and self.prm_calls + (planned + 1) * k > c.max_prm_calls:
            return False
        if c.max_total_tokens is not None and self.tokens >= c.max_total_tokens:
            return False
        return self.generated + (planned + 1) * k <= self.budget.max_nodes

    def _plan(self) -> None:
        """Pop goals and up to ``expand_per_round`` nodes to expand next round."""
        out: list[Expansion] = []
        while self._open and len(self.solutions) < self.target:
            top = self._open[0][-1]
            if top.finished and out:
                break  # a goal below a node expanded this round waits for its children
            if not top.finished and (len(out) >= self.conf.expand_per_round
                                     or not self._can_expand(len(out))):
                if not out:
                    self.stop_reason = "budget"
                break
            heapq.heappop(self._open)
            if top.finished:
                self.solutions.append(top)
            else:
                out.append(Expansion(top, self.conf.k))
        if not out and not self.stop_reason:
            self.stop_reason = "solved" if len(self.solutions) >= self.target else "exhausted"
        self._next = out

    # -- SearchStrategy -------------------------------------------------------------------
    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        for _, kids in results:
            self.expansions += 1
            self.prm_calls += len(kids)
            self.generated += len(kids)
            self.tokens += sum(c.n_tokens for c in kids)
            for c in kids:
                self.g[c.id] = self.g_of(c)
                self.f[c.id] = self.g[c.id] + (1.0 - (c.score or 0.0))
            chosen = kids
            if self.conf.push == "best" and kids:
                chosen = [min(kids, key=lambda c: self._rank(c))]
            for c in chosen:
                self._push(c)
        self._cap_open()
        self.open_peak = max(self.open_peak, len(self._open))
        self._plan()

    def _rank(self, node: Node) -> tuple[float, int]:
        depth = -node.depth if self.conf.tie_break == "deeper" else 0
        return (round(self.f[node.id], 12), depth)

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        return list(self.solutions) if self.solutions else self.tree.finished()

    def open_nodes(self) -> list[Node]:
        """The open list in pop order."""
        return [e[-1] for e in sorted(self._open, key=lambda e: e[:-1])]

    def kv_nodes(self) -> list[Node]:
        return sorted((e[-1] for e in self._open if not e[-1].finished), key=lambda n: n.id)

    def stats(self) -> dict[str, float]:
        return {
            "expansions": float(self.expansions),
            "prm_calls": float(self.prm_calls),
            "solutions": float(len(self.solutions)),
            "open_peak": float(self.open_peak),
            "dropped": float(self.dropped),
            "budget_stop": float(self.stop_reason == "budget"),
            "fallback": float(not self.solutions),
        }


class AStarStrategies:
    """Factory of :class:`AStarStrategy` (one per problem); the keys are documented in
    the module docstring.

    Args:
        k: Continuations sampled per expansion.
        cost: ``g``: ``accumulated``, ``depth`` or ``zero``.
        step_cost: Cost per step for ``cost=depth``.
        push: ``all`` children into the open list, or only the ``best``.
        tie_break: ``fifo`` or ``deeper``.
        expand_per_round: Nodes expanded per round (per policy call).
        stop: ``width`` (W solutions popped) or ``first``.
        open_max: Open-list cap (``None``: unbounded).
        max_expansions, max_prm_calls, max_total_tokens: Per-problem budgets (``None``: off).
    """

    def __init__(self, k: int = 4, cost: str = "depth", step_cost: float = 0.1,
                 push: str = "all", tie_break: str = "fifo", expand_per_round: int = 1,
                 stop: str = "width", open_max: int | None = None,
                 max_expansions: int | None = None, max_prm_calls: int | None = None,
                 max_total_tokens: int | None = None) -> None:
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k={k!r} is invalid: must be an integer >= 1")
        if not isinstance(expand_per_round, int) or expand_per_round < 1:
            raise ValueError(f"expand_per_round={expand_per_round!r} is invalid: must be an integer >= 1")
        if not step_cost >= 0:
            raise ValueError(f"step_cost={step_cost!r} is invalid: must be >= 0")
        self.k, self.step_cost, self.expand_per_round = k, float(step_cost), expand_per_round
        self.cost = _choice("cost", cost, COSTS)
        self.push = _choice("push", push, PUSHES)
        self.tie_break = _choice("tie_break", tie_break, TIE_BREAKS)
        self.stop = _choice("stop", stop, STOPS)
        self.open_max = _positive_or_none("open_max", open_max)
        self.max_expansions = _positive_or_none("max_expansions", max_expansions)
        self.max_prm_calls = _positive_or_none("max_prm_calls", max_prm_calls)
        self.max_total_tokens = _positive_or_none("max_total_tokens", max_total_tokens)
        if self.max_prm_calls is not None and self.max_prm_calls < k:
            raise ValueError(f"max_prm_calls={max_prm_calls} is invalid: must be >= k={k} "
                             "(one expansion scores k children)")

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> AStarStrategy:
        # Deterministic given the scores: the per-problem RNG is not needed.
        return AStarStrategy(tree, budget, self)


@schema("selector", "astar", AStarStrategies)
class AStarConf(Component):
    """``selector=astar``; defaults from ``AStarStrategies.__init__`` (our choices: module docstring)."""

    k: int = num(ge=1)
    cost: str = choice("accumulated", "depth", "zero")
    step_cost: float = num(ge=0)
    push: str = choice("all", "best")
    tie_break: str = choice("fifo", "deeper")
    expand_per_round: int = num(ge=1)
    stop: str = choice("width", "first")
    open_max: int | None = num(ge=1)
    max_expansions: int | None = num(ge=1)
    max_prm_calls: int | None = num(ge=1)
    max_total_tokens: int | None = num(ge=1)
