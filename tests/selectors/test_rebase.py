import math
import random

import pytest

from ets.selectors.allocation import rebase_allocation
from ets.selectors.rebase import RebaseSelector
from tests.conftest import random_tree


def test_hand_computed_two_candidates():
    # w = exp(1/0.2)=e^5, exp(0) = 1; first gets ceil(4 * e^5/(e^5+1)) = ceil(3.973) = 4
    assert rebase_allocation([1.0, 0.0], 4, 0.2) == [4, 0]
    # T = 1: ceil(4 * e/(e+1)) = ceil(2.92) = 3, the rest 1
    assert rebase_allocation([1.0, 0.0], 4, 1.0) == [3, 1]


def test_hand_computed_three_equal():
    # equal scores: ceil(6/3)=2, then ceil(4/2)=2, then 2 (no float overshoot to 3)
    assert rebase_allocation([0.5, 0.5, 0.5], 6, 0.2) == [2, 2, 2]
    # W=5: ceil(5/3)=2, ceil(3/2)=2, 1
    assert rebase_allocation([0.5, 0.5, 0.5], 5, 0.2) == [2, 2, 1]


def test_order_is_by_score_not_position():
    # T=1, scores (0, 1): the better (second) candidate is served first
    assert rebase_allocation([0.0, 1.0], 4, 1.0) == [1, 3]


def test_stable_for_large_scores():
    # a naive exp(s/T) overflows at s/T = 1000; the max-shift gives the same ratios
    assert rebase_allocation([200.0, 199.8], 10, 0.2) == rebase_allocation([0.2, 0.0], 10, 0.2)


def _reference(scores, width, temperature):
    # the textbook loop, in exact-ish arithmetic with math.fsum, for comparison
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    w = {i: math.exp(scores[i] / temperature) for i in order}
    out, left = [0] * len(scores), width
    for pos, i in enumerate(order):
        s_rem = math.fsum(w[j] for j in order[pos:])
        n = min(left, math.ceil(left * w[i] / s_rem - 1e-9))
        out[i], left = n, left - n
    return out


@pytest.mark.parametrize("seed", range(50))
def test_random_matches_reference_and_conserves_budget(seed):
    rng = random.Random(seed)
    scores = [rng.random() for _ in range(rng.randint(1, 20))]
    width = rng.randint(1, 64)
    got = rebase_allocation(scores, width, 0.2)
    assert got == _reference(scores, width, 0.2)
    assert sum(got) == width and min(got) >= 0


def test_selector_uses_node_scores():
    tree, cands = random_tree(random.Random(0), depth=2)
    got = RebaseSelector(0.2).select(cands, 16, tree)
    assert got == rebase_allocation([c.score for c in cands], 16, 0.2)
    assert sum(got) == 16
