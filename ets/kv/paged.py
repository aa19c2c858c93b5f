"""vLLM-style paged KV measure: shared full blocks, private partial blocks."""

from __future__ import annotations

from collections.abc import Sequence

from ets.core.tree import Node, Tree
from ets.kv.paper import KVConf
from ets.kv.radix import prefix_blocks
from ets.schema import num, schema


class PagedKV:
    """Tokens allocated by a paged KV cache with prefix caching.

    A full block of ``block_size`` tokens is shared only when the block and its
    whole prefix are identical, so full blocks are the distinct full-block prefixes
    of the live sequences (prompt included). Each live sequence whose length is not
    a multiple of ``block_size`` also holds one private partial last block, even
    when another live node has the very same tokens (the same node listed twice
    in ``live`` is one sequence).

    Args:
        block_size: Tokens per block (vLLM's default is 16).

    Raises:
        ValueError: If ``block_size`` is not a positive integer.
    """

    name = "paged"

    def __init__(self, block_size: int = 16) -> None:
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"PagedKV block_size must be a positive integer, got {block_size!r}")
        self.block_size = block_size

    def measure(self, tree: Tree, live: Sequence[Node]) -> int:
        """KV size in tokens (allocated blocks times ``block_size``).

        Args:
            tree: The search tree; its root holds the prompt tokens.
            live: Frontier nodes; each stands for prompt + its root-to-node path.

        Returns:
            ``block_size`` times (distinct full-block prefixes + partial blocks).
        """
        full, partial = prefix_blocks(tree, live, self.block_size)
        return (full + partial) * self.block_size


@schema("kv", "paged", PagedKV)
class PagedKVConf(KVConf):
    block_size: int = num(ge=1)
