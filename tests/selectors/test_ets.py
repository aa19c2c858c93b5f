import random

import numpy as np
import pytest

from ets.selectors.allocation import rebase_allocation
from ets.selectors.ets import ETSSelector
from ets.selectors.ets_ilp import brute_force, objective, solve_cpsat
from tests.conftest import random_tree


class HashEmbedder:
    """Deterministic embedding by text (tests of the ILP, not of semantics):
    equal texts → equal unit vectors, different texts → orthogonal ones."""

    def embed(self, texts):
        vocab = sorted(set(texts))
        out = np.zeros((len(texts), len(vocab)))
        for i, t in enumerate(texts):
            out[i, vocab.index(t)] = 1.0
        return out


def _selector(**kw):
    lam = kw.pop("lam", 1.0)
    return ETSSelector(embedder=HashEmbedder(), **kw, **{"lambda": lam})


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("node_cost", ["uniform", "tokens"])
@pytest.mark.parametrize("coverage", [0.0, 1.4])
def test_cpsat_matches_brute_force(seed, node_cost, coverage):
    rng = random.Random(seed)
    tree, cands = random_tree(rng, depth=rng.randint(1, 3), max_children=3,
                              n_candidates=rng.randint(2, 12))
    width = rng.choice([4, 16, 64])
    sel = _selector(node_cost=node_cost, coverage_weight=coverage, lam=rng.choice([0.3, 1.0, 3.0]))
    inst = sel.build_instance(cands, width)
    assert (inst.clusters is None) == (coverage == 0 or len({c.text for c in cands}) == 1)
    got, best = solve_cpsat(inst), brute_force(inst)
    assert got.status == "OPTIMAL"
    n_terms = len(inst.weights) + len(inst.branch_cost) + len(set(inst.clusters or []))
    assert abs(got.objective - best.objective) <= n_terms * 0.5e-6 + 1e-12
    assert objective(inst, got.keep) == pytest.approx(got.objective)


def test_hand_computed_instance():
    # root -> a -> {c1, c2};  root -> b -> {c3}. O = (0.5, 0.25, 0.25), uniform cost 1/6
    # (|B| = 3: root, a, b; |L| = 3). lambda_b = 1, no clusters.
    # keep {c1}:        0.5 - (root + a + c1)/6 = 0.5 - 0.5 = 0.0
    # keep {c1,c2}:     0.75 - 4/6 = 0.0833  <- best
    # keep all:         1.0 - 6/6 = 0.0;   keep {c1, c3}: 0.75 - 5/6 < 0
    from ets.selectors.ets_ilp import ETSInstance

    u = 1 / 6
    inst = ETSInstance([0.5, 0.25, 0.25], [1, 1, 2], [-1, 0, 0], [u] * 3, [u] * 3, 1.0)
    sol = solve_cpsat(inst)
    assert sol.keep == [True, True, False]
    assert sol.objective == pytest.approx(0.75 - 4 / 6)


@pytest.mark.parametrize("seed", range(20))
def test_lambda_zero_is_rebase(seed):
    rng = random.Random(seed)
    tree, cands = random_tree(rng, depth=3, n_candidates=rng.randint(2, 12))
    width = rng.randint(1, 64)
    got = _selector(lam=0.0, coverage_weight=1.4).select(cands, width, tree)
    assert got == rebase_allocation([c.score for c in cands], width, 0.2)


@pytest.mark.parametrize("seed", range(20))
def test_budget_conserved_and_pruned_get_zero(seed):
    rng = random.Random(seed)
    tree, cands = random_tree(rng, depth=3, n_candidates=rng.randint(2, 12))
    width = rng.randint(1, 64)
    sel = _selector(lam=2.0)
    keep = sel.solve(sel.build_instance(cands, width)).keep
    counts = sel.select(cands, width, tree)
    assert sum(counts) == width
    assert all(n == 0 for n, k in zip(counts, keep) if not k)


def test_min_one_child_gives_every_kept_candidate_a_child():
    # scores far apart at T=0.2: plain allocation starves the weak kept candidate
    tree, cands = random_tree(random.Random(1), depth=1, max_children=1)
    parent = tree.root
    cands = [tree.add_child(parent, t, (i,), score=s)
             for i, (t, s) in enumerate([("alpha", 1.0), ("beta", 0.0)])]
    keep = [True, True]
    paper = _selector(lam=1.0).allocate(cands, keep, 4)
    improved = _selector(lam=1.0, min_one_child=True).allocate(cands, keep, 4)
    assert paper == [4, 0]
    assert improved == [1 + 3, 1 + 0] or improved == [3, 1]
    assert sum(improved) == 4 and min(improved) >= 1


def test_coverage_keeps_a_second_cluster():
    # two siblings of equal structure; the weaker one is in another cluster. Without
    # coverage the cost term prunes it; with a large coverage weight it is kept.
    from ets.tree import Tree

    tree = Tree("p", (1, 2))
    a = tree.add_child(tree.root, "s", (3,), score=0.5)
    c1 = tree.add_child(a, "same idea", (4,), score=0.9)
    c2 = tree.add_child(a, "other idea", (5,), score=0.1)
    no_cov = _selector(lam=1.0, coverage_weight=0.0)
    cov = _selector(lam=1.0, coverage_weight=2.0)
    assert no_cov.solve(no_cov.build_instance([c1, c2], 8)).keep == [True, False]
    assert cov.solve(cov.build_instance([c1, c2], 8)).keep == [True, True]


def test_rejects_unknown_option():
    with pytest.raises(TypeError, match="lamda"):
        ETSSelector(**{"lamda": 1.0})
