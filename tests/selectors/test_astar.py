"""A*-decoding: hand-computed expansion order and f values on a scripted tree, the stop
rules, every budget, the open-list cap, ``push=best``, batched rounds, the config."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.selectors.astar import AStarStrategies
from tests.core.helpers import Keep, ScriptedPolicy, ScriptedPRM, make_search, problems, run_all

PROMPT = "Q: question 0\n"
# Every step is named by its path ("a", "ab", ...): the k=2 children of step x are
# x+"a" and x+"b". Scores are fixed by the step's name; steps in FINAL end with an answer.
SCORES = {"a": 0.6, "b": 0.5, "aa": 0.7, "ab": 0.2, "ba": 0.9, "bb": 0.4,
          "baa": 0.8, "bab": 0.3, "aaa": 0.95, "aab": 0.1}
FINAL = {"baa", "aaa"}
STEP_TOKENS = 10


def last_name(text: str) -> str:
    steps = text[len(PROMPT):].split("\n\n")
    return steps[-2].split()[0] if len(steps) > 1 else ""


def script(context: str, j: int, req):
    name = last_name(context) + "ab"[j]
    body = f"{name}\nThe answer is 7." if name in FINAL else name
    return f"{body}\n\n", STEP_TOKENS, "stop"


def prm() -> ScriptedPRM:
    return ScriptedPRM(lambda path: SCORES.get(last_name(PROMPT + path), 0.0))


def run(width: int = 1, max_nodes: int | None = None, **kw):
    kw.setdefault("cost", "accumulated")  # the hand-computed f values below
    policy, factory = ScriptedPolicy(script), Keep(AStarStrategies(k=2, **kw))
    extra = {"max_nodes": max_nodes} if max_nodes else {}
    search = make_search(policy, factory, prm=prm(), width=width, **extra)
    rows = run_all(search, problems(1))
    order = [last_name(r.context_text) or "root" for r in policy.requests]
    return factory.made[0], rows[0], order, policy


def name(node) -> str:
    return node.text.split()[0]


def test_expansion_order_f_values_and_first_solution():
    # f = g + h, g = sum of (1 - score) of the steps before the node, h = 1 - score:
    # a .4, b .5 | pop a: aa .4+.3=.7, ab .4+.8=1.2 | pop b: ba .5+.1=.6, bb .5+.6=1.1
    # | pop ba: baa .6+.2=.8 (final), bab .6+.7=1.3 | pop aa: aaa .7+.05=.75 (final),
    # aab .7+.9=1.6 | pop aaa: the first solution (stop=first).
    s, rec, order, _ = run(stop="first", cost="accumulated")
    assert order == ["root", "a", "b", "ba", "aa"]
    want = {"a": .4, "b": .5, "aa": .7, "ab": 1.2, "ba": .6, "bb": 1.1, "baa": .8,
            "bab": 1.3, "aaa": .75, "aab": 1.6}
    got = {name(n): s.f[n.id] for n in s.tree.nodes[1:]}
    assert got == pytest.approx(want)
    assert [name(n) for n in s.finalists()] == ["aaa"]
    assert rec["strategy"]["expansions"] == 5 and rec["strategy"]["prm_calls"] == 10
    assert rec["strategy"]["solutions"] == 1 and rec["predictions"]["majority"] == "7"
    # the open list left behind, in pop order; its unfinished nodes are the KV nodes
    assert [name(n) for n in s.open_nodes()] == ["baa", "bb", "ab", "bab", "aab"]
    assert sorted(name(n) for n in s.kv_nodes()) == ["aab", "ab", "bab", "bb"]


def test_stop_width_pops_w_solutions():
    s, rec, order, _ = run(width=2, stop="width")
    assert order == ["root", "a", "b", "ba", "aa"]  # baa (.8) is popped right after aaa
    assert [name(n) for n in s.finalists()] == ["aaa", "baa"]
    assert s.stop_reason == "solved"


def test_zero_cost_is_greedy_best_first():
    # f = h: a .4 < b .5; aa .3 < b; aaa .05 is popped as the solution
    s, _, order, _ = run(cost="zero", stop="first")
    assert order == ["root", "a", "aa"]
    assert [name(n) for n in s.finalists()] == ["aaa"]


def test_depth_cost_and_tie_break():
    # cost=depth, step_cost=0.1: f(a) = .1+.4 = .5, f(b) with b scored .6 ties a -> a
    # first (pushed first, same depth); then f(aa) = .2+.3 = .5 ties f(b) = .5:
    # fifo pops b (pushed earlier), deeper pops aa.
    global SCORES
    saved = dict(SCORES)
    SCORES.update({"b": 0.6})
    try:
        _, _, fifo, _ = run(cost="depth", step_cost=0.1, tie_break="fifo", stop="first")
        _, _, deeper, _ = run(cost="depth", step_cost=0.1, tie_break="deeper", stop="first")
    finally:
        SCORES.clear()
        SCORES.update(saved)
    assert fifo[:3] == ["root", "a", "b"]
    assert deeper[:3] == ["root", "a", "aa"]


def test_prm_call_budget_is_exact():
    s, rec, order, _ = run(max_prm_calls=7)  # k=2: 3 expansions fit (6), a 4th would be 8
    assert order == ["root", "a", "b"]
    assert s.prm_calls == 6 == len(s.tree.nodes) - 1
    assert s.stop_reason == "budget" and rec["strategy"]["budget_stop"] == 1
    assert s.finalists() == []  # nothing finished at all: no answer


def test_expansion_budget_and_fallback_vote():
    s, rec, order, _ = run(max_expansions=4, stop="first")
    assert order == ["root", "a", "b", "ba"]
    # aa (.7) is on top of baa (.8): A* may not pop baa, so no solution was popped;
    # the vote falls back to the finished nodes of the tree
    assert s.solutions == [] and [name(n) for n in s.finalists()] == ["baa"]
    assert rec["strategy"]["fallback"] == 1 and rec["predictions"]["majority"] == "7"


def test_token_budget_overshoots_by_at_most_one_round():
    s, _, order, _ = run(max_total_tokens=45)  # 20 tokens per expansion: 0, 20, 40 < 45
    assert order == ["root", "a", "b"]
    assert s.tokens == 60 <= 45 + 2 * STEP_TOKENS


def test_loop_node_budget_is_kept():
    s, _, order, _ = run(max_nodes=5)  # k=2: root and a fit (4 nodes), b would be 6
    assert order == ["root", "a"] and len(s.tree.nodes) - 1 == 4
    assert s.stop_reason == "budget"


def test_open_list_cap_drops_the_worst():
    s, rec, order, _ = run(open_max=2, stop="first")
    # after a: [b .5, aa .7, ab 1.2] -> ab dropped; after b: [ba .6, aa .7, bb 1.1] -> bb
    assert "ab" not in [name(n) for n in s.open_nodes()]
    assert order == ["root", "a", "b", "ba", "aa"]
    assert rec["strategy"]["dropped"] >= 2 and len(s.open_nodes()) <= 2


def test_push_best_keeps_only_argmin_f_child():
    s, _, order, _ = run(push="best", stop="first")
    assert order == ["root", "a", "aa"]  # b is never pushed
    assert [name(n) for n in s.finalists()] == ["aaa"]


def test_expand_per_round_batches_the_top_nodes():
    s, _, order, policy = run(width=2, expand_per_round=2)
    assert policy.calls == 3  # root | a, b | ba, aa
    assert order == ["root", "a", "b", "ba", "aa"]
    assert [name(n) for n in s.finalists()] == ["aaa", "baa"]


def test_config_defaults_and_instantiation(compose_cfg):
    cfg = compose_cfg("selector=astar", "selector.k=3", "selector.max_prm_calls=30")
    validate(cfg)
    f = instantiate(cfg.selector)
    assert isinstance(f, AStarStrategies)
    assert (f.k, f.cost, f.stop, f.push, f.tie_break, f.expand_per_round) == (
        3, "depth", "width", "all", "fifo", 1)
    assert f.max_prm_calls == 30 and f.max_expansions is None and f.open_max is None


@pytest.mark.parametrize(("override", "fragment"), [
    ("selector.k=0", "selector.k=0 is invalid: must be >= 1"),
    ("selector.cost=bytes", "selector.cost=bytes is invalid; allowed: accumulated, depth, zero"),
    ("selector.stop=never", "selector.stop=never is invalid; allowed: width, first"),
    ("selector.tie_break=random", "selector.tie_break=random is invalid; allowed: fifo, deeper"),
    ("selector.push=some", "selector.push=some is invalid; allowed: all, best"),
    ("selector.max_prm_calls=0", "selector.max_prm_calls=0 is invalid: must be >= 1"),
    ("selector.open_max=0", "selector.open_max=0 is invalid: must be >= 1"),
    ("selector.step_cost=-1", "selector.step_cost=-1.0 is invalid: must be >= 0"),
])
def test_bad_config_values_name_the_key(compose_cfg, override, fragment):
    cfg = compose_cfg("selector=astar", override)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"k": 0}, "k"), ({"cost": "x"}, "cost"), ({"max_prm_calls": 1, "k": 2}, "max_prm_calls"),
    ({"open_max": 0}, "open_max"), ({"expand_per_round": 0}, "expand_per_round"),
])
def test_direct_construction_rejects_bad_values(kwargs, key):
    with pytest.raises(ValueError, match=key):
        AStarStrategies(**kwargs)
