"""The ETS reference's Llemma PRM (``prm=llemma_ets``) on a tiny random Llama, by hand.

Reference: ETS ``rebase.py`` scores ``question + "\\n"`` plus the "ки"-ended steps at the
``ки`` token (``logits_require_id=8094``) and keeps the last score; the model card of
``tkitsers/Llemma-reward-model`` gives ``model(text).mean(dim=-1).sigmoid()[index]`` with
``index`` the positions of each step's end token.
"""

import pytest
import torch
from hydra.utils import instantiate

from ets.config import validate
from ets.core.tree import Tree
from ets.prms.llemma import LlemmaPRM
from tests.prms.conftest import QUESTION, check_batching, path_nodes, saved_causal_lm, spread

# question + "\n", then the policy's "Step k: ... ки" steps, one per line
FULL = f"{QUESTION}\nStep 1: 2 + 3 = 5 ки\nStep 2: 5 - 1 = 4 ки\nStep 3: The answer is 4 ки"
SIDE = f"{QUESTION}\nStep 1: 2 + 3 = 5 ки\nStep 2: 5 + 5 = 10 ки"


@pytest.fixture(scope="module")
def llemma(sp_tokenizer, tmp_path_factory):
    return saved_causal_lm("llama", sp_tokenizer[1], tmp_path_factory.mktemp("llemma_ets"), seed=2)


@pytest.fixture
def make(llemma, compose_cfg):
    cfg = compose_cfg("prm=llemma_ets", f"prm.model={llemma[0]}", "prm.device=cpu").prm
    return lambda **kw: instantiate(cfg, **kw)


def card_scores(tok, model, text):
    """Encode with BOS (as the sglang server does), take every position of the ``ки`` id
    (the reference's ``logits_require_id``), score = sigmoid(mean over the vocabulary)."""
    tag = tok.encode("ки", add_special_tokens=False)[-1]
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        logits = model(ids).logits[0]
    return torch.sigmoid(logits.mean(-1))[ids[0] == tag].tolist(), logits, ids[0], tag


def test_preset_composes_with_the_reference_settings(compose_cfg):
    cfg = compose_cfg("prm=llemma_ets")
    validate(cfg)
    prm = cfg.prm
    assert prm._target_ == "ets.prms.llemma.LlemmaPRM"
    assert prm.model == "tkitsers/Llemma-reward-model" and prm.tokenizer is None
    assert (prm.prompt_template, prm.step_tag, prm.step_join) == ("{question}\n", " ки", "\n")
    assert str(prm.score_at.value) == "last"
    obj = instantiate(prm)  # lazy: nothing is loaded until the first score
    assert isinstance(obj, LlemmaPRM) and obj._model is None


def test_scores_equal_the_card_computation(llemma, make, problem):
    _, tok, model = llemma
    assert len(tok.encode(" ки", add_special_tokens=False)) == 1  # one token, as Llama's 8094
    _, nodes = path_nodes()
    expected, logits, ids, tag = card_scores(tok, model, FULL)
    side, _, _, _ = card_scores(tok, model, SIDE)
    assert len(expected) == 3 and spread(expected) > 0.005  # positions are distinguishable
    prm = make()
    assert prm.render(problem, nodes[2])[0] == FULL
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side[-1]], abs=1e-6)
    # the token before the tag, the newline after it, or a softmax would not pass
    last = int((ids == tag).nonzero()[-1])
    assert abs(float(torch.sigmoid(logits[last - 1].mean())) - got[2]) > 1e-4
    second = int((ids == tag).nonzero()[-2])
    assert abs(float(torch.sigmoid(logits[second + 1].mean())) - got[1]) > 1e-4
    assert abs(float(logits[last].softmax(-1).mean()) - got[2]) > 1e-3


def test_policy_steps_that_end_with_the_tag_give_the_same_text_and_scores(make, problem):
    """The Llemma-MetaMath policy stops at "ки": its steps already end with the tag, and
    the next step starts with the newline it writes after it."""
    tree = Tree("prompt", (0,))
    a = tree.add_child(tree.root, "Step 1: 2 + 3 = 5 ки", (1,))
    b = tree.add_child(a, "\nStep 2: 5 - 1 = 4 ки", (2,))
    prm = make()
    assert prm.render(problem, b)[0] == f"{QUESTION}\nStep 1: 2 + 3 = 5 ки\nStep 2: 5 - 1 = 4 ки"
    _, nodes = path_nodes()
    assert prm.score([(problem, a), (problem, b)]) == pytest.approx(
        prm.score([(problem, nodes[0]), (problem, nodes[1])]), abs=1e-6
    )


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make(), problem, nodes)
