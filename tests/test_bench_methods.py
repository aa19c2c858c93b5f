"""bench/methods.py (issue 10): every method at matched budgets on the synthetic world; the
table's numbers recomputed by hand from the run directories' records."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf
from PIL import Image

from bench import methods as M
from bench.search import Job, run_job
from ets.analysis.plots import pareto_front
from ets.rundir.results import read_records


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("methods")
    assert M.main(["--problems", "3", "--budgets", "4", "--jobs", "2", "--out", str(out)]) == 0
    return out


EXPECTED = {  # method: (selector class, expander class, other keys) of the existing methods
    "ets": ("ETSSelector", "StepExpander", {"coverage_weight": 1.4}),  # no paper λ_s at 4
    "ets_improved": ("ETSSelector", "StepExpander", {"coverage_weight": 1.4, "min_one_child": True}),
    "rebase": ("RebaseSelector", "StepExpander", {}),
    "rebase_trunc": ("RebaseTruncSelector", "StepExpander", {"truncate_ratio": 0.5}),
    "beam": ("BeamSelector", "StepExpander", {"beam_width": 4}),
    "dvts": ("DVTSSelector", "StepExpander", {"beam_width": 4}),
    "best_of_n": ("BestOfNSelector", "FullExpander", {}),
    "ffs": ("FFSSelector", "FixedTokensExpander", {"k": 1}),
}


def test_every_method_runs_with_its_budget_mapping(study):
    result = json.loads((study / "methods.json").read_text())
    assert [r["method"] for r in result["rows"]] == list(M.METHODS)
    assert set(EXPECTED) <= set(M.METHODS)
    for method in M.METHODS:
        cfg = OmegaConf.load(study / "runs" / f"{method}-b4-n3-s0" / "config.yaml")
        assert (cfg.dataset.limit, cfg.search.seed) == (3, 0)
        if method not in EXPECTED:
            continue
        selector, expander, keys = EXPECTED[method]
        assert cfg.search.width == 4  # the width methods: B = trajectories
        assert cfg.selector._target_.endswith("." + selector)
        assert cfg.expander._target_.endswith("." + expander)
        assert {k: cfg.selector[k] for k in keys} == keys


def test_rows_are_the_records_by_hand(study):
    result = json.loads((study / "methods.json").read_text())
    for row in result["rows"]:
        run = study / "runs" / f"{row['method']}-b{row['budget']}-n3-s0"
        recs = read_records(run / "problems.jsonl")
        summary = json.loads((run / "summary.json").read_text())
        assert row["problems"] == row["pairs"] == len(recs) == 3 and row["seeds"] == 1
        for vote in ("weighted_majority", "majority", "best_of_n"):
            assert row["accuracy"][vote] == pytest.approx(sum(r["correct"][vote] for r in recs) / 3)
        tokens = [r["tokens"] + r.get("rollout_tokens", 0) for r in recs]
        assert row["tokens"] == pytest.approx(sum(tokens) / 3)
        # every generated node (tree step or look-ahead rollout) was scored once
        assert all(r["prm_scored"] == len(r["tree"]) - 1 + len(r.get("rollouts", [])) for r in recs)
        assert row["prm_calls"] == pytest.approx(sum(r["prm_scored"] for r in recs) / 3)
        per_depth = [r["kv"]["paper"]["per_depth"] for r in recs]
        if any(per_depth):
            assert row["kv"]["total"] == pytest.approx(sum(sum(d) for d in per_depth) / 3)
            calls = [v for d in per_depth for v in d]
            assert row["kv"]["mean"] == pytest.approx(sum(calls) / len(calls))
        else:
            assert row["kv"] is None and row["method"] == "best_of_n"  # it never selects
        assert row["wall_ms_per_problem"] == pytest.approx(1000 * summary["wall_time_s"] / 3)
    md = (study / "methods.md").read_text()
    assert md.count("\n| 4 | ") == len(M.METHODS)
    for name in ("accuracy_vs_tokens.png", "accuracy_vs_kv.png"):
        with Image.open(study / name) as img:
            assert img.size[0] > 300


def test_fronts_by_brute_force(study):
    rows = json.loads((study / "methods.json").read_text())["rows"]

    def dominated(r, others, x):
        return any(x(o) <= x(r) and o["accuracy"]["weighted_majority"] >= r["accuracy"]["weighted_majority"]
                   and (x(o) < x(r) or o["accuracy"]["weighted_majority"] > r["accuracy"]["weighted_majority"])
                   for o in others)

    kv_rows = [r for r in rows if r["kv"] is not None]
    for r in rows:
        assert r["front"]["tokens"] == (not dominated(r, rows, lambda o: o["tokens"]))
        assert r["front"]["kv"] == (r["kv"] is not None
                                    and not dominated(r, kv_rows, lambda o: o["kv"]["total"]))


def test_fronts_on_hand_made_rows():
    def r(acc, tokens, kv):
        return {"accuracy": {"weighted_majority": acc}, "tokens": tokens,
                "kv": None if kv is None else {"total": kv}}
    rows = [r(0.5, 100, 10), r(0.6, 200, 5), r(0.6, 300, None), r(0.4, 50, 20), r(0.7, 400, None)]
    M.fronts(rows)
    assert [x["front"]["tokens"] for x in rows] == [True, True, False, True, True]
    assert [x["front"]["kv"] for x in rows] == [False, True, False, False, False]
    assert pareto_front([100, 200, 300, 50, 400], [0.5, 0.6, 0.6, 0.4, 0.7]) == [3, 0, 1, 4]


def test_overrides_and_plan():
    assert M.overrides("ets", 16) == ("selector=ets", "selector.coverage_weight=1.5")
    assert M.overrides("ets", 64) == ("selector=ets", "selector.coverage_weight=1.4")
    assert M.overrides("best_of_n", 64) == ("selector=best_of_n", "expander=full")
    with pytest.raises(SystemExit, match="method 'mcts' is unknown; allowed: ets, "):
        M.overrides("mcts", 16)
    jobs = M.plan(["rebase", "beam"], [16, 64], 10, 2)
    assert [(j.method, j.width, j.seed) for j in jobs] == [
        ("rebase", 64, 0), ("rebase", 64, 1), ("beam", 64, 0), ("beam", 64, 1),
        ("rebase", 16, 0), ("rebase", 16, 1), ("beam", 16, 0), ("beam", 16, 1)]
    assert len({j.name for j in jobs}) == 8 and all(j.problems == 10 for j in jobs)


def test_a_method_may_map_its_budget_onto_other_keys(tmp_path, monkeypatch):
    """The job's overrides come after ``search.width={B}`` and win (one METHODS line can
    map B onto e.g. iterations and fix the width)."""
    import ets.rundir.run

    seen = {}

    def fake_run(cfg, run_dir):
        seen.update(width=cfg.search.width, limit=cfg.dataset.limit, seed=cfg.search.seed)
        return {}

    monkeypatch.setattr(ets.rundir.run, "run", fake_run)
    run_job(Job("x", "methods", "m", 16, 5, 3, overrides=("selector=rebase", "search.width=2")), tmp_path)
    assert seen == {"width": 2, "limit": 5, "seed": 3}
