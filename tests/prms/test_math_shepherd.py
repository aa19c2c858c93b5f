"""Math-Shepherd PRM on a tiny random Mistral: the model card's computation, by hand."""

import pytest
import torch
from hydra.utils import instantiate

from tests.prms.conftest import QUESTION, check_batching, path_nodes, saved_causal_lm, spread

# The model card's input for our three steps: f"{question} {output}", steps " ки"-tagged, "\n"-joined.
FULL = f"{QUESTION} Step 1: 2 + 3 = 5 ки\nStep 2: 5 - 1 = 4 ки\nStep 3: The answer is 4 ки"
SIDE = f"{QUESTION} Step 1: 2 + 3 = 5 ки\nStep 2: 5 + 5 = 10 ки"


@pytest.fixture(scope="module")
def shepherd(sp_tokenizer, tmp_path_factory):
    return saved_causal_lm("mistral", sp_tokenizer[1], tmp_path_factory.mktemp("shepherd"))


@pytest.fixture
def make(shepherd, compose_cfg):
    """The YAML option (its model quirks) pointed at the tiny model; kwargs override keys."""
    cfg = compose_cfg("prm=math_shepherd", f"prm.model={shepherd[0]}", "prm.device=cpu").prm
    return lambda **kw: instantiate(cfg, **kw)


def card_scores(tok, model, text):
    """The model card: encode (with BOS), logits at every ``ки`` id, softmax over [+, -], P(+)."""
    good, bad = tok.encode("+ -", add_special_tokens=False)  # card: encode("+ -")[1:], BOS dropped
    tag = tok.encode("ки", add_special_tokens=False)[-1]
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(ids).logits[0]
    at_tags = logits[ids[0] == tag]
    return at_tags[:, [good, bad]].softmax(-1)[:, 0].tolist(), logits, ids[0], tag


def test_scores_equal_the_card_computation(shepherd, make, problem):
    _, tok, model = shepherd
    _, nodes = path_nodes()
    expected, logits, ids, tag = card_scores(tok, model, FULL)
    side, _, _, _ = card_scores(tok, model, SIDE)
    assert len(expected) == 3 and spread(expected) > 0.05  # positions are distinguishable
    prm = make()
    assert prm.render(problem, nodes[2])[0] == FULL
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side[-1]], abs=1e-5)
    # a position off by one, or P(-) instead of P(+), would not pass
    last = int((ids == tag).nonzero()[-1])
    good, bad = tok.encode("+ -", add_special_tokens=False)
    assert abs(float(logits[last - 1, [good, bad]].softmax(-1)[0]) - got[2]) > 1e-3
    assert abs((1 - expected[2]) - got[2]) > 1e-3


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make(), problem, nodes)


def test_steps_that_end_with_the_tag_are_not_tagged_twice(make, problem):
    """A MetaMath-format policy stops at "ки", so its step texts already end with the tag."""
    from ets.core.tree import Tree

    tree = Tree("prompt", (0,))
    a = tree.add_child(tree.root, "Step 1: 2 + 3 = 5 ки", (1,))
    b = tree.add_child(a, "\nStep 2: 5 - 1 = 4 ки", (2,))
    prm = make()
    assert prm.render(problem, b)[0] == f"{QUESTION} Step 1: 2 + 3 = 5 ки\nStep 2: 5 - 1 = 4 ки"
    _, nodes = path_nodes()
    assert prm.score([(problem, b)]) == pytest.approx(prm.score([(problem, nodes[1])]), abs=1e-6)
