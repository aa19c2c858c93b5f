"""The whole pipeline on the synthetic world: files, resume, ETS vs REBASE."""

import json
import os
import subprocess
import sys

import pytest

from ets.rundir.results import ResultsFile
from ets.rundir.run import build_search, run
from tests.conftest import ROOT, crash_policy_at

TINY = ["+experiment=synthetic", "dataset.limit=6", "search.width=8", "search.concurrency=4"]


def test_cli_writes_the_expected_files(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", *TINY, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problems"] == 6
    assert set(summary["accuracy"]) == {"weighted_majority", "majority", "best_of_n", "coverage"}
    assert set(summary["kv"]) == {"paper", "radix", "paged"}
    for key in ("tokens_generated", "policy_calls", "prm_calls", "wall_time_s"):
        assert summary[key] > 0
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and len({r["id"] for r in rows}) == 6
    assert summary["tokens_generated"] == sum(r["tokens"] for r in rows)
    node = rows[0]["tree"][1]
    assert {"id", "parent", "depth", "tokens", "score", "finished", "finish_reason", "text"} <= set(node)
    # every problem finished at most W trajectories, and the tree's tokens add up
    for r in rows:
        finished = [n for n in r["tree"] if n["finished"]]
        assert len(finished) <= 8
        assert r["tokens"] == sum(n["tokens"] for n in r["tree"][1:])
    assert (out / "config.yaml").exists() and (out / ".hydra" / "config.yaml").exists()
    meta = json.loads((out / "run.json").read_text())
    assert "commit" in meta["git"] and meta["packages"]["hydra-core"] == "1.3.8"
    assert "accuracy" in proc.stdout


def test_bad_config_exits_with_a_clear_message(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "ets", *TINY, "selector.lambda=-1", f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "selector.lambda=-1.0 is invalid: must be >= 0" in proc.stderr


class Crash(RuntimeError):
    pass


def test_interrupted_run_resumes_without_duplicates(compose_cfg, tmp_path, monkeypatch):
    cfg = compose_cfg(*TINY, "search.concurrency=2", "selector=rebase")
    full = run(cfg, tmp_path / "uninterrupted")

    real_build = crash_policy_at(monkeypatch, 12, Crash("killed mid-run"))
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        run(cfg, out)
    partial = ResultsFile(out / "problems.jsonl").load()
    assert 0 < len(partial) < 6
    with open(out / "problems.jsonl", "ab") as fh:  # a line torn by the kill
        fh.write(b'{"id": "syn-9')
    import ets.rundir.run as ets_run

    monkeypatch.setattr(ets_run, "build_search", real_build)
    resumed = run(cfg, out)
    rows = ResultsFile(out / "problems.jsonl").load()
    assert sorted(r["id"] for r in rows) == sorted(set(r["id"] for r in rows))
    assert len(rows) == 6
    assert resumed["accuracy"] == full["accuracy"]
    assert resumed["kv"] == full["kv"]
    assert resumed["tokens_generated"] == full["tokens_generated"]


def test_ets_holds_less_kv_than_rebase_same_seed(compose_cfg):
    results = {}
    for sel in ("ets", "rebase"):
        cfg = compose_cfg("+experiment=synthetic", "dataset.limit=40", "search.width=16",
                          f"selector={sel}")
        search, dataset = build_search(cfg)
        rows = []
        search.run(dataset.load(), rows.append)
        results[sel] = {k: sum(r["kv"][k]["mean"] for r in rows) / len(rows) for k in ("paper", "radix")}
    assert results["ets"]["paper"] < results["rebase"]["paper"]
    assert results["ets"]["radix"] < results["rebase"]["radix"]


def _rows(compose_cfg, *overrides):
    cfg = compose_cfg("+experiment=synthetic", "dataset.limit=8", "search.width=8", *overrides)
    search, dataset = build_search(cfg)
    rows = []
    search.run(dataset.load(), rows.append)
    return rows


def test_best_of_n_with_full_expander_is_one_step_per_trajectory(compose_cfg):
    rows = _rows(compose_cfg, "selector=best_of_n", "expander=full")
    for r in rows:
        steps = r["tree"][1:]
        assert len(steps) == 8 and all(n["depth"] == 1 and n["finished"] for n in steps)
        assert r["depths"] == 1


def test_ffs_stops_once_the_first_trajectory_finishes(compose_cfg):
    rows = _rows(compose_cfg, "selector=ffs", "expander=fixed_tokens", "expander.tokens=32")
    for r in rows:
        finished = [n for n in r["tree"] if n["finished"]]
        with_answer = [n for n in finished if n["answer"] is not None]
        deepest = max(n["depth"] for n in r["tree"])
        # nothing is expanded after the depth where the first answer appeared
        if with_answer:
            assert deepest == min(n["depth"] for n in with_answer)
        assert all(n["tokens"] <= 32 for n in r["tree"][1:])


def test_beam_and_dvts_finish_at_most_width_trajectories(compose_cfg):
    for sel in ("beam", "beam_ets", "dvts"):
        for r in _rows(compose_cfg, f"selector={sel}"):
            assert sum(n["finished"] for n in r["tree"]) <= (8 if sel != "beam_ets" else 16)
