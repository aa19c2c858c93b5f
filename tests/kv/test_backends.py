"""KV backends against brute force on random trees, plus hand-computed cases."""

from __future__ import annotations

import random

import pytest

from ets.core.tree import Node, Tree
from ets.kv import PagedKV, PaperKV, RadixKV
from ets.protocols import KVBackend

BLOCK_SIZES = (1, 3, 16)


# --- brute force -----------------------------------------------------------------


def full_seq(tree: Tree, node: Node) -> tuple[int, ...]:
    return tree.context(node)[1]  # the root's is the prompt


def brute_paper(live: list[Node]) -> int:
    ids: dict[int, Node] = {}
    for leaf in live:
        for n in leaf.path():
            ids[n.id] = n
    return sum(len(n.token_ids) for n in ids.values())


def brute_radix(tree: Tree, live: list[Node]) -> int:
    seqs = [full_seq(tree, n) for n in live]
    return len({tuple(s[:k]) for s in seqs for k in range(1, len(s) + 1)})


def brute_paged(tree: Tree, live: list[Node], b: int) -> int:
    seqs = [full_seq(tree, n) for n in live]
    full = {tuple(s[: k * b]) for s in seqs for k in range(1, len(s) // b + 1)}
    return len(full) * b + b * sum(1 for s in seqs if len(s) % b)


# --- random trees -----------------------------------------------------------------


def random_step(rng: random.Random, siblings: list[Node], vocab: int) -> tuple[int, ...]:
    """A step that often collides with a sibling's tokens (identical or prefix)."""
    fresh = tuple(rng.randrange(vocab) for _ in range(rng.choice([0, 0, 1, 2, 5, 9, 20])))
    if not siblings or rng.random() < 0.3:
        return fresh
    other = rng.choice(siblings).token_ids
    kind = rng.random()
    if kind < 0.35:
        return other  # identical sibling
    if kind < 0.7:
        return other[: rng.randint(0, len(other))]  # prefix of a sibling (cross-boundary)
    return other[: rng.randint(0, len(other))] + fresh  # shared prefix, then diverges


def random_tree(rng: random.Random) -> Tree:
    vocab = rng.choice([2, 3, 50, 150_000])
    prompt = tuple(rng.randrange(vocab) for _ in range(rng.choice([0, 1, 4, 17])))
    tree = Tree("p", prompt)
    for _ in range(rng.randint(0, 40)):
        parent = rng.choice(tree.nodes)
        step = random_step(rng, parent.children, vocab)
        if parent.parent is not None and rng.random() < 0.15:
            # Continue where a longer sibling step of the parent went: the child's
            # tokens extend the parent's step into that sibling's tokens.
            longer = [s for s in parent.parent.children if len(s.token_ids) > parent.n_tokens]
            if longer and longer[0].token_ids[: parent.n_tokens] == parent.token_ids:
                step = longer[0].token_ids[parent.n_tokens :] + step
        tree.add_child(parent, "s", step)
    return tree


def random_live(rng: random.Random, tree: Tree) -> list[Node]:
    k = rng.randint(0, len(tree.nodes))
    return rng.sample(tree.nodes, k)


def test_random_trees_match_brute_force() -> None:
    rng = random.Random(1234)
    paged = {b: PagedKV(b) for b in BLOCK_SIZES}
    for _ in range(3000):
        tree = random_tree(rng)
        live = random_live(rng, tree)
        assert PaperKV().measure(tree, live) == brute_paper(live)
        assert RadixKV().measure(tree, live) == brute_radix(tree, live)
        for b, backend in paged.items():
            assert backend.measure(tree, live) == brute_paged(tree, live, b), b


def lca(a: Node, b: Node) -> Node:
    up = {id(m) for m in [a, *a.ancestors()]}
    return next(m for m in [b, *b.ancestors()] if id(m) in up)


def crosses_boundary(tree: Tree, u: Node, v: Node) -> bool:
    """The token LCP of u and v runs past the first node below their LCA on u's path."""
    top = lca(u, v)
    if top is u or top is v:
        return False
    su, sv = full_seq(tree, u), full_seq(tree, v)
    lcp = next((i for i, (x, y) in enumerate(zip(su, sv)) if x != y), min(len(su), len(sv)))
    first_u = next(m for m in [u, *u.ancestors()] if m.parent is top)
    return lcp > len(full_seq(tree, first_u)) and first_u is not u


def test_generator_covers_token_sharing_cases() -> None:
    """The random trees really contain identical siblings and cross-boundary sharing."""
    rng = random.Random(1234)
    identical = cross = 0
    for _ in range(300):
        tree = random_tree(rng)
        nodes = tree.nodes[1:]
        identical += any(
            a.parent is b.parent and a.token_ids == b.token_ids and a.token_ids
            for a in nodes
            for b in nodes
            if a is not b
        )
        cross += any(crosses_boundary(tree, u, v) for u in nodes for v in nodes)
    assert identical > 50 and cross > 50, (identical, cross)


def test_long_sequences_match_brute_force() -> None:
    """Long shared steps exercise the galloping LCP beyond its first chunks."""
    rng = random.Random(7)
    for _ in range(12):
        tree = Tree("p", tuple(rng.randrange(9) for _ in range(100)))
        long_step = tuple(rng.randrange(100_000) for _ in range(rng.randint(50, 400)))
        for _ in range(25):
            parent = rng.choice(tree.nodes)
            cut = rng.randint(0, len(long_step))
            tail = tuple(rng.randrange(3) for _ in range(rng.randint(0, 3)))
            tree.add_child(parent, "s", long_step[:cut] + tail)
        live = random_live(rng, tree)
        assert RadixKV().measure(tree, live) == brute_radix(tree, live)
        for b in BLOCK_SIZES:
            assert PagedKV(b).measure(tree, live) == brute_paged(tree, live, b)


# --- hand-computed cases ----------------------------------------------------------


def small_tree() -> tuple[Tree, dict[str, Node]]:
    """prompt (1, 2); A=(3, 4), B=(3, 5), C=(3, 4) under root; D=(6,) under A;
    E=(3, 4, 6, 7) under root (its tokens run through A and then D)."""
    t = Tree("p", (1, 2))
    a = t.add_child(t.root, "a", (3, 4))
    b = t.add_child(t.root, "b", (3, 5))
    c = t.add_child(t.root, "c", (3, 4))
    d = t.add_child(a, "d", (6,))
    e = t.add_child(t.root, "e", (3, 4, 6, 7))
    return t, {"a": a, "b": b, "c": c, "d": d, "e": e}


@pytest.mark.parametrize("backend", [PaperKV(), RadixKV(), PagedKV(), PagedKV(1)])
def test_empty_live_is_zero(backend: KVBackend) -> None:
    tree, _ = small_tree()
    assert backend.measure(tree, []) == 0
    assert isinstance(backend, KVBackend)


def test_hand_two_siblings() -> None:
    tree, n = small_tree()
    live = [n["a"], n["b"]]  # sequences 1 2 3 4 and 1 2 3 5
    assert PaperKV().measure(tree, live) == 4  # A 2 + B 2, prompt left out
    assert RadixKV().measure(tree, live) == 5  # 1,2,3 shared + 4 + 5
    assert PagedKV(2).measure(tree, live) == 6  # blocks [12] [34] [35]
    assert PagedKV(3).measure(tree, live) == 9  # block [123] + 2 private partials


def test_hand_identical_siblings() -> None:
    tree, n = small_tree()
    live = [n["a"], n["c"]]  # both 1 2 3 4
    assert PaperKV().measure(tree, live) == 4  # distinct nodes: counted twice
    assert RadixKV().measure(tree, live) == 4  # one sequence of 4 tokens
    assert PagedKV(2).measure(tree, live) == 4  # blocks [12] [34], shared
    assert PagedKV(3).measure(tree, live) == 9  # block [123] + one partial each


def test_hand_cross_boundary() -> None:
    tree, n = small_tree()
    live = [n["d"], n["e"]]  # 1 2 3 4 6 (A then D) and 1 2 3 4 6 7 (E)
    assert PaperKV().measure(tree, live) == 7  # A 2 + D 1 + E 4
    assert RadixKV().measure(tree, live) == 6  # D's sequence is a prefix of E's
    assert PagedKV(2).measure(tree, live) == 8  # [12] [34] [67] + D's partial [6]
    assert PagedKV(16).measure(tree, live) == 32  # no full block: two partials


def test_hand_root_and_duplicates() -> None:
    tree, n = small_tree()
    assert PaperKV().measure(tree, [tree.root]) == 0  # prompt left out
    assert RadixKV().measure(tree, [tree.root]) == 2  # the prompt itself
    assert PagedKV(4).measure(tree, [tree.root]) == 4  # one partial block
    # The same node twice is one live sequence.
    assert PagedKV(3).measure(tree, [n["a"], n["a"]]) == 6  # [123] + one partial


@pytest.mark.parametrize("bad", [0, -3])
def test_paged_rejects_bad_block_size(bad: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        PagedKV(bad)


def test_names() -> None:
    assert (PaperKV.name, RadixKV.name, PagedKV.name) == ("paper", "radix", "paged")
