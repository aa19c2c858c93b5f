"""REBASE: softmax-weighted allocation of the remaining width (ALGORITHMS.md §2)."""

from __future__ import annotations

from ets.core.tree import Node, Tree
from ets.schema import Component, num, schema
from ets.selectors.allocation import rebase_allocation


class RebaseSelector:
    """Give each candidate ``ceil(W_rem * softmax(s/T)_i)`` children, best first.

    Args:
        temperature: Softmax temperature over PRM scores (0.2 in the paper).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        self.temperature = temperature

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        return rebase_allocation([c.score or 0.0 for c in candidates], width, self.temperature)


@schema("selector", "rebase", RebaseSelector)
class RebaseConf(Component):
    temperature: float = num(gt=0)
