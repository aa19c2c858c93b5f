"""``python -m ets.rerun``: a saved run re-executed from its config gives the same records."""

from __future__ import annotations

import json

from omegaconf import OmegaConf

from ets.rundir.rerun import compare, main, next_rerun_dir, provenance_warnings, seeds, strip_timing
from ets.rundir.results import read_records
from ets.rundir.run import run
from ets.rundir.runs import find_runs

TINY = ["+experiment=synthetic", "dataset.limit=4", "search.width=4", "search.seed=3",
        "policy.base_error=0.2", "selector=ets", "selector.coverage_weight=0", "selector.lambda=0.5"]


def test_rerun_of_a_synthetic_run_is_identical(compose_cfg, tmp_path, capsys):
    original = tmp_path / "run"
    run(compose_cfg(*TINY), original)
    assert main([str(original)]) == 0
    out = capsys.readouterr()
    assert "per-problem results are IDENTICAL" in out.out
    assert "search.seed=3" in out.out and "policy.seed=3" in out.out and "prm.seed=3" in out.out
    rerun_dir = original / "rerun-1"
    a, b = read_records(original / "problems.jsonl"), read_records(rerun_dir / "problems.jsonl")
    assert len(a) == 4
    assert sorted(map(strip_timing, a), key=lambda r: r["id"]) == sorted(map(strip_timing, b), key=lambda r: r["id"])
    assert OmegaConf.load(rerun_dir / "config.yaml").search == OmegaConf.load(original / "config.yaml").search
    assert next_rerun_dir(original) == original / "rerun-2"
    assert find_runs(original) == [original]  # the report leaves nested reruns out


def test_every_run_saves_seeds_versions_and_commit(compose_cfg, tmp_path):
    run(compose_cfg(*TINY, "dataset.limit=1"), tmp_path)
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["seed"] == 3 and "commit" in meta["git"] and "dirty" in meta["git"]
    assert meta["python"] and meta["packages"]["hydra-core"]
    cfg = OmegaConf.to_container(OmegaConf.load(tmp_path / "config.yaml"))
    assert dict(seeds(cfg)) == {"search.seed": 3, "policy.seed": 3, "prm.seed": 3, "dataset.seed": 0}


def test_compare_ignores_timings_and_catches_changes():
    rec = {"id": "p1", "answers": ["1"], "wall_time_s": 1.0, "kv": {"radix": {"mean": 2.0}},
           "tree": [{"id": 0, "wall_time_s": 0.1}]}
    same = {**rec, "wall_time_s": 9.0, "tree": [{"id": 0, "wall_time_s": 7.0}]}
    assert compare([rec], [same]).identical
    changed = {**rec, "answers": ["2"]}
    result = compare([rec, {"id": "p2"}], [changed, {"id": "p3"}])
    assert not result.identical
    assert result.different == {"p1": ["answers"]} and result.missing == ["p2"] and result.extra == ["p3"]
    assert "DIFFER" in result.describe()
    assert not compare([], []).identical  # nothing compared is not a reproduction


def test_provenance_warnings():
    env = {"git": {"commit": "abc", "dirty": False}, "packages": {"ets": "0.1.0"}, "python": "3.11.7"}
    assert provenance_warnings(env, env) == []
    warn = provenance_warnings({**env, "git": {"commit": "old", "dirty": True},
                                "packages": {"ets": "0.0.9"}}, env)
    assert any("old differs from the current abc" in w for w in warn)
    assert any("dirty" in w for w in warn) and any("package ets" in w for w in warn)
    assert any("no git commit" in w for w in provenance_warnings({"git": {}}, env))


def test_floats_compare_within_a_stated_tolerance_and_report_the_largest_difference():
    rec = {"id": "p1", "answers": ["1"], "votes": [{"weight": 1.25, "count": 2}],
           "tree": [{"id": 0, "score": None}, {"id": 1, "score": 0.5}, {"id": 2, "score": 0.75}]}
    moved = json.loads(json.dumps(rec))
    moved["tree"][1]["score"] += 1e-6  # PRM scores after a resume: another batch composition
    moved["tree"][2]["score"] -= 3e-7
    result = compare([rec], [moved])
    assert result.identical and result.max_diff == abs(moved["tree"][1]["score"] - 0.5)
    assert result.max_diff_at == "p1: tree[1].score"
    assert "largest float difference: 1e-06 at p1: tree[1].score" in result.describe()
    assert "IDENTICAL within the tolerance" in result.describe()
    exact = compare([rec], [moved], tolerance=0)
    assert not exact.identical and exact.different == {"p1": ["tree"]}
    far = json.loads(json.dumps(rec))
    far["votes"][0]["weight"] = 1.3
    assert compare([rec], [far]).different == {"p1": ["votes"]}
    counted = json.loads(json.dumps(rec))
    counted["votes"][0]["count"] = 3  # integers are exact whatever the tolerance
    assert compare([rec], [counted], tolerance=1.0).different == {"p1": ["votes"]}
    assert "IDENTICAL (bit-exact)" in compare([rec], [rec]).describe()


def test_rerun_cli_tolerance(compose_cfg, tmp_path, capsys):
    original = tmp_path / "run"
    run(compose_cfg(*TINY, "dataset.limit=2"), original)
    lines = (original / "problems.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    scored = next(n for n in rec["tree"] if n["score"] is not None)
    scored["score"] += 2e-7 * max(1.0, abs(scored["score"]))  # last-bits drift of a resumed real run
    (original / "problems.jsonl").write_text("\n".join([json.dumps(rec), *lines[1:]]) + "\n")
    assert main([str(original)]) == 0
    out = capsys.readouterr().out
    assert f"at {rec['id']}: tree[{scored['id']}].score" in out and "within the tolerance" in out
    assert main([str(original), "--tolerance", "0"]) == 1
    assert "per-problem results DIFFER" in capsys.readouterr().out
