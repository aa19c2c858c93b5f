"""Diverse Verifier Tree Search: N/M independent greedy subtrees (ALGORITHMS.md §4)."""

from __future__ import annotations

from collections import defaultdict

from ets.tree import Node, Tree


class DVTSSelector:
    """Split the width into ``N/M`` subtrees at depth 1; each keeps its best live
    candidate and expands it with the subtree's remaining share of the budget.

    The root's children are assigned to subtrees in sibling order (``M`` each, the
    last subtree takes any remainder); a subtree's share shrinks by one for each of
    its finished trajectories, so budgets are conserved per subtree.

    Args:
        beam_width: M, the per-subtree budget (children of the kept node per step).
    """

    def __init__(self, beam_width: int = 4) -> None:
        self.beam_width = beam_width

    def _subtree_of(self, tree: Tree):
        """A function node -> subtree index (root children ranked once, not per lookup)."""
        rank = {child.id: i for i, child in enumerate(tree.root.children)}
        last = max(1, len(rank) // self.beam_width) - 1

        def subtree(node: Node) -> int:
            while node.depth > 1 and node.parent is not None:
                node = node.parent
            return min(rank[node.id] // self.beam_width, last)

        return subtree

    def _shares(self, tree: Tree, subtree) -> dict[int, int]:
        n = len(tree.root.children)
        n_sub = max(1, n // self.beam_width)
        shares = {s: self.beam_width for s in range(n_sub)}
        shares[n_sub - 1] = n - self.beam_width * (n_sub - 1)
        for node in tree.finished():
            shares[subtree(node)] -= 1
        return shares

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        subtree = self._subtree_of(tree)
        shares = self._shares(tree, subtree)
        best: dict[int, int] = {}
        groups: dict[int, list[int]] = defaultdict(list)
        for i, c in enumerate(candidates):
            groups[subtree(c)].append(i)
        for sub, idx in groups.items():
            best[sub] = max(idx, key=lambda i: (candidates[i].score or 0.0, -i))
        counts = [0] * len(candidates)
        for sub, i in best.items():
            counts[i] = max(0, shares[sub])
        return counts
