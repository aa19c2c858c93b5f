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
    from ets.core.tree import Tree

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


def _frontier(texts_scores):
    from ets.core.tree import Tree

    tree = Tree("p", (1, 2))
    parent = tree.add_child(tree.root, "s", (3,), score=0.5)
    return tree, [tree.add_child(parent, t, (4 + i,), score=s)
                  for i, (t, s) in enumerate(texts_scores)]


# Hand-built frontier for the min_one_child rules, T = 0.2. Clusters: A = {c0, c2},
# B = {c1}, C = {c3} (a looping "wait" step). Weights exp((s - 0.9)/0.2):
# c0 1, c1 = c2 = e^-0.5 = 0.6065, c3 = e^-4 = 0.0183 (S = 2.2314).
# REBASE over all, W = 2: c0 ceil(2/2.2314 = 0.90) = 1, c1 ceil(1 * 0.6065/1.2314 =
# 0.49) = 1, then nothing left: explored clusters {A, B}; C is starved.
# ETS keeps c0, c1, c3 (prunes c2). REBASE over the kept, W = 2: c0 ceil(2/1.6248 =
# 1.23) = 2, c1 gets 0: pruning c2 starved cluster B, which REBASE would explore.
_RULE_FRONTIER = [("A1", 0.9), ("B", 0.8), ("A2", 0.8), ("wait", 0.1)]
_RULE_LABELS = [0, 1, 0, 2]
_RULE_KEEP = [True, True, False, True]


def test_representative_rule_repairs_a_starved_explored_cluster_only():
    tree, cands = _frontier(_RULE_FRONTIER)
    paper = _selector().allocate(cands, _RULE_KEEP, 2, _RULE_LABELS)
    rep = _selector(min_one_child=True)
    assert rep.min_child_rule == "representative"
    assert paper == [2, 0, 0, 0]
    assert rep.guaranteed(cands, _RULE_KEEP, 2, _RULE_LABELS) == [0, 1]  # not the loop c3
    assert rep.allocate(cands, _RULE_KEEP, 2, _RULE_LABELS) == [1, 1, 0, 0]  # one moved from c0


def test_every_rule_feeds_the_loop_representative_does_not():
    # W = 4. REBASE over all: c0 ceil(4/2.2314 = 1.79) = 2, c1 ceil(2 * 0.6065/1.2314 =
    # 0.985) = 1, c2 ceil(0.6065/0.6248 = 0.97) = 1, c3 0: explored {A, B}.
    # Over the kept: c0 ceil(4/1.6248 = 2.46) = 3, c1 ceil(0.6065/0.6248) = 1, c3 0:
    # no explored cluster is starved, so `representative` is the paper's allocation.
    # `every` first gives c0, c1, c3 one child each, then REBASE of 1 over the kept -> c0.
    tree, cands = _frontier(_RULE_FRONTIER)
    paper = _selector().allocate(cands, _RULE_KEEP, 4, _RULE_LABELS)
    rep = _selector(min_one_child=True).allocate(cands, _RULE_KEEP, 4, _RULE_LABELS)
    every = _selector(min_one_child=True, min_child_rule="every")
    per_cluster = _selector(min_one_child=True, min_child_rule="cluster")
    assert paper == rep == [3, 1, 0, 0]
    assert every.allocate(cands, _RULE_KEEP, 4, _RULE_LABELS) == [2, 1, 0, 1]
    # one per cluster without the REBASE condition still feeds the loop's cluster
    assert per_cluster.guaranteed(cands, _RULE_KEEP, 4, _RULE_LABELS) == [0, 1, 3]
    assert per_cluster.allocate(cands, _RULE_KEEP, 4, _RULE_LABELS) == [2, 1, 0, 1]


def test_representative_is_the_best_kept_member_and_equal_texts_cluster():
    # no labels (coverage off): equal texts form one cluster. Cluster "x" has kept
    # members c0 (0.5) and c2 (0.7): its representative is c2.
    tree, cands = _frontier([("x", 0.5), ("y", 0.9), ("x", 0.7)])
    sel = _selector(min_one_child=True, coverage_weight=0.0)
    assert sel.guaranteed(cands, [True, True, True], 16) == [1, 2]


def test_min_child_rule_is_validated():
    with pytest.raises(ValueError, match="selector.min_child_rule='some'.*representative"):
        _selector(min_child_rule="some")


