import random

import numpy as np
import pytest

from ets.selectors.allocation import rebase_allocation
from ets.selectors.ets import ETSSelector
from ets.selectors.ets_ilp import ETSInstance, brute_force, objective, presolve, solve_cpsat
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


def _random_instance(rng: random.Random) -> ETSInstance:
    """A random program shaped to hit every presolve rule: chains (one-child branch
    nodes), siblings in one cluster, ties, zero weights, singleton clusters, and
    lambda_b of either sign (the lambda = 0 quirk makes it negative)."""
    nb = rng.randint(1, 7)
    branch_parent = [-1] + [rng.randrange(b) for b in range(1, nb)]
    nx = rng.randint(1, 12)
    cand_parent = [rng.randrange(nb) for _ in range(nx)]
    raw = [rng.choice([0, 0, 1, 2, 2, 5]) for _ in range(nx)]
    weights = [r / (sum(raw) or 1) for r in raw]
    uniform = rng.random() < 0.5
    cost = (lambda: 1.0 / (nx + nb)) if uniform else (lambda: rng.random() / (nx + nb))
    clusters = None
    if rng.random() < 0.7:
        k = rng.randint(1, nx)
        labels = [rng.randrange(k) for _ in range(nx)]
        order = {c: i for i, c in enumerate(dict.fromkeys(labels))}
        clusters = [order[c] for c in labels]
    return ETSInstance(weights, cand_parent, branch_parent, [cost() for _ in range(nx)],
                       [cost() for _ in range(nb)], rng.choice([-1e-4, 0.0, 0.5, 1.0, 3.0]),
                       clusters, rng.choice([0.0, 0.2, 1.4, 5.0]))


@pytest.mark.parametrize("seed", range(400))
def test_presolve_and_cpsat_match_brute_force_on_random_programs(seed):
    inst = _random_instance(random.Random(seed))
    best = brute_force(inst).objective
    for reduce in (True, False):
        got = solve_cpsat(inst, reduce=reduce)
        assert got.status == "OPTIMAL"
        assert got.objective == pytest.approx(best, abs=1e-5)
    # every candidate presolve fixes agrees with some optimum: fixing it in the brute
    # force (here: the optimum among subsets consistent with the fixings) loses nothing
    fixed = presolve(inst).fixed
    consistent = [bits for bits in _subsets(len(inst.weights))
                  if all(f is None or f == b for f, b in zip(fixed, bits))]
    assert max(objective(inst, list(b)) for b in consistent) == pytest.approx(best, abs=1e-12)


def _subsets(n):
    import itertools

    return [b for b in itertools.product([False, True], repeat=n) if any(b)]


def test_presolve_rules_on_a_hand_built_program():
    # root(0) -> a(1) -> b(2) -> {c0, c1, c2}; root -> c3. Uniform cost 1/7, lambda 1.
    # c0: O = 0.75 -> gain 0.75 - 1/7 - (a + b) 2/7 >= 0: forced in (opens a, b).
    # c1, c2 same parent and cluster 1, O = 0: c2 (higher index, equal gain) dominated
    # by c1; c1 is then the last member of cluster 1, bonus 0.5/2 - 1/7 > 0: forced in.
    # c3: O = 0.25, cluster 0 covered by c0 -> 0.25 - 1/7 >= 0: forced in.
    u = 1 / 7
    inst = ETSInstance([0.75, 0.0, 0.0, 0.25], [2, 2, 2, 0], [-1, 0, 1], [u] * 4, [u] * 3,
                       1.0, [0, 1, 1, 0], 0.5)
    red = presolve(inst)
    assert red.fixed == [True, True, False, True]
    assert red.values == [] and not red.at_least_one
    sol = solve_cpsat(inst)
    assert sol.presolved
    assert sol.keep == [True, True, False, True]  # c1 and c2 tie: brute force picks c2
    assert sol.objective == pytest.approx(brute_force(inst).objective)
    assert sol.objective == pytest.approx(1.0 + 2 * 0.5 / 2 - 6 * u)


def test_hand_computed_instance():
    # root -> a -> {c1, c2};  root -> b -> {c3}. O = (0.5, 0.25, 0.25), uniform cost 1/6
    # (|B| = 3: root, a, b; |L| = 3). lambda_b = 1, no clusters.
    # keep {c1}:        0.5 - (root + a + c1)/6 = 0.5 - 0.5 = 0.0
    # keep {c1,c2}:     0.75 - 4/6 = 0.0833  <- best
    # keep all:         1.0 - 6/6 = 0.0;   keep {c1, c3}: 0.75 - 5/6 < 0
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


def test_min_one_child_every_gives_every_kept_candidate_a_child():
    # scores far apart at T=0.2: plain allocation starves the weak kept candidate
    tree, cands = random_tree(random.Random(1), depth=1, max_children=1)
    parent = tree.root
    cands = [tree.add_child(parent, t, (i,), score=s)
             for i, (t, s) in enumerate([("alpha", 1.0), ("beta", 0.0)])]
    keep = [True, True]
    paper = _selector(lam=1.0).allocate(cands, keep, 4)
    improved = _selector(lam=1.0, min_one_child=True, min_child_rule="every").allocate(
        cands, keep, 4)
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
