"""Shared PRM machinery: hub models fail fast offline, bad settings fail clearly."""

import time

import pytest
from hydra.utils import instantiate

from ets.models import ModelUnavailable
from ets.prms.hf_base import pair_probability, token_id
from ets.prms.tagged import tagged_steps
from tests.prms.conftest import path_nodes

HUB = {
    "math_shepherd": "peiyi9979/math-shepherd-mistral-7b-prm",
    "llemma": "ScalableMath/llemma-7b-prm-prm800k-level-1to3-hf",
    "qwen_math_prm": "Qwen/Qwen2.5-Math-PRM-7B",
    "rlhflow": "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data",
}


@pytest.mark.parametrize("name", sorted(HUB))
def test_hub_prm_builds_lazily_and_fails_fast_offline(compose_cfg, problem, name):
    prm = instantiate(compose_cfg(f"prm={name}").prm)  # nothing is loaded yet
    _, nodes = path_nodes()
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable) as err:
        prm.score([(problem, nodes[0])])
    assert time.perf_counter() - start < 10
    message = str(err.value)
    assert HUB[name] in message and "prm.model" in message and "/path/to/folder" in message


def test_missing_folder_is_named(compose_cfg, problem, tmp_path):
    prm = instantiate(compose_cfg("prm=math_shepherd", f"prm.model={tmp_path}/nope").prm)
    _, nodes = path_nodes()
    with pytest.raises(ModelUnavailable, match="no such folder"):
        prm.score([(problem, nodes[0])])


def test_bad_settings_fail_at_construction(compose_cfg):
    with pytest.raises(ValueError, match="padding_side"):
        instantiate(compose_cfg("prm=rlhflow").prm, padding_side="middle")
    with pytest.raises(ValueError, match="dtype"):
        instantiate(compose_cfg("prm=rlhflow").prm, dtype="float8")
    with pytest.raises(ValueError, match="score_at"):
        instantiate(compose_cfg("prm=llemma").prm, score_at="middle")


def test_helpers(sp_tokenizer):
    tok = sp_tokenizer[1]
    assert tagged_steps(["a", "b"], " ки", "\n") == ("a ки\nb ки", 6)
    with pytest.raises(ValueError, match="exactly one token"):
        token_id(tok, "Step 1", "good_token")
    import torch

    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert float(pair_probability(logits, [1], [2])) == pytest.approx(1 / (1 + torch.e))
    assert float(pair_probability(logits, [0, 1], [2])) == pytest.approx(
        (1 + torch.e) / (1 + torch.e + torch.e**2)
    )