@pytest.mark.parametrize("seed", range(15))
def test_selection_log_matches_an_independent_recount(seed):
    rng = random.Random(seed)
    tree, cands = random_tree(rng, depth=3, n_candidates=rng.randint(2, 12))
    for c in cands:  # few distinct texts so that clusters have several members
        c.text = rng.choice(["u", "v", "w", "z"])
    width = rng.randint(1, 64)
    sel = _selector(lam=rng.choice([1.0, 3.0]))
    counts = sel.select(cands, width, tree)
    keep = sel.solve(sel.build_instance(cands, width)).keep
    entry = sel.calls[-1]
    s = np.array([c.score for c in cands])
    w = np.exp(s / 0.2)
    assert entry.candidates == len(cands)
    assert entry.clusters == len({c.text for c in cands})
    assert entry.kept == sum(keep)
    assert entry.expanded == sum(n > 0 for n in counts)
    assert entry.rebase_expand == sum(n > 0 for n in rebase_allocation(list(s), width, 0.2))
    assert entry.mass_pruned == pytest.approx(w[~np.array(keep)].sum() / w.sum())
    rebase = rebase_allocation(list(s), width, 0.2)
    lost = [i for i in range(len(cands)) if rebase[i] > 0 and not keep[i]]
    assert entry.rebase_pruned == len(lost)
    assert entry.rebase_pruned_parent_kept == sum(
        any(keep[j] and cands[j].parent is cands[i].parent for j in range(len(cands))) for i in lost)
    st = sel.stats
    assert st["selection_calls"] == 1
    assert st["clusters_per_candidate"] == pytest.approx(entry.clusters / entry.candidates)
    assert st["kept_per_call"] == entry.kept
    assert st["rebase_expand_per_call"] == entry.rebase_expand
    assert st["mass_pruned_per_call"] == pytest.approx(entry.mass_pruned)


def test_stats_pool_calls_and_skip_single_candidates():
    from ets.selectors.ets import derived_stats

    tree, cands = _frontier([("a", 0.9), ("b", 0.1), ("a", 0.5)])
    sel = _selector()
    sel.select(cands, 8, tree)
    sel.select(cands[:1], 8, tree)  # one candidate: always kept, not logged
    sel.select(cands[:2], 8, tree)
    assert [c.candidates for c in sel.calls] == [3, 2]
    assert [c.clusters for c in sel.calls] == [2, 2]
    assert sel.stats["clusters_per_candidate"] == pytest.approx(4 / 5)
    assert sel.stats["candidates_per_call"] == 2.5
    # the derived keys are recomputed from summed counts (e.g. after merging shards)
    summed = {"selection_calls": 4, "candidates": 20, "clustered_candidates": 10,
              "clusters": 5, "candidates_kept": 8, "softmax_mass_pruned": 0.4}
    d = derived_stats(summed)
    assert d["clusters_per_candidate"] == 0.5 and d["kept_per_call"] == 2
    assert d["mass_pruned_per_call"] == pytest.approx(0.1)
    no_cov = _selector(coverage_weight=0.0)
    no_cov.select(cands, 8, tree)
    assert no_cov.calls[-1].clusters is None and no_cov.stats["clusters_per_candidate"] == 0.0


class _CutEmbedder(HashEmbedder):
    threshold = 0.7


def test_threshold_comes_from_the_embedder_unless_the_selector_sets_one():
    assert ETSSelector(embedder=_CutEmbedder()).threshold() == 0.7
    assert ETSSelector(embedder=_CutEmbedder(), cluster_threshold=0.3).threshold() == 0.3
    assert ETSSelector(embedder=HashEmbedder()).threshold() == 0.05  # no attribute: paper's


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("coverage", [0.0, 1.4])
def test_lambda_b_one_never_prunes_a_rebase_child_whose_parent_is_kept(seed, coverage):
    # ALGORITHMS.md §6 / issue 8 §5: with lambda_b = 1, uniform cost and width = |L| (every
    # unfinished candidate holds one slot), keeping such a candidate gains its reward share
    # (>= 1/W) and costs only its own node, 1/(|B| + |L|) < 1/W. Random scores and trees.
    rng = random.Random(seed)
    cands: list = []
    while len(cands) < 2:  # one candidate is kept without a program (and not logged)
        tree, cands = random_tree(rng, depth=rng.randint(1, 3), max_children=4,
                                  n_candidates=rng.randint(2, 12))
    for c in cands:
        c.score = rng.choice([rng.random(), 0.2 * rng.random()])
    sel = _selector(coverage_weight=coverage)
    sel.select(cands, len(cands), tree)
    assert sel.calls[-1].rebase_pruned_parent_kept == 0


def test_selection_labels_candidates_with_their_cluster_for_the_tree_pages():
    # equal texts share a cluster (HashEmbedder: equal text, equal vector); the labels are
    # the ones the program used, written on the nodes and into the tree records.
    tree, cands = _frontier([("x", 0.5), ("y", 0.9), ("x", 0.7), ("z", 0.2)])
    sel = _selector(coverage_weight=1.4)
    sel.select(cands, 8, tree)
    labels = [c.cluster for c in cands]
    assert labels[0] == labels[2] and len({labels[0], labels[1], labels[3]}) == 3
    rows = {r["id"]: r for r in tree.to_records()}
    assert [rows[c.id]["cluster"] for c in cands] == labels
    assert "cluster" not in rows[0] and "cluster" not in rows[cands[0].parent.id]
