"""REBASE with truncation: hand-computed counts, equality with REBASE at ratio 1, config."""

import random

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.selectors.allocation import rebase_allocation
from ets.selectors.rebase import RebaseSelector
from ets.selectors.rebase_trunc import (
    RebaseTruncSelector,
    kept_count,
    truncated_rebase_allocation,
)
from tests.conftest import random_tree


def test_hand_computed_five_candidates_half_kept():
    # ratio 0.5 of 5 -> ceil(2.5) = 3 kept: scores 0.9 (idx 1), 0.7 (idx 3), 0.5 (idx 2).
    # T = 1, weights relative to the max: 1, e^-0.2 = 0.8187, e^-0.4 = 0.6703, sum 2.4890.
    # ceil(8 * 1 / 2.4890) = ceil(3.214) = 4; W 4, S 1.4890: ceil(4 * 0.8187 / 1.4890)
    # = ceil(2.199) = 3; W 1 -> 1. The two dropped candidates get 0.
    scores = [0.1, 0.9, 0.5, 0.7, 0.3]
    assert truncated_rebase_allocation(scores, 8, 1.0, 0.5) == [0, 4, 1, 3, 0]
    # without truncation the tail takes width: sum 3.4871, ceil(8/3.4871) = 3, then
    # ceil(5 * 0.8187 / 2.4871) = 2, ceil(3 * 0.6703 / 1.6684) = 2, then 1 and 0
    assert rebase_allocation(scores, 8, 1.0) == [0, 3, 2, 2, 1]


def test_hand_computed_paper_temperature():
    # T = 0.2, same scores, ratio 0.5: weights 1, e^-1 = 0.3679, e^-2 = 0.1353 (sum 1.5032);
    # ceil(8 / 1.5032) = ceil(5.322) = 6; W 2, S 0.5032: ceil(2 * 0.3679 / 0.5032) = 2; W 0
    assert truncated_rebase_allocation([0.1, 0.9, 0.5, 0.7, 0.3], 8, 0.2, 0.5) == [0, 6, 0, 2, 0]


@pytest.mark.parametrize(("n", "ratio", "kept"), [
    (5, 0.5, 3), (4, 0.5, 2), (10, 0.3, 3),  # 10 * 0.3 = 3.0000000000000004, snapped to 3
    (7, 1.0, 7), (3, 0.01, 1), (0, 0.5, 0), (1, 0.5, 1), (9, 0.34, 4),
])
def test_kept_count(n, ratio, kept):
    assert kept_count(n, ratio) == kept


@pytest.mark.parametrize("seed", range(30))
def test_ratio_one_is_rebase_exactly(seed):
    rng = random.Random(seed)
    tree, cands = random_tree(rng, depth=rng.randint(1, 3))
    width = rng.randint(1, 64)
    assert (RebaseTruncSelector(0.2, 1.0).select(cands, width, tree)
            == RebaseSelector(0.2).select(cands, width, tree))


@pytest.mark.parametrize("seed", range(30))
def test_width_conserved_and_only_top_kept(seed):
    rng = random.Random(seed)
    scores = [round(rng.random(), 2) for _ in range(rng.randint(1, 20))]  # some ties
    width, ratio = rng.randint(1, 64), rng.choice([0.1, 0.25, 0.5, 0.75, 0.9])
    got = truncated_rebase_allocation(scores, width, 0.2, ratio)
    assert sum(got) == width and min(got) >= 0
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    keep = kept_count(len(scores), ratio)
    assert all(got[i] == 0 for i in order[keep:])
    # the kept ones get exactly REBASE over the kept scores
    assert [got[i] for i in order[:keep]] == rebase_allocation(
        [scores[i] for i in order[:keep]], width, 0.2)


def test_config_defaults_and_instantiation(compose_cfg):
    cfg = compose_cfg("selector=rebase_trunc", "selector.truncate_ratio=0.25")
    validate(cfg)
    sel = instantiate(cfg.selector)
    assert isinstance(sel, RebaseTruncSelector)
    assert sel.truncate_ratio == 0.25 and sel.temperature == 0.2


@pytest.mark.parametrize(("override", "fragment"), [
    ("selector.truncate_ratio=0", "selector.truncate_ratio=0.0 is invalid: must be > 0"),
    ("selector.truncate_ratio=1.5", "selector.truncate_ratio=1.5 is invalid: must be <= 1"),
    ("selector.temperature=0", "selector.temperature=0.0 is invalid: must be > 0"),
    ("selector.temperature=-1", "selector.temperature=-1.0 is invalid: must be > 0"),
])
def test_bad_config_values_name_the_key(compose_cfg, override, fragment):
    cfg = compose_cfg("selector=rebase_trunc", override)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"truncate_ratio": 0.0}, "truncate_ratio"), ({"truncate_ratio": 1.01}, "truncate_ratio"),
    ({"temperature": 0.0}, "temperature"),
])
def test_direct_construction_rejects_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        RebaseTruncSelector(**kwargs)
