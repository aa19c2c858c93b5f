"""Judge PRM: P(yes) / (P(yes) + P(no)) from the next-token logits, by hand (tiny and real model)."""

import pytest
import torch
from hydra.utils import instantiate
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.prms.conftest import CHATML, QUESTION, byte_level, causal_lm, check_batching, path_nodes, spread

SYSTEM = "You are a careful math teacher. You check one step of a solution at a time."
USER = (
    "Problem:\n{q}\n\nEarlier steps:\n{prev}\n\nNew step:\n{step}\n\n"
    "Is the new step correct? Answer Yes or No."
)


def prompt(prev: str, step: str) -> str:
    """What judge.yaml must produce for SmolLM2's (ChatML) template, written out by hand."""
    user = USER.format(q=QUESTION, prev=prev, step=step)
    return (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
    )


PROMPTS = [
    prompt("(none)", "Step 1: 2 + 3 = 5"),
    prompt("Step 1: 2 + 3 = 5", "Step 2: 5 - 1 = 4"),
    prompt("Step 1: 2 + 3 = 5\n\nStep 2: 5 - 1 = 4", "Step 3: The answer is 4"),
    prompt("Step 1: 2 + 3 = 5", "Step 2: 5 + 5 = 10"),
]


def by_hand(tok, model, text: str) -> float:
    yes = [tok.convert_tokens_to_ids(t) for t in ("Yes", "yes")]
    no = [tok.convert_tokens_to_ids(t) for t in ("No", "no")]
    ids = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        p = model(torch.tensor([ids])).logits[0, -1].softmax(-1)
    return float(p[yes].sum() / (p[yes].sum() + p[no].sum()))


@pytest.fixture(scope="module")
def tiny_judge(tmp_path_factory):
    out = tmp_path_factory.mktemp("judge")
    tok = byte_level(
        out, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, words=("Yes", "yes", "No", "no")
    )
    model = causal_lm("llama", len(tok), out, seed=4)
    return out, AutoTokenizer.from_pretrained(out), model


def test_tiny_judge_equals_hand_computation(tiny_judge, compose_cfg, problem):
    out, tok, model = tiny_judge
    cfg = compose_cfg("prm=judge", f"prm.model={out}", "prm.device=cpu").prm
    _, nodes = path_nodes()
    prm = instantiate(cfg)
    assert [prm.render(problem, n) for n in nodes] == PROMPTS
    expected = [by_hand(tok, model, text) for text in PROMPTS]
    assert spread(expected) > 0.01
    assert prm.score([(problem, n) for n in nodes]) == pytest.approx(expected, abs=1e-5)
    check_batching(prm, problem, nodes)


@pytest.mark.slow
def test_smollm2_judge_equals_hand_computation(compose_cfg, problem):
    from ets.models import ModelUnavailable, smollm2_path

    try:
        path = smollm2_path()
    except ModelUnavailable as exc:
        pytest.skip(str(exc))
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    cfg = compose_cfg("prm=judge", "prm.device=cpu").prm  # the default model: smollm2
    _, nodes = path_nodes()
    prm = instantiate(cfg, batch_size=4)
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([by_hand(tok, model, text) for text in PROMPTS], abs=1e-4)
    assert all(0 < g < 1 for g in got)
    prm.batch_size, prm.padding_side = 1, "left"
    assert [prm.score([(problem, n)])[0] for n in nodes] == pytest.approx(got, abs=1e-4)
