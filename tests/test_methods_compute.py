"""Compute axes per problem (issue 10): ``prm_scored`` and rollouts in the records, FLOPs of
rollouts, ``summary.json``'s ``per_problem`` means and ``ets.analysis.report``'s tokens / PRM-call
columns and Pareto axes, each recomputed by hand from the records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ets.analysis.compute import ModelShape, problem_compute, run_compute
from ets.analysis.report import PARETO_X, main
from ets.rundir.results import VOTES, per_problem, prm_scored, summarize
from ets.selectors.rebase import RebaseSelector
from tests.core.helpers import (
    LookaheadStrategies,
    ScriptedPolicy,
    ScriptedPRM,
    make_search,
    problems,
    run_all,
)

SHAPE = ModelShape(num_hidden_layers=2, hidden_size=8, num_attention_heads=2,
                   num_key_value_heads=1, intermediate_size=16, vocab_size=32)


def counting(answer_at: int = 3, tokens: int = 5):
    def script(context, j, req):
        d = context.count("\n\n") + 1
        if d >= answer_at:
            return f"s{d}.{j}\nThe answer is 7.", tokens, "eos"
        return f"s{d}.{j} work\n\n", tokens, "stop"
    return script


class CountingPRM(ScriptedPRM):
    """Counts the items it is asked to score, per problem."""

    def __init__(self) -> None:
        super().__init__()
        self.items: dict[str, int] = {}

    def score(self, items):
        for problem, _ in items:
            self.items[problem.id] = self.items.get(problem.id, 0) + 1
        return super().score(items)


@pytest.mark.parametrize("strategies", ["rebase", "lookahead"])
def test_prm_scored_is_what_the_prm_was_given_per_problem(strategies):
    prm = CountingPRM()
    selector = RebaseSelector(0.2) if strategies == "rebase" else LookaheadStrategies(k=2)
    search = make_search(ScriptedPolicy(counting(answer_at=4)), selector, prm=prm, width=4,
                         concurrency=2)
    recs = run_all(search, problems(3))
    for rec in recs:
        assert rec["prm_scored"] == prm.items[rec["id"]]
        rollouts = rec.get("rollouts", [])
        assert rec["prm_scored"] == len(rec["tree"]) - 1 + len(rollouts)
    if strategies == "lookahead":
        rec = recs[0]
        # 2 rollout steps below each of the 4 open children at depths 1 and 2, 1 at depth 3
        assert len(rec["rollouts"]) == rec["strategy"]["rollouts"] == 4 * 2 + 4 * 2 + 4 * 1
        assert sum(r["tokens"] for r in rec["rollouts"]) == rec["rollout_tokens"] == 5 * 20
        assert all(r["id"] < 0 and r["score"] is not None for r in rec["rollouts"])
        tree_ids = {row["id"] for row in rec["tree"]}
        roll_ids = {r["id"] for r in rec["rollouts"]}
        assert all(r["parent"] in tree_ids | roll_ids for r in rec["rollouts"])
    else:
        assert all("rollouts" not in r for r in recs)


def test_rollout_flops_are_counted_as_tree_steps():
    tree = [{"id": 0, "parent": None, "tokens": 10}, {"id": 1, "parent": 0, "tokens": 4},
            {"id": 2, "parent": 1, "tokens": 3}]
    rollouts = [{"id": -1, "parent": 1, "tokens": 6}, {"id": -2, "parent": -1, "tokens": 2}]
    # the same steps as ordinary tree nodes (ids 3, 4)
    as_tree = tree + [{"id": 3, "parent": 1, "tokens": 6}, {"id": 4, "parent": 3, "tokens": 2}]
    with_rollouts = problem_compute(tree, SHAPE, SHAPE, rollouts=rollouts)
    assert with_rollouts == problem_compute(as_tree, SHAPE, SHAPE)
    assert with_rollouts != problem_compute(tree, SHAPE, SHAPE)
    tok = with_rollouts["tokens"]
    assert tok["policy_decode"] == 4 + 3 + 6 + 2
    # contexts before each step: 10, 14, 14, 20
    assert tok["policy_prefill_no_reuse"] == 10 + 14 + 14 + 20
    assert tok["prm_read"] == 10 + 15 and tok["prm_read_no_reuse"] == 14 + 17 + 20 + 22
    # decode FLOPs of the second rollout: 2 tokens after 10 + 4 + 6 = 20
    alone = problem_compute(tree, SHAPE, None, rollouts=rollouts[:1])["policy_flops"]["decode"]
    assert with_rollouts["policy_flops"]["decode"] - alone == SHAPE.flops(2, 20)
    # run_compute reads record["rollouts"]
    cfg = {"compute": {"policy_shape": SHAPE.__dict__, "prm_shape": SHAPE.__dict__}}
    rec = {"id": "a", "tree": tree, "rollouts": rollouts}
    assert run_compute([rec], cfg)["total_flops"] == with_rollouts["total_flops"]


def _rec(pid: str, correct: bool, tokens: int, tree_nodes: int, **extra) -> dict:
    tree = [{"id": i, "parent": None if i == 0 else 0, "tokens": 1} for i in range(tree_nodes + 1)]
    return {"id": pid, "correct": dict.fromkeys(VOTES, correct), "tokens": tokens, "tree": tree,
            "kv": {"paper": {"per_depth": [10], "mean": 10, "peak": 10, "total": 10}}, **extra}


def test_per_problem_means_by_hand_and_the_old_record_fallback():
    recs = [_rec("a", True, 100, 8, prm_scored=12, rollout_tokens=40),
            _rec("b", False, 50, 4, prm_scored=4),
            _rec("c", True, 30, 3)]  # written before prm_scored: every tree step, once
    assert [prm_scored(r) for r in recs] == [12, 4, 3]
    assert per_problem(recs) == {"tokens": 60.0, "rollout_tokens": 40 / 3,
                                 "generated_tokens": 220 / 3, "prm_scored": 19 / 3}
    assert summarize(recs)["per_problem"] == per_problem(recs)
    # an old record with rollouts: its PRM items cannot be known
    old = _rec("d", True, 30, 3, rollout_tokens=9)
    assert prm_scored(old) is None and per_problem([*recs, old])["prm_scored"] is None


HAND = {  # run: (selector, records)
    "rebase": ("rebase.RebaseSelector", [_rec("p0", True, 100, 10, prm_scored=10),
                                         _rec("p1", True, 300, 30, prm_scored=30)]),
    "beam": ("beam.BeamSelector", [_rec("p0", True, 60, 6, prm_scored=14, rollout_tokens=20),
                                   _rec("p1", False, 20, 2, prm_scored=6)]),
    "old": ("dvts.DVTSSelector", [_rec("p0", False, 10, 5), _rec("p1", False, 30, 7)]),
}


@pytest.fixture
def hand_runs(tmp_path) -> Path:
    for name, (target, records) in HAND.items():
        d = tmp_path / "runs" / name
        d.mkdir(parents=True)
        with open(d / "problems.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        summary = summarize(records, wall_time_s=1.0)
        if name == "old":  # a run written before summary.json had per_problem
            del summary["per_problem"]
        (d / "summary.json").write_text(json.dumps(summary))
        (d / "config.yaml").write_text(json.dumps(
            {"selector": {"_target_": f"ets.selectors.{target}"}, "search": {"width": 4, "seed": 0}}))
    return tmp_path / "runs"


def _table(md: str, heading: str) -> list[dict[str, str]]:
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


@pytest.mark.parametrize("axis", ["tokens", "prm_calls"])
def test_report_tokens_and_prm_calls_per_problem_by_hand(hand_runs, tmp_path, axis):
    out = tmp_path / "out"
    assert main([str(hand_runs), "--out", str(out), "--budget", "none", "--pareto-x", axis]) == 0
    md = (out / "report.md").read_text()
    rows = {r["run"]: r for r in _table(md, "## Runs")}
    # tokens: (tree + rollout tokens) / problems; PRM calls: prm_scored / problems
    assert rows["rebase"]["tokens/problem"] == "200.0" and rows["rebase"]["PRM calls/problem"] == "20.0"
    assert rows["beam"]["tokens/problem"] == "50.0" and rows["beam"]["PRM calls/problem"] == "10.0"
    # the old run: from its records (every tree step scored once: (5 + 7) / 2)
    assert rows["old"]["tokens/problem"] == "20.0" and rows["old"]["PRM calls/problem"] == "6.0"
    seeds = {r["selector"]: r for r in _table(md, "## Across seeds")}
    assert seeds["Beam"]["tokens/problem"] == "50.0" and seeds["Beam"]["PRM calls/problem"] == "10.0"
    png = out / f"accuracy_vs_{axis}.png"
    assert f"]({png.name})" in md
    with Image.open(png) as img:
        assert img.size[0] > 300 and img.size[1] > 200
    assert axis in PARETO_X


def test_report_rejects_an_unknown_axis(hand_runs, tmp_path):
    with pytest.raises(SystemExit, match="--pareto-x 'calls'; allowed: kv, flops, flops_no_reuse, "
                                         "tokens, prm_calls"):
        from ets.analysis.report import write_report
        write_report(hand_runs, tmp_path / "o", budget="none", pareto_x="calls")
