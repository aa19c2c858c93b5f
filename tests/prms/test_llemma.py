"""Llemma PRM on a tiny random Llama: the Easy-to-Hard reference computation, by hand."""

import pytest
import torch
from hydra.utils import instantiate

from tests.prms.conftest import QUESTION, check_batching, path_nodes, saved_causal_lm, spread

FULL = (
    f"# Question\n\n{QUESTION}\n\n# Solution\n\n"
    "Step 1: 2 + 3 = 5\n\nStep 2: 5 - 1 = 4\n\nStep 3: The answer is 4\n\n"
)
SIDE = f"# Question\n\n{QUESTION}\n\n# Solution\n\nStep 1: 2 + 3 = 5\n\nStep 2: 5 + 5 = 10\n\n"


@pytest.fixture(scope="module")
def llemma(sp_tokenizer, tmp_path_factory):
    return saved_causal_lm("llama", sp_tokenizer[1], tmp_path_factory.mktemp("llemma"), seed=1)


@pytest.fixture
def make(llemma, compose_cfg):
    cfg = compose_cfg("prm=llemma", f"prm.model={llemma[0]}", "prm.tokenizer=null", "prm.device=cpu").prm
    return lambda **kw: instantiate(cfg, **kw)


def reference_scores(tok, model, text):
    """The transformers port of the reference: positions of the "\\n\\n" token pairs after
    "# Solution" (first one dropped), score = sigmoid(mean over the vocabulary of the logits)."""
    begin = tok.encode("# Solution", add_special_tokens=False)[1:]
    newlines = tok.encode("\n\n", add_special_tokens=False)[1:]
    ids = tok.encode(text)
    positions, started = [], False
    for i in range(len(ids)):
        started = started or ids[i : i + len(begin)] == begin
        if started and ids[i : i + len(newlines)] == newlines:
            positions.append(i)
    del positions[0]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return torch.sigmoid(logits.mean(-1))[positions].tolist(), logits, positions


def test_scores_equal_the_reference_computation(llemma, make, problem):
    _, tok, model = llemma
    assert len(tok.encode("\n\n", add_special_tokens=False)[1:]) == 2  # two newline tokens, as Llama's 13, 13
    _, nodes = path_nodes()
    expected, logits, positions = reference_scores(tok, model, FULL)
    side, _, _ = reference_scores(tok, model, SIDE)
    assert len(expected) == 3 and spread(expected) > 0.005
    prm = make()
    assert prm.render(problem, nodes[2])[0] == FULL
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side[-1]], abs=1e-6)
    # the second newline of the tag, or a softmax instead of the mean logit, would not pass
    second = float(torch.sigmoid(logits[positions[-1] + 1].mean()))
    assert abs(second - got[2]) > 1e-4
    assert abs(float(logits[positions[-1]].softmax(-1).mean()) - got[2]) > 1e-3


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make(), problem, nodes)
