"""The transformers policy on a tiny random Llama with the SmolLM2 tokenizer."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ets.models import ModelUnavailable, tiny_llama
from ets.policies.hf import HFPolicy
from ets.types import GenRequest, Problem
from tests.conftest import ROOT, SHARED_DATA

PROBLEM = Problem("p1", "What is 12 times 3?", "36")
HUB_PRESETS = {"llemma_34b": "tkitsers/Llemma-metamath-34b", "mistral_7b_sft": "peiyi9979/mistral-7b-sft",
               "llama32_1b": "meta-llama/Llama-3.2-1B-Instruct",
               "qwen25_math_1p5b": "Qwen/Qwen2.5-Math-1.5B-Instruct"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", hidden=64, layers=2, seed=0))


@pytest.fixture(scope="module")
def policy(tiny):
    return HFPolicy(model=tiny, use_chat_template=False, prompt_template="Question: {question}\nAnswer:")


def request(policy, n=2, max_tokens=16, stop=("\n\n",), seed=0, extra=()):
    prompt = policy.format_prompt(PROBLEM)
    ids = prompt.token_ids + tuple(extra)
    return GenRequest(PROBLEM, prompt.text, ids, n, max_tokens, list(stop), seed)


def test_each_request_gets_its_own_count(policy):
    reqs = [request(policy, n=3, seed=1), request(policy, n=1, seed=2, extra=(300, 400, 500)),
            request(policy, n=2, seed=3, extra=(600,))]
    out = policy.generate(reqs)
    assert [len(o) for o in out] == [3, 1, 2]
    assert all(0 < len(g.token_ids) <= 16 for o in out for g in o)


def test_output_stops_right_after_the_stop_string(policy):
    """A frequent stop string ("e" ends up inside many tokens): the step ends at the
    token that completes its first occurrence, and the text is exactly those tokens."""
    tok = policy.tokenizer
    [gens] = policy.generate([request(policy, n=12, max_tokens=40, stop=["e"], seed=5)])
    stopped = [g for g in gens if g.finish_reason == "stop"]
    assert len(stopped) >= 6
    for g in stopped:
        assert "e" in g.text and "e" not in tok.decode(list(g.token_ids[:-1]), skip_special_tokens=True)
    for g in gens:
        assert g.text == tok.decode(list(g.token_ids), skip_special_tokens=True)
        assert g.finish_reason in {"stop", "length"}


def test_stop_string_is_kept_at_the_end_of_the_text(policy, monkeypatch):
    """Stop on whole tokens: the text ends with the stop string itself."""
    tok = policy.tokenizer
    [[probe]] = policy.generate([request(policy, n=1, max_tokens=8, seed=11)])
    word = tok.decode([probe.token_ids[3]])  # the 4th token this seed produces
    [[g]] = policy.generate([request(policy, n=1, max_tokens=8, stop=[word], seed=11)])
    assert g.finish_reason == "stop" and g.text.endswith(word)
    assert g.token_ids == probe.token_ids[:len(g.token_ids)] and len(g.token_ids) <= 4


def test_token_counts_match_the_tokenizer(policy):
    tok = policy.tokenizer
    out = policy.generate([request(policy, n=4, max_tokens=12, stop=["e"], seed=9)])
    for g in out[0]:
        assert all(0 <= t < len(tok) for t in g.token_ids)
        assert len(tok.convert_ids_to_tokens(list(g.token_ids))) == len(g.token_ids) <= 12


def test_max_tokens_ends_with_length_and_exactly_that_many_tokens(policy):
    out = policy.generate([request(policy, n=3, max_tokens=7, stop=[], seed=4),
                           request(policy, n=2, max_tokens=3, stop=[], seed=4, extra=(42,))])
    assert [(g.finish_reason, len(g.token_ids)) for g in out[0]] == [("length", 7)] * 3
    assert [(g.finish_reason, len(g.token_ids)) for g in out[1]] == [("length", 3)] * 2


def test_eos_token_ends_the_step(policy, monkeypatch):
    [[probe]] = policy.generate([request(policy, n=1, max_tokens=10, stop=[], seed=21)])
    eos = probe.token_ids[4]
    first = probe.token_ids.index(eos)
    monkeypatch.setattr(policy, "eos_ids", {eos})
    [[g]] = policy.generate([request(policy, n=1, max_tokens=10, stop=[], seed=21)])
    assert g.finish_reason == "eos" and g.token_ids == probe.token_ids[:first + 1]


def test_logprob_is_the_teacher_forced_sum_for_a_greedy_child(tiny):
    greedy = HFPolicy(model=tiny, use_chat_template=False, temperature=0.0)
    short = request(greedy, n=1, max_tokens=10, stop=[])
    longer = request(greedy, n=2, max_tokens=10, stop=[], extra=(101, 202, 303, 404, 505))
    [[g], _] = greedy.generate([short, longer])  # the short context is left-padded
    ids = torch.tensor([list(short.context_ids) + list(g.token_ids)])
    with torch.inference_mode():
        logits = greedy.model(ids).logits[0].double()
    start = len(short.context_ids)
    logp = torch.log_softmax(logits[start - 1:-1], dim=-1)
    chosen = torch.tensor(g.token_ids)
    assert torch.equal(logp.argmax(-1), chosen)  # greedy really took the argmax
    assert g.logprob == pytest.approx(float(logp.gather(1, chosen[:, None]).sum()), abs=1e-3)
    assert g.logprob < 0


def test_same_seed_same_outputs_whatever_the_batch(tiny):
    pol = HFPolicy(model=tiny, use_chat_template=False, batch_size=3)
    alone = pol.generate([request(pol, n=2, max_tokens=12, stop=["e"], seed=7)])[0]
    crowd = pol.generate([request(pol, n=3, max_tokens=9, stop=[], seed=1, extra=(7, 8, 9, 10)),
                          request(pol, n=2, max_tokens=12, stop=["e"], seed=7)])[1]
    again = pol.generate([request(pol, n=2, max_tokens=12, stop=["e"], seed=7)])[0]
    other = pol.generate([request(pol, n=2, max_tokens=12, stop=["e"], seed=8)])[0]
    key = [(g.token_ids, g.finish_reason, round(g.logprob, 4)) for g in alone]
    assert key == [(g.token_ids, g.finish_reason, round(g.logprob, 4)) for g in again]
    assert [g.token_ids for g in crowd] == [g.token_ids for g in alone]
    assert [g.token_ids for g in other] != [g.token_ids for g in alone]
    assert alone[0].token_ids != alone[1].token_ids  # children of one request differ


def test_chat_and_plain_prompts(tiny):
    chat = HFPolicy(model=tiny, use_chat_template=True, system_prompt="Be brief. Use \\boxed{}.")
    p = chat.format_prompt(PROBLEM)
    assert p.text == ("<|im_start|>system\nBe brief. Use \\boxed{}.<|im_end|>\n<|im_start|>user\n"
                      "What is 12 times 3?<|im_end|>\n<|im_start|>assistant\n")
    assert list(p.token_ids) == chat.tokenizer(p.text, add_special_tokens=False).input_ids
    plain = HFPolicy(model=tiny, use_chat_template=False, prompt_template="Q: {question}\nPut it in \\boxed{}.\n")
    assert plain.format_prompt(PROBLEM).text == "Q: What is 12 times 3?\nPut it in \\boxed{}.\n"


@pytest.mark.parametrize("preset", sorted(HUB_PRESETS))
def test_hub_presets_fail_fast_offline_naming_the_model(compose_cfg, monkeypatch, preset):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_cfg(f"policy={preset}")
    start = time.perf_counter()
    with pytest.raises(InstantiationException) as err:
        instantiate(cfg.policy)
    assert isinstance(err.value.__cause__, ModelUnavailable)
    assert HUB_PRESETS[preset] in str(err.value) and "policy.model=/path/to/folder" in str(err.value)
    assert time.perf_counter() - start < 5


def test_paper_experiment_stops_at_once_without_the_hub(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ets", "+experiment=math500", f"dataset.path={SHARED_DATA / 'math500.jsonl'}",
         f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode != 0
    assert "tkitsers/Llemma-metamath-34b" in proc.stderr
    assert not (tmp_path / "problems.jsonl").exists()


def test_context_of_the_model_ends_paths_with_reason_context(tmp_path, caplog):
    """A tiny Llama whose context is 48 tokens: a request with no room left returns empty
    children with reason ``context``, one with a little room stops there with ``context``;
    the start-up check names the problems that cannot fit and both limits."""
    import json

    from ets.rundir.preflight import check_context

    path = tiny_llama(tmp_path / "short", hidden=64, layers=2, seed=0)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 48}))
    pol = HFPolicy(model=str(path), use_chat_template=False, prompt_template="Question: {question}\nAnswer:")
    assert pol.context_limit() == (48, "the model's max_position_embeddings")
    base = request(pol, n=2, max_tokens=12, stop=())
    full = request(pol, n=2, max_tokens=12, stop=(), extra=(42,) * (48 - len(base.context_ids)))
    nearly = request(pol, n=3, max_tokens=12, stop=(), seed=5, extra=(42,) * (45 - len(base.context_ids)))
    out_full, out_nearly, out_base = pol.generate([full, nearly, base])
    assert [(g.text, g.token_ids, g.finish_reason) for g in out_full] == [("", (), "context")] * 2
    assert all(len(g.token_ids) <= 3 and g.finish_reason in {"context", "eos"} for g in out_nearly)
    assert any(g.finish_reason == "context" and len(g.token_ids) == 3 for g in out_nearly)
    assert all(g.finish_reason in {"length", "eos"} for g in out_base)

    long = Problem("long", "What is " + "one plus " * 30 + "one?", "31")
    with caplog.at_level("WARNING", logger="ets.rundir.preflight"):
        report = check_context(pol, [PROBLEM, long], max_tokens=40)
    short_n = len(pol.format_prompt(PROBLEM).token_ids)
    assert report is not None and [pid for pid, _ in report.overflow] == ["p1", "long"]
    assert [pid for pid, _ in report.no_room] == ["long"] and short_n + 40 > 48
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "search.max_tokens=40" in text and "model context of 48 tokens" in text
    assert "long (" in text and "alone fill the model context" in text
    assert check_context(pol, [PROBLEM], max_tokens=48 - short_n).overflow == []
