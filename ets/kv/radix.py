"""Token-exact KV measure: size of the token prefix trie of the live sequences."""

from __future__ import annotations

from collections.abc import Sequence

from ets.core.tree import Node, Tree

# A cursor (node, offset) stands for the token stream node.token_ids[offset:]
# followed by the node's live subtree. Cursors in one set share all tokens so far.
_Cursor = tuple[Node, int]


def _live_children(live: Sequence[Node]) -> dict[int, list[Node]]:
    """Children on live paths, by parent id (each node listed once)."""
    kids: dict[int, list[Node]] = {}
    seen: set[int] = set()
    for leaf in live:
        node = leaf
        while node.parent is not None and node.id not in seen:
            seen.add(node.id)
            kids.setdefault(node.parent.id, []).append(node)
            node = node.parent
    return kids


def _common_run(group: list[_Cursor]) -> int:
    """Tokens all cursors of ``group`` share before one diverges or a node ends.

    The cursors share their next token, so the answer is at least 1. Runs are
    found by slice compares (C speed): galloping, then bisecting.
    """
    node, off = group[0]
    ref = node.token_ids
    run = min(len(n.token_ids) - o for n, o in group)
    for n, o in group[1:]:
        ids = n.token_ids
        if ids[o : o + run] == ref[off : off + run]:
            continue
        lo, hi = 1, 2  # invariant: slices of length lo are equal
        while hi < run and ids[o : o + hi] == ref[off : off + hi]:
            lo, hi = hi, 2 * hi
        hi = min(hi, run)  # slices of length hi differ
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ids[o : o + mid] == ref[off : off + mid]:
                lo = mid
            else:
                hi = mid
        run = lo
    return run


def prefix_blocks(tree: Tree, live: Sequence[Node], block: int) -> tuple[int, int]:
    """Walk the token prefix trie of the live sequences (prompt included).

    Tokens are only looked at where several sequences are still together (a
    run they share is skipped with slice compares); a lone stream jumps to its
    node's end at once. The cost is about the number of nodes on the live paths.

    Args:
        tree: The search tree; its root holds the prompt tokens.
        live: Frontier nodes; each stands for prompt + its root-to-node path.
        block: Block size ``B`` (1 gives the size of the trie itself).

    Returns:
        ``(full, partial)``: the number of distinct prefixes whose length is a
        positive multiple of ``B`` (distinct full-block prefixes), and the number
        of distinct live nodes whose sequence length is not a multiple of ``B``.
    """
    if not live:
        return 0, 0
    kids = _live_children(live)
    live_ids = {n.id for n in live}
    full = partial = 0
    lone: list[tuple[Node, int, int]] = [(tree.root, 0, 0)]  # (node, offset, depth)
    shared: list[tuple[list[_Cursor], int]] = []  # (cursors sharing all so far, depth)
    while lone or shared:
        while lone:  # a lone stream shares nothing until its node has 2+ live children
            node, off, depth = lone.pop()
            while True:
                end = depth + len(node.token_ids) - off
                full += end // block - depth // block
                if end % block and node.id in live_ids:
                    partial += 1
                children = kids.get(node.id)
                if children is None:
                    break
                depth, off = end, 0
                if len(children) > 1:
                    shared.append(([(c, 0) for c in children], depth))
                    break
                node = children[0]
        if not shared:
            break
        todo, depth = shared.pop()
        groups: dict[int, list[_Cursor]] = {}
        for node, off in todo:  # todo grows: ended nodes hand over to their children
            ids = node.token_ids
            if off < len(ids):
                groups.setdefault(ids[off], []).append((node, off))
                continue
            if depth % block and node.id in live_ids:
                partial += 1
            todo.extend((c, 0) for c in kids.get(node.id, ()))
        for group in groups.values():
            if len(group) == 1:
                lone.append((*group[0], depth))
                continue
            run = _common_run(group)
            full += (depth + run) // block - depth // block
            shared.append(([(n, o + run) for n, o in group], depth + run))
    return full, partial


class RadixKV:
    """Distinct non-empty token prefixes of the live sequences, prompt included.

    This is the size of a token-level prefix trie (SGLang's RadixAttention):
    identical siblings share, and so do sibling steps sharing a token prefix,
    even across node boundaries (only tokens matter, not the node structure).
    """

    name = "radix"

    def measure(self, tree: Tree, live: Sequence[Node]) -> int:
        """KV size in tokens.

        Args:
            tree: The search tree; its root holds the prompt tokens.
            live: Frontier nodes; each stands for prompt + its root-to-node path.

        Returns:
            The number of nodes of the token prefix trie (0 for an empty ``live``).
        """
        return prefix_blocks(tree, live, 1)[0]
