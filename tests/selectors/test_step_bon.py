"""Step-level best-of-N: the argmax per step (first on ties), W trajectories, the root's
one request split in W groups, the node budget, the config."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.core.tree import Tree
from ets.selectors.step_bon import StepBoNStrategies, argmax_first
from tests.core.helpers import Keep, ScriptedPolicy, ScriptedPRM, make_search, problems, run_all

PROMPT = "Q: question 0\n"
# Step names are their path: child j of step x is x + str(j). Depth-2 steps answer.
SCORES = {"0": .2, "1": .9, "2": .5, "3": .7, "4": .7, "5": .1,
          "10": .3, "11": .8, "12": .8, "30": .1, "31": .2, "32": .6}


def last_name(text: str) -> str:
    steps = text[len(PROMPT):].split("\n\n")
    return steps[-2].split()[0] if len(steps) > 1 else ""


def script(context: str, j: int, req):
    name = last_name(context) + str(j)
    body = f"{name}\nThe answer is {name}." if len(name) == 2 else name
    return f"{body}\n\n", 5, "stop"


def run(width: int, c: int = 3, **kw):
    policy, factory = ScriptedPolicy(script), Keep(StepBoNStrategies(c))
    prm = ScriptedPRM(lambda path: SCORES.get(last_name(PROMPT + path), 0.0))
    search = make_search(policy, factory, prm=prm, width=width, **kw)
    rows = run_all(search, problems(1))
    return factory.made[0], rows[0], policy, search


def name(node) -> str:
    return node.text.split()[0]


def test_two_trajectories_keep_their_argmax_per_step():
    s, rec, policy, search = run(width=2)
    # round 1: one request for the root, n = W * c = 6, split [0 1 2] | [3 4 5]:
    # trajectory 0 keeps "1" (.9), trajectory 1 keeps "3" (.7, tied with "4": the first)
    # round 2: "1" -> 10 11 12 keeps "11" (.8 tied with "12"); "3" -> 30 31 32 keeps "32"
    assert [(last_name(r.context_text), r.n) for r in policy.requests] == [("", 6), ("1", 3), ("3", 3)]
    assert policy.calls == 2
    assert [name(n) for n in s.finalists()] == ["11", "32"]
    assert len(s.tree.finished()) == 6  # pruned finished siblings stay in the tree ...
    assert sum(v["count"] for v in rec["votes"]) == 2  # ... but only W trajectories vote
    assert rec["predictions"]["majority"] in {"11", "32"}
    assert rec["strategy"] == {"steps": 2.0, "cut": 0.0}
    assert search.budget.max_nodes == 2 * 3 * search.max_depth  # the factory's node_budget


def test_one_trajectory_is_the_reference():
    s, _, policy, _ = run(width=1)
    assert [(last_name(r.context_text), r.n) for r in policy.requests] == [("", 3), ("1", 3)]
    assert [name(n) for n in s.finalists()] == ["11"]


def test_an_explicit_node_budget_cuts_trajectories():
    s, _, _, _ = run(width=2, max_nodes=6)  # round 1 fits (6 nodes), round 2 does not
    assert [name(n) for n in s.kv_nodes()] == []  # both cut: nothing kept alive
    assert s.stats()["cut"] == 2 and s.finalists() == []
    assert [name(h) for h in s.heads] == ["1", "3"]


def test_argmax_first_on_ties_and_unscored():
    t = Tree("p", (1,))
    a, b, c = (t.add_child(t.root, x, (2,)) for x in "abc")
    a.score, b.score, c.score = 0.5, 0.7, 0.7
    assert argmax_first([a, b, c]) is b
    b.score = None
    assert argmax_first([a, b, c]) is c
    a.score = c.score = None
    assert argmax_first([a, b, c]) is a


def test_config_defaults_and_instantiation(compose_cfg):
    cfg = compose_cfg("selector=step_bon")
    validate(cfg)
    f = instantiate(cfg.selector)
    assert isinstance(f, StepBoNStrategies) and f.candidates_per_step == 8


def test_bad_config_value_names_the_key(compose_cfg):
    cfg = compose_cfg("selector=step_bon", "selector.candidates_per_step=0")
    with pytest.raises(ConfigError, match=r"selector\.candidates_per_step=0 is invalid: must be >= 1"):
        validate(cfg)
    with pytest.raises(ValueError, match="candidates_per_step"):
        StepBoNStrategies(0)
