import math
import random

import pytest

from ets.core.tree import Tree
from ets.selectors.beam import BeamSelector
from ets.selectors.best_of_n import BestOfNSelector
from ets.selectors.dvts import DVTSSelector
from ets.selectors.ffs import FFSSelector


def _frontier(scores):
    tree = Tree("p", (0,))
    return tree, [tree.add_child(tree.root, f"s{i}", (i,), score=s) for i, s in enumerate(scores)]


def test_beam_search_and_learn_hand_computed():
    tree, cands = _frontier([0.1, 0.9, 0.5, 0.7, 0.3])
    # W=8, M=4: keep the top 2 (0.9 at index 1, 0.7 at index 3), 4 children each
    assert BeamSelector(4).select(cands, 8, tree) == [0, 4, 0, 4, 0]
    # W=6: keep ceil(6/4)=2, the second gets the remainder 2
    assert BeamSelector(4).select(cands, 6, tree) == [0, 4, 0, 2, 0]


def test_beam_ets_reference_hand_computed():
    tree, cands = _frontier([0.1, 0.9, 0.5, 0.7, 0.3])
    # W=10: keep ceil(sqrt(10))=4, each ceil(10/4)=3 (12 > 10, as in the reference)
    assert BeamSelector(variant="ets_reference").select(cands, 10, tree) == [0, 3, 3, 3, 3]


@pytest.mark.parametrize("seed", range(30))
def test_beam_search_and_learn_conserves_budget(seed):
    rng = random.Random(seed)
    tree, cands = _frontier([rng.random() for _ in range(rng.randint(1, 30))])
    width, m = rng.randint(1, 64), rng.randint(1, 8)
    counts = BeamSelector(m).select(cands, width, tree)
    keep = min(len(cands), math.ceil(width / m))
    assert sum(counts) == (width if keep * m >= width else keep * m)
    assert sum(c > 0 for c in counts) == keep
    kept_scores = [c.score for c, n in zip(cands, counts) if n]
    assert min(kept_scores) >= max([c.score for c, n in zip(cands, counts) if not n], default=-1)


def test_dvts_subtrees_keep_their_best_and_their_share():
    tree = Tree("p", (0,))
    # W=8, M=4: root children 0-3 form subtree 0, 4-7 subtree 1
    level1 = [tree.add_child(tree.root, f"a{i}", (i,), score=0.1 * i) for i in range(8)]
    level1[0].finished = True  # one finished trajectory in subtree 0: its share is 3
    level1[0].finish_reason = "answer"
    cands = level1[1:]
    counts = DVTSSelector(4).select(cands, 7, tree)
    # subtree 0: best live is index 3 (score .3) → 3; subtree 1: best is index 7 → 4
    assert counts == [0, 0, 3, 0, 0, 0, 4]
    # next depth: children of the kept nodes stay in their subtree
    kids = [tree.add_child(level1[3], "b", (9,), score=0.9),
            tree.add_child(level1[7], "c", (10,), score=0.2),
            tree.add_child(level1[7], "d", (11,), score=0.8)]
    assert DVTSSelector(4).select(kids, 7, tree) == [3, 0, 4]


def test_best_of_n_and_ffs():
    tree, cands = _frontier([0.3, 0.2, 0.9])
    assert BestOfNSelector().select(cands, 3, tree) == [1, 1, 1]
    ffs = FFSSelector(k=1)
    assert ffs.select(cands, 3, tree) == [1, 1, 1]
    done = tree.add_child(tree.root, "x", (7, 8), score=0.1, finished=True, answer="4")
    longer = tree.add_child(tree.root, "y", (7, 8, 9), score=0.9, finished=True, answer="5")
    assert ffs.select(cands, 3, tree) == [0, 0, 0]
    assert ffs.finalists(tree) == [done]
    assert FFSSelector(k=2).finalists(tree) == [done, longer]
