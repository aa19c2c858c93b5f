"""First Finish Search: sample N in parallel, stop once the first k have finished."""

from __future__ import annotations

from ets.core.tree import Node, Tree
from ets.schema import Component, num, schema


class FFSSelector:
    """Continue every live trajectory by one step until ``k`` have finished.

    Depth-synchronous decoding approximates token-synchronous racing at the granularity
    of one step, so pair it with the ``fixed_tokens`` expander for a fine race; among
    trajectories that finish at the same depth the shorter one counts as first
    (:meth:`finalists`).

    Args:
        k: Finishers to wait for; their answers are voted on (k=1: take the first).
    """

    def __init__(self, k: int = 1) -> None:
        self.k = k

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        if len(self.finalists(tree)) >= self.k:
            return [0] * len(candidates)
        return [1 if i < width else 0 for i in range(len(candidates))]

    def finalists(self, tree: Tree) -> list[Node]:
        """The first ``k`` finished trajectories that carry an answer (fewest tokens first)."""
        done = [n for n in tree.finished() if n.answer is not None]
        return sorted(done, key=lambda n: (n.cum_tokens, n.id))[: self.k]


@schema("selector", "ffs", FFSSelector)
class FFSConf(Component):
    k: int = num(ge=1)
