"""Best-of-N: independent samples, no pruning; each live trajectory continues once."""

from __future__ import annotations

from ets.core.tree import Node, Tree
from ets.schema import Component, schema


class BestOfNSelector:
    """Every candidate gets exactly one child (with the ``full`` expander there is
    nothing to select: the root's N children all finish in one step)."""

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        return [1 if i < width else 0 for i in range(len(candidates))]


@schema("selector", "best_of_n", BestOfNSelector)
class BestOfNConf(Component):
    pass
