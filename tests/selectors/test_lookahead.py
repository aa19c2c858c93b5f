"""Look-ahead for beam search and DVTS (``selector.lookahead=k``): hand-computed rankings
with a scripted policy and PRM, rollouts outside the width, greedy requests, the
max_nodes guard, configs, and end-to-end runs (synthetic CLI, SmolLM2)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.core.lookahead import LookaheadWidthStrategy
from ets.core.width import WidthStrategies, WidthStrategy
from ets.selectors.beam import BeamSelector
from ets.selectors.dvts import DVTSSelector
from tests.conftest import ROOT
from tests.core.helpers import ScriptedPolicy, ScriptedPRM, make_search, problems, run_all

# The tree: the root's children are "a0".."a3" (4 tokens each); a greedy request (the
# look-ahead) continues with "g" (3 tokens), except that a3's first greedy step ends the
# trajectory ("The answer is 9", EOS, 5 tokens); any sampled step below depth 1 answers 7.
GREEDY_END = "The answer is 9\n\n"


def script(context, j, req):
    steps = context.split("\n", 1)[1].split("\n\n")[:-1]  # the path's step texts
    if req.temperature == 0.0:
        if steps == ["a3"]:
            return GREEDY_END, 5, "eos"
        return "g\n\n", 3, "stop"
    if not steps:
        return f"a{j}\n\n", 4, "stop"
    return f"b{j}\nThe answer is 7\n\n", 6, "stop"


# PRM scores by path text: own scores rank a0 > a1 > a2 > a3; one greedy step ranks
# a3 (.97, its finished rollout) > a2 (.95) > a1 > a0; two greedy steps rank a0 (.99) >
# a3 (.97: its chain stopped at the finish) > a1 (.5) > a2.
SCORES = {
    "a0\n\n": .9, "a1\n\n": .8, "a2\n\n": .3, "a3\n\n": .2,
    "a0\n\ng\n\n": .1, "a1\n\ng\n\n": .2, "a2\n\ng\n\n": .95, "a3\n\n" + GREEDY_END: .97,
    "a0\n\ng\n\ng\n\n": .99, "a1\n\ng\n\ng\n\n": .5, "a2\n\ng\n\ng\n\n": 0.0,
}


def run(selector, **kw):
    policy = ScriptedPolicy(script)
    search = make_search(policy, selector, prm=ScriptedPRM(lambda t: SCORES.get(t, 0.5)),
                         width=4, **kw)
    [rec] = run_all(search, problems(1))
    return rec, policy, search


def kept(rec):
    """The depth-1 steps that got children."""
    tree = {n["id"]: n for n in rec["tree"]}
    return sorted({tree[n["parent"]]["text"].strip() for n in rec["tree"] if n["depth"] == 2})


@pytest.mark.parametrize(("k", "want"), [(0, ["a0", "a1"]), (1, ["a2", "a3"]), (2, ["a0", "a3"])])
def test_beam_ranks_by_the_score_at_the_end_of_the_lookahead(k, want):
    rec, policy, _ = run(BeamSelector(beam_width=2, lookahead=k))
    assert kept(rec) == want
    # the kept two get M = 2 children each, all finish: exactly W finished tree nodes
    # (a3's finished rollout did not use width)
    assert [n["depth"] for n in rec["tree"]].count(2) == 4
    assert sum(n["finished"] for n in rec["tree"]) == 4
    assert len(rec["tree"]) == 1 + 4 + 4  # rollouts are not tree nodes
    rollouts = [r for r in policy.requests if r.temperature == 0.0]
    # k = 1: one greedy step per candidate; k = 2: a second for all but a3, whose chain ended
    assert len(rollouts) == {0: 0, 1: 4, 2: 7}[k]
    assert all(r.n == 1 for r in rollouts)
    assert all(r.temperature is None for r in policy.requests if r not in rollouts)
    # rollout tokens: first links 3+3+3+5, second links 3 each
    assert rec.get("rollout_tokens", 0) == {0: 0, 1: 14, 2: 23}[k]
    assert rec["tokens"] == 4 * 4 + 4 * 6  # tree tokens only
    if k:
        assert rec["strategy"] == {"lookahead_rollouts": {1: 4, 2: 7}[k], "lookahead_cut": 0}
    else:
        assert "strategy" not in rec and "rollout_tokens" not in rec
    # one KV sample (the one selection), as without look-ahead
    assert all(len(v["per_depth"]) == 1 for v in rec["kv"].values())


@pytest.mark.parametrize(("k", "want"), [(0, ["a0", "a2"]), (1, ["a1", "a3"]), (2, ["a0", "a3"])])
def test_dvts_keeps_the_lookahead_argmax_per_subtree(k, want):
    # subtrees {a0, a1} and {a2, a3}; each keeps its best by the look-ahead score
    rec, _, _ = run(DVTSSelector(beam_width=2, lookahead=k))
    assert kept(rec) == want
    assert [n["depth"] for n in rec["tree"]].count(2) == 4


def test_lookahead_stops_where_max_nodes_would_be_exceeded():
    # W = 4, depth cap 10: the guard reserves (10 - 1) * (4 + 2) = 54 nodes for the tree
    # rounds left. After round 1 (4 nodes) the first look-ahead links fit (4 + 4 + 54 = 62
    # <= 63), the second do not (8 + 3 + 54 = 65): ranked by the one-step look-ahead.
    rec, policy, _ = run(BeamSelector(beam_width=2, lookahead=2), max_nodes=63)
    assert kept(rec) == ["a2", "a3"]
    assert rec["strategy"] == {"lookahead_rollouts": 4, "lookahead_cut": 1}
    assert sum(r.temperature == 0.0 for r in policy.requests) == 4


def test_the_factory_uses_the_lookahead_strategy_only_when_asked():
    from ets.core.tree import Tree
    from ets.protocols import Budget

    budget = Budget(4, 5, 100, 40)
    plain = WidthStrategies(BeamSelector(2))(None, Tree("q", (1,)), None, budget)
    assert type(plain) is WidthStrategy
    look = WidthStrategies(DVTSSelector(2, lookahead=1))(None, Tree("q", (1,)), None, budget)
    assert isinstance(look, LookaheadWidthStrategy) and look.k == 1


def test_config_key_bounds_and_instantiation(compose_cfg):
    for sel, cls in (("beam", BeamSelector), ("beam_ets", BeamSelector), ("dvts", DVTSSelector)):
        cfg = compose_cfg(f"selector={sel}")
        validate(cfg)
        assert instantiate(cfg.selector).lookahead == 0  # default: the classic method
        cfg = compose_cfg(f"selector={sel}", "selector.lookahead=3")
        validate(cfg)
        made = instantiate(cfg.selector)
        assert isinstance(made, cls) and made.lookahead == 3
        with pytest.raises(ConfigError, match=r"selector\.lookahead=-1 is invalid: must be >= 0"):
            validate(compose_cfg(f"selector={sel}", "selector.lookahead=-1"))
    with pytest.raises(ValueError, match="lookahead"):
        BeamSelector(lookahead=-2)


def test_cli_synthetic_beam_with_lookahead(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.limit=3", "search.width=4",
         "selector=dvts", "selector.beam_width=2", "selector.lookahead=2", "tracker=local",
         f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == 3
    for r in rows:
        s = r["strategy"]
        assert s["lookahead_rollouts"] > 0 and r["rollout_tokens"] > 0
        assert r["tokens"] == sum(n["tokens"] for n in r["tree"][1:])  # rollouts not in the tree
        assert sum(n["finished"] for n in r["tree"]) <= 4
    # the summary reports the tree's tokens and, beside them, the rollouts'
    assert summary["tokens_generated"] == sum(r["tokens"] for r in rows)
    assert summary["rollout_tokens"] == sum(r["rollout_tokens"] for r in rows)


def run_smollm2(*overrides):
    """SmolLM2-135M (transformers, the default policy) on one demo problem, tiny budgets;
    the records without timings."""
    from ets.rundir.results import ResultsFile
    from ets.rundir.run import run as run_cfg
    from tests.core import golden

    cfg = golden.compose(*golden.WORLDS["smollm2"], "dataset.limit=1", "search.width=2",
                         "search.max_step_tokens=8", "search.max_tokens=24", "search.max_depth=3",
                         *overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg(cfg, Path(tmp) / "run")
        return [golden.strip(r) for r in ResultsFile(Path(tmp) / "run" / "problems.jsonl").load()]


@pytest.mark.slow
def test_smollm2_beam_with_lookahead():
    """A real model (SmolLM2-135M, transformers): greedy look-ahead links are real
    generations, scored, outside the tree."""
    rows = run_smollm2("selector=beam", "selector.beam_width=1", "selector.lookahead=1")
    assert len(rows) == 1
    r = rows[0]
    assert r["strategy"]["lookahead_rollouts"] >= 2 and r["rollout_tokens"] > 0
    assert r["rollout_tokens"] <= 8 * r["strategy"]["lookahead_rollouts"]  # one step each
    assert r["tokens"] == sum(n["tokens"] for n in r["tree"][1:])
    assert sum(n["finished"] for n in r["tree"]) <= 2
