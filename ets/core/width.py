"""The adapter that runs every ``Selector`` (ETS paper/improved, REBASE, both beams, DVTS,
best-of-N, FFS) on the :class:`~ets.protocols.SearchStrategy` protocol.

It implements the depth-synchronous width allocation of ALGORITHMS.md §1 exactly as the
loop did before the core redesign: the root is expanded into W children; after every
round the remaining width shrinks by the trajectories that finished in it, the round's
open children are the candidates (they hold the KV), and ``selector.select(candidates,
remaining, tree)`` gives each candidate its number of children. The problem is done
when no width remains or no candidate is open. The selectors themselves are unchanged.
A selector with ``lookahead > 0`` (beam, DVTS) runs through
:class:`ets.core.lookahead.LookaheadWidthStrategy` instead.
"""

from __future__ import annotations

import random
from typing import Any

from ets.core.checks import StrategyError
from ets.core.tree import Node, Tree
from ets.protocols import BatchPreparer, Budget, Expansion, HasFinalists, HasStats, Selector
from ets.types import Problem


class WidthStrategy:
    """One problem's width allocation by a (shared, stateless per problem) selector.

    Args:
        selector: The method's selector.
        tree: This problem's tree (root = the prompt).
        budget: ``budget.width`` is W.
        name: The name used in error messages.
    """

    def __init__(self, selector: Selector, tree: Tree, budget: Budget, name: str) -> None:
        self.selector, self.tree, self.budget, self.name = selector, tree, budget, name
        self.remaining = budget.width
        self._next = [Expansion(tree.root, budget.width)]
        self._candidates: list[Node] = []
        # The last selection's counts, aligned with kv_nodes() ([] when the round made no
        # selection: no width left or no open child) - for KV measured after pruning.
        self.counts: list[int] = []

    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        self._take(results)
        if not self._stops():
            self._allocate(self.selector.select(self._candidates, self.remaining, self.tree))

    def _take(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        """A tree round's children: the finished ones use up width, the open ones are
        the new candidates; nothing is proposed until :meth:`_allocate`."""
        children = [c for _, kids in results for c in kids]
        self.remaining -= sum(c.finished for c in children)
        self._candidates = [c for c in children if not c.finished]
        self._next, self.counts = [], []

    def _stops(self) -> bool:
        return self.remaining <= 0 or not self._candidates

    def _allocate(self, counts: Any) -> None:
        """Check the selector's counts and propose the children they give."""
        self._check(counts)
        self.counts = list(counts)
        self._next = [Expansion(c, n) for c, n in zip(self._candidates, counts) if n > 0]

    def _check(self, counts: Any) -> None:
        if len(counts) != len(self._candidates):
            raise StrategyError(
                f"selector {self.name!r} returned {len(counts)} counts for "
                f"{len(self._candidates)} candidates")
        bad = [n for n in counts if not isinstance(n, int) or isinstance(n, bool) or n < 0]
        if bad:
            raise StrategyError(f"selector {self.name!r} returned counts {bad}: "
                                "counts must be non-negative integers")

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        if isinstance(self.selector, HasFinalists):
            return self.selector.finalists(self.tree)
        return self.tree.finished()

    def kv_nodes(self) -> list[Node]:
        return list(self._candidates)

    def stats(self) -> dict[str, float]:
        return {}  # the selector's numbers are run-level (WidthStrategies.stats)


class WidthStrategies:
    """Factory of :class:`WidthStrategy` for one selector shared by every problem.

    The per-problem RNG is not used: the selectors are deterministic given the scores.
    """

    def __init__(self, selector: Selector) -> None:
        self.selector = selector
        self.name = type(selector).__name__

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> WidthStrategy:
        if getattr(self.selector, "lookahead", 0):  # beam / DVTS with selector.lookahead=k
            from ets.core.lookahead import LookaheadWidthStrategy  # it subclasses WidthStrategy

            return LookaheadWidthStrategy(self.selector, tree, budget, self.name)  # type: ignore[arg-type]
        return WidthStrategy(self.selector, tree, budget, self.name)

    def prepare(self, candidates: list[Node]) -> None:
        """Hand every problem's new open children to a selector that batches (ETS)."""
        if isinstance(self.selector, BatchPreparer):
            self.selector.prepare(candidates)

    def stats(self) -> dict[str, Any]:
        return self.selector.stats if isinstance(self.selector, HasStats) else {}
