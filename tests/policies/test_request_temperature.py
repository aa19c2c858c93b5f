"""A request's own temperature (``GenRequest.temperature`` from ``Expansion.temperature``):
greedy look-ahead steps next to sampled tree steps, on the transformers and synthetic
policies and through the loop."""

from __future__ import annotations

import dataclasses

import pytest

from ets.datasets.synthetic import SyntheticDataset
from ets.models import tiny_llama
from ets.policies.hf import HFPolicy
from ets.policies.synthetic import SyntheticPolicy
from ets.protocols import Expansion
from ets.types import GenRequest, Problem
from tests.core.helpers import ScriptedPolicy, make_search, problems, run_all

PROBLEM = Problem("p1", "What is 12 times 3?", "36")


@pytest.fixture(scope="module")
def sampling_policy(tmp_path_factory):
    tiny = str(tiny_llama(tmp_path_factory.mktemp("tiny") / "llama", hidden=64, layers=2, seed=0))
    return HFPolicy(model=tiny, use_chat_template=False, prompt_template="Question: {question}\nAnswer:",
                    temperature=1.0)


def _req(policy, n, seed, temperature=None, extra=()):
    prompt = policy.format_prompt(PROBLEM)
    return GenRequest(PROBLEM, prompt.text, prompt.token_ids + tuple(extra), n, 12, [], seed, temperature)


def test_hf_greedy_request_in_a_sampled_batch(sampling_policy):
    """A temperature-0 request gives the argmax path (every child the same, and the same
    as a greedy policy's) while the sampled request in the same batch keeps its samples."""
    pol = sampling_policy
    greedy, sampled = pol.generate([_req(pol, 3, 1, temperature=0.0), _req(pol, 3, 2, extra=(300,))])
    assert len({g.token_ids for g in greedy}) == 1
    alone = pol.generate([_req(pol, 3, 2, extra=(300,))])[0]
    assert [g.token_ids for g in sampled] == [g.token_ids for g in alone]
    assert len({g.token_ids for g in sampled}) > 1  # temperature 1 on a random model
    greedy_policy = HFPolicy(model=pol.path, use_chat_template=False,
                             prompt_template="Question: {question}\nAnswer:", temperature=0.0)
    [ref] = greedy_policy.generate([_req(greedy_policy, 1, 99)])
    assert greedy[0].token_ids == ref[0].token_ids


def test_synthetic_greedy_request_gives_one_continuation():
    problem = SyntheticDataset(n=4, seed=0).load()[0]
    pol = SyntheticPolicy(seed=0)
    prompt = pol.format_prompt(problem)
    base = GenRequest(problem, prompt.text, prompt.token_ids, 6, 256, ["\n\n"], 5)
    greedy = pol.generate([dataclasses.replace(base, temperature=0.0)])[0]
    sampled = pol.generate([base])[0]
    assert {g.token_ids for g in greedy} == {sampled[0].token_ids}
    assert len({g.token_ids for g in sampled}) > 1


class GreedyFirst:
    """Root: 2 sampled children and 1 greedy rollout; then done."""

    name = "greedy_first"

    def __init__(self, tree, budget):
        self.tree, self.budget, self.round = tree, budget, 0

    def propose(self):
        self.round += 1
        return [Expansion(self.tree.root, 2), Expansion(self.tree.root, 1, rollout=True, temperature=0.0)]

    def observe(self, results):
        pass

    def done(self):
        return self.round >= 1

    def finalists(self):
        return self.tree.finished()

    def kv_nodes(self):
        return []

    def stats(self):
        return {}


class Factory:
    def __call__(self, problem, tree, rng, budget):
        return GreedyFirst(tree, budget)

    def stats(self):
        return {}


def test_the_loop_passes_the_expansion_temperature():
    policy = ScriptedPolicy(lambda ctx, j, req: (f"step {j}\n\n", 3, "stop"))
    factory = Factory()
    run_all(make_search(policy, factory, scheduler="lockstep"), problems(1))
    assert [r.temperature for r in policy.requests] == [None, 0.0]
