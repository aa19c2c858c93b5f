"""Skywork-o1-Open-PRM on a tiny random Qwen2 with a value head, laid out as the checkpoint
(trl wrapper: ``model.*``, ``lm_head.*``, ``v_head.summary.*``): search-and-learn's scoring by hand."""

import pytest
import torch
from hydra.utils import instantiate
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

from tests.prms.conftest import CHATML, QUESTION, STEPS, TINY, byte_level, check_batching, path_nodes, spread


@pytest.fixture(scope="module")
def skywork(tmp_path_factory):
    out = tmp_path_factory.mktemp("skywork")
    tok = byte_level(out, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML)
    tok.bos_token = "<|endoftext|>"  # a BOS string, but encode() adds none (as Qwen's)
    tok.save_pretrained(out)
    torch.manual_seed(5)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tok), tie_word_embeddings=False, **TINY)).eval()
    model.save_pretrained(out)
    head = {"v_head.summary.weight": torch.randn(1, TINY["hidden_size"]) * 0.5,
            "v_head.summary.bias": torch.tensor([0.1])}
    weights = load_file(str(out / "model.safetensors")) | head
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out, AutoTokenizer.from_pretrained(out), model, head


def reference_rewards(tok, model, head, question, response):
    """search-and-learn: prepare_input(question, response, step_token="\\n"), forward with
    return_probs=True (sigmoid of the value head on the last hidden state), derive_step_rewards."""
    ids = tok.encode(tok.bos_token + question + "\n")
    flags = [0] * len(ids)
    nl = tok.encode("\n")[-1]
    for piece in response.split("\n"):
        piece_ids = (tok.encode(piece) if piece != "" else []) + [nl]
        ids += piece_ids
        flags += [0] * (len(piece_ids) - 1) + [1]
    with torch.no_grad():
        hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0]
    values = torch.sigmoid(hidden @ head["v_head.summary.weight"].T + head["v_head.summary.bias"])[:, 0]
    return [float(values[i]) for i, f in enumerate(flags) if f]


@pytest.fixture
def make(skywork, compose_cfg):
    def build(size="1p5b", **kw):
        cfg = compose_cfg(f"prm=skywork_{size}", f"prm.model={skywork[0]}", "prm.device=cpu").prm
        return instantiate(cfg, **kw)
    return build


def test_presets_name_the_hub_models(compose_cfg):
    for size, hub in (("1p5b", "1.5B"), ("7b", "7B")):
        cfg = compose_cfg(f"prm=skywork_{size}").prm
        assert cfg.model == f"Skywork/Skywork-o1-Open-PRM-Qwen-2.5-{hub}" and cfg.step_token == "\n"


def test_scores_equal_the_reference_computation(skywork, make, problem):
    _, tok, model, head = skywork
    _, nodes = path_nodes()
    full = reference_rewards(tok, model, head, QUESTION, "".join(STEPS))
    expected = [reference_rewards(tok, model, head, QUESTION, "".join(STEPS[: k + 1]))[-1] for k in range(3)]
    side = reference_rewards(tok, model, head, QUESTION, STEPS[0] + "Step 2: 5 + 5 = 10\n\n")[-1]
    assert spread(expected + [side]) > 0.05
    got = make().score([(problem, n) for n in nodes])
    assert got == pytest.approx([*expected, side], abs=1e-5)
    assert got[2] == pytest.approx(full[-1], abs=1e-5)
    # "\n\n" gives a flag after each newline: the last step's score is the last flag's, not
    # the one right after its text
    assert abs(full[-3] - got[2]) > 1e-3


def test_missing_value_head_is_refused(skywork, make, problem, tmp_path):
    out = skywork[0]
    for f in out.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("v_head.")},
              str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    _, nodes = path_nodes()
    prm = make(model=str(tmp_path))
    with pytest.raises(ValueError, match="v_head"):
        prm.score([(problem, nodes[0])])


def test_batching_and_padding_do_not_change_scores(make, problem):
    _, nodes = path_nodes()
    check_batching(make("7b"), problem, nodes)
