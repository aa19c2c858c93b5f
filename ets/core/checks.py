"""Validation of what a strategy returns: the loop fails with a message naming it."""

from __future__ import annotations

from collections.abc import Sequence

from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion


class StrategyError(RuntimeError):
    """A strategy (or the selector behind it) returned something invalid."""


def check_proposal(name: str, tree: Tree, budget: Budget, proposal: object,
                   nodes_so_far: int) -> list[Expansion]:
    """The proposal's expansions with ``n > 0``, or :class:`StrategyError`.

    Checks: a list of :class:`Expansion`; integer ``n >= 0``; each node belongs to this
    tree (a tree node or one of its rollouts), is open, below the depth cap and below
    the token cap; the nodes generated so far plus this proposal stay within
    ``budget.max_nodes``.
    """
    if not isinstance(proposal, Sequence) or isinstance(proposal, str):
        raise StrategyError(f"strategy {name!r}: propose() must return a list of Expansion, "
                            f"got {type(proposal).__name__}")
    out = []
    for e in proposal:
        if not isinstance(e, Expansion):
            raise StrategyError(f"strategy {name!r}: propose() returned {e!r}, not an Expansion")
        if not isinstance(e.n, int) or isinstance(e.n, bool) or e.n < 0:
            raise StrategyError(f"strategy {name!r}: expansion of node {e.node.id} asks for "
                                f"n={e.n!r}; n must be a non-negative integer")
        _check_node(name, tree, budget, e.node)
        if e.n:
            out.append(e)
    total = nodes_so_far + sum(e.n for e in out)
    if total > budget.max_nodes:
        raise StrategyError(f"strategy {name!r}: the proposal would bring the problem to {total} "
                            f"generated nodes, over its budget max_nodes={budget.max_nodes}")
    return out


def _check_node(name: str, tree: Tree, budget: Budget, node: Node) -> None:
    if not tree.owns(node):
        raise StrategyError(f"strategy {name!r}: node {node.id} is not a node of this problem's tree")
    if node.finished:
        raise StrategyError(f"strategy {name!r}: node {node.id} is finished "
                            f"({node.finish_reason}) and cannot be expanded")
    if node.depth >= budget.max_depth:
        raise StrategyError(f"strategy {name!r}: node {node.id} is at depth {node.depth}, "
                            f"the depth cap is {budget.max_depth}")
    if node.cum_tokens >= budget.max_tokens:
        raise StrategyError(f"strategy {name!r}: node {node.id} holds {node.cum_tokens} tokens, "
                            f"the token cap is {budget.max_tokens}")
