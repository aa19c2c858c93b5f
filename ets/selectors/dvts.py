"""Diverse Verifier Tree Search: N/M independent greedy subtrees (ALGORITHMS.md §4),
optionally with look-ahead (``lookahead=k``, as search-and-learn's
``diverse_verifier_tree_search.py``; :mod:`ets.core.lookahead` runs it)."""

from __future__ import annotations

from ets.core.tree import Node, Tree
from ets.schema import Component, num, schema


class DVTSSelector:
    """Split the width into ``N/M`` subtrees at depth 1; each keeps its best live
    candidate and expands it with the subtree's remaining share of the budget.

    The root's children are assigned to subtrees in sibling order (``M`` each, the
    last subtree takes any remainder); a subtree's share shrinks by one for each of
    its finished trajectories, so budgets are conserved per subtree.

    With ``lookahead=k > 0`` each subtree keeps the candidate whose look-ahead path
    scores best (:class:`ets.core.lookahead.LookaheadWidthStrategy` calls
    :meth:`select_scored`), as search-and-learn's DVTS takes the argmax over the scores
    of ``current_text + lookahead_text``.

    Args:
        beam_width: M, the per-subtree budget (children of the kept node per step).
        lookahead: k, greedy look-ahead steps per candidate (0: none, the classic method).
    """

    def __init__(self, beam_width: int = 4, lookahead: int = 0) -> None:
        if lookahead < 0:
            raise ValueError(f"lookahead={lookahead} is invalid: must be >= 0")
        self.beam_width = beam_width
        self.lookahead = lookahead

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        return self.select_scored(candidates, [c.score or 0.0 for c in candidates], width, tree)

    def select_scored(self, candidates: list[Node], scores: list[float], width: int,
                      tree: Tree) -> list[int]:
        """:meth:`select` with ``scores[i]`` ranking ``candidates[i]`` (look-ahead scores)."""
        m, roots = self.beam_width, tree.root.children
        n_sub = max(1, len(roots) // m)
        sub_of = {child.id: min(i // m, n_sub - 1) for i, child in enumerate(roots)}

        def subtree(node: Node) -> int:
            while node.depth > 1 and node.parent is not None:
                node = node.parent
            return sub_of[node.id]

        shares = {s: m for s in range(n_sub)}
        shares[n_sub - 1] = len(roots) - m * (n_sub - 1)
        for node in tree.finished():
            shares[subtree(node)] -= 1
        best: dict[int, int] = {}  # subtree -> its best candidate (first on ties)
        for i, c in enumerate(candidates):
            sub = subtree(c)
            j = best.setdefault(sub, i)
            if scores[i] > scores[j]:
                best[sub] = i
        counts = [0] * len(candidates)
        for sub, i in best.items():
            counts[i] = max(0, shares[sub])
        return counts


@schema("selector", "dvts", DVTSSelector)
class DVTSConf(Component):
    beam_width: int = num(ge=1)
    lookahead: int = num(ge=0)  # greedy look-ahead steps ranking each candidate (ets.core.lookahead)
