"""Qwen2.5-Math-PRM on a tiny random Qwen2 with the PRM head: the model card's computation, by hand.

The checkpoint is written the way the hub one is laid out (``model.*`` backbone weights,
``score.0.*`` / ``score.2.*`` head, ``architectures: [Qwen2ForProcessRewardModel]``)
without using ets code, and the expected scores come from the plain ``Qwen2Model`` plus
the head applied by hand.
"""

import pytest
from hydra.utils import instantiate
from safetensors.torch import save_file

from ets.models import ModelUnavailable
from tests.prms.conftest import (
    QUESTION,
    TINY,
    check_batching,
    path_nodes,
    qwen_card_scores,
    saved_qwen_prm,
    spread,
)

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
CHAT = (
    f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
)
FULL = (
    CHAT + "Step 1: 2 + 3 = 5<extra_0>Step 2: 5 - 1 = 4<extra_0>Step 3: The answer is 4<extra_0><|im_end|>\n"
)
SIDE = CHAT + "Step 1: 2 + 3 = 5<extra_0>Step 2: 5 + 5 = 10<extra_0><|im_end|>\n"


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return saved_qwen_prm(tmp_path_factory.mktemp("qwen_prm"), **TINY)


@pytest.fixture
def make(qwen, compose_cfg):
    cfg = compose_cfg("prm=qwen_math_prm", f"prm.model={qwen[0]}", "prm.device=cpu").prm
    return lambda **kw: instantiate(cfg, **kw)


def test_scores_equal_the_card_computation(qwen, make, problem):
    _, nodes = path_nodes()
    expected, logits, sep = qwen_card_scores(qwen, FULL)
    side, _, _ = qwen_card_scores(qwen, SIDE)
    assert len(expected) == 3 and spread(expected) > 0.05
    prm = make()
    assert prm.render(problem, nodes[2]) == FULL
    got = prm.score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side[-1]], abs=1e-5)
    last = int(sep.nonzero()[-1])
    assert abs(float(logits[last - 1].softmax(-1)[1]) - got[2]) > 1e-3  # position off by one
    assert abs((1 - expected[2]) - got[2]) > 1e-3  # class 0 instead of class 1


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make(), problem, nodes)


def test_missing_head_weights_fail(qwen, tmp_path, make, problem):
    from safetensors.torch import load_file

    weights = {
        k: v for k, v in load_file(str(qwen[0] / "model.safetensors")).items() if not k.startswith("score.")
    }
    save_file(weights, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (qwen[0] / name).exists():
            (tmp_path / name).write_bytes((qwen[0] / name).read_bytes())
    _, nodes = path_nodes()
    with pytest.raises((ValueError, ModelUnavailable), match="score"):
        make(model=str(tmp_path)).score([(problem, nodes[0])])
