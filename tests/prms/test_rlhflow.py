"""RLHFlow PRM on a tiny random Llama with a Llama-3-style chat template: the reference, by hand."""

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoTokenizer

from tests.prms.conftest import LLAMA3, QUESTION, byte_level, causal_lm, check_batching, path_nodes, spread

SPECIALS = ["<|end_of_text|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
STEP_TEXTS = ["Step 1: 2 + 3 = 5", "Step 2: 5 - 1 = 4", "Step 3: The answer is 4"]
TURN = "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"


@pytest.fixture(scope="module")
def rlhflow(tmp_path_factory):
    out = tmp_path_factory.mktemp("rlhflow")
    tok = byte_level(out, SPECIALS, LLAMA3, bos="<|begin_of_text|>")
    model = causal_lm("llama", len(tok), out, seed=3)
    return out, AutoTokenizer.from_pretrained(out), model


@pytest.fixture
def make(rlhflow, compose_cfg):
    cfg = compose_cfg("prm=rlhflow", f"prm.model={rlhflow[0]}", "prm.device=cpu").prm
    return lambda **kw: instantiate(cfg, **kw)


def reference_score(tok, model, question, steps):
    """prm_evaluate.py: user turns (question + " " + step 1, then each step), each answered "+";
    apply_chat_template; logits at position -3; softmax over [+, -]; P(+)."""
    plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
    conversation = []
    for k, step in enumerate(steps):
        conversation.append({"content": question + " " + step if k == 0 else step, "role": "user"})
        conversation.append({"content": "+", "role": "assistant"})
    ids = tok.apply_chat_template(conversation, tokenize=True, return_dict=False)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    return float(logits[-3, [plus, minus]].softmax(-1)[0]), logits


def test_scores_equal_the_reference_computation(rlhflow, make, problem):
    _, tok, model = rlhflow
    _, nodes = path_nodes()
    expected = [reference_score(tok, model, QUESTION, STEP_TEXTS[: k + 1])[0] for k in range(3)]
    side, logits = reference_score(tok, model, QUESTION, [STEP_TEXTS[0], "Step 2: 5 + 5 = 10"])
    assert spread(expected) > 0.05
    prm = make()
    turns = [
        TURN.format(role="user", content=f"{QUESTION} {STEP_TEXTS[0]}"),
        TURN.format(role="assistant", content="+"),
        TURN.format(role="user", content=STEP_TEXTS[1]),
        TURN.format(role="assistant", content="+"),
    ]
    assert prm.render(problem, nodes[1]) == "<|begin_of_text|>" + "".join(turns)
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side], abs=1e-5)
    plus, minus = tok.encode("+")[-1], tok.encode("-")[-1]
    at_plus = float(logits[-2, [plus, minus]].softmax(-1)[0])  # at the "+" itself, not before it
    assert abs(at_plus - got[3]) > 1e-3
    assert abs((1 - side) - got[3]) > 1e-3


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make(), problem, nodes)
