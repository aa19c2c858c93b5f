"""The paper's KV measure: step tokens over the union of the live paths."""

from __future__ import annotations

from collections.abc import Sequence

from ets.core.tree import Node, Tree
from ets.schema import Component, schema


class PaperKV:
    """Sum of step tokens over the union of the root-to-node paths of ``live``.

    Sharing happens only at node boundaries: a node on several live paths counts
    once, but two sibling steps with identical tokens count twice. The prompt
    (root) is left out on purpose: the reference implementation meant to count it,
    but a bug made it ~2 tokens, and the paper's numbers are without it.
    """

    name = "paper"

    def measure(self, tree: Tree, live: Sequence[Node]) -> int:
        """KV size in tokens.

        Args:
            tree: The search tree (unused; the paths are read from the nodes).
            live: Frontier nodes; each stands for its root-to-node path.

        Returns:
            ``sum(len(n.token_ids))`` over the distinct non-root nodes on the paths.
        """
        seen: set[int] = set()
        total = 0
        for leaf in live:
            node: Node | None = leaf
            # Stop at the first node already counted: its ancestors are too.
            while node is not None and node.parent is not None and node.id not in seen:
                seen.add(node.id)
                total += len(node.token_ids)
                node = node.parent
        return total


@schema("kv", "base")
class KVConf(Component):
    """A backend without settings (``PaperKV``, ``ets.kv.radix.RadixKV``)."""
