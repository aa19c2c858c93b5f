"""tracker=wandb against real wandb in offline mode: what it writes, crashes, the API key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ets.rundir.results import ResultsFile
from ets.rundir.run import run
from ets.trackers.wandb import default_group, resolve_mode, summary_metrics
from tests.conftest import ROOT, crash_policy_at
from tests.ops.wandb_log import offline_runs, read_offline_run

KEY = "etsFAKEkey" + "0123456789abcdef" * 2 + "zz"
TINY = ["+experiment=synthetic", "dataset.limit=3", "search.width=4", "selector=rebase",
        "policy.base_error=0.2"]


def _wandb_env(tmp: Path, key: bool = True) -> dict[str, str]:
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"),
           "WANDB_CACHE_DIR": str(tmp / "wandb-cache"), "WANDB_DATA_DIR": str(tmp / "wandb-data"),
           "WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "WANDB_SILENT": "true"}
    if key:
        env["WANDB_API_KEY"] = KEY
    return env


@pytest.fixture
def offline(tmp_path, monkeypatch):
    for k, v in _wandb_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    return tmp_path / "wandb"


def assert_key_never_written(root: Path) -> None:
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert files
    leaks = [str(p) for p in files if KEY.encode() in p.read_bytes()]
    assert not leaks, f"API key written to {leaks}"


def test_offline_run_logs_config_summary_per_depth_and_tables(compose_cfg, tmp_path, offline):
    cfg = compose_cfg(*TINY, "tracker=wandb", "tracker.tags=[ops,synthetic]", "name=ops-test")
    summary = run(cfg, tmp_path / "run")
    (run_dir,) = offline_runs(offline)
    logged = read_offline_run(run_dir)

    assert logged.exit_code == 0
    assert (logged.group, logged.tags, logged.name) == ("ops-test", ["ops", "synthetic"], "run")
    assert logged.config["search"]["width"] == 4 and logged.config["name"] == "ops-test"
    assert logged.config["selector"]["_target_"] == "ets.selectors.rebase.RebaseSelector"
    s = logged.summary
    for vote, acc in summary["accuracy"].items():
        assert s[f"accuracy/{vote}"] == pytest.approx(acc)
    assert 0 < summary["accuracy"]["coverage"]
    for backend, kv in summary["kv"].items():
        assert s[f"kv/{backend}/mean"] == pytest.approx(kv["mean"])
        assert s[f"kv/{backend}/peak"] == kv["peak"]
    for key in ("problems", "tokens_generated", "policy_calls", "prm_calls"):
        assert s[key] == summary[key]
    assert s["wall_time_s"] == pytest.approx(summary["wall_time_s"])
    assert s["compute/total_flops"] == pytest.approx(summary["compute"]["total_flops"])
    assert s["throughput/tokens_per_s"] == pytest.approx(summary["tokens_generated"] / summary["wall_time_s"])
    assert s["throughput/problems_per_s"] == pytest.approx(3 / summary["wall_time_s"])

    depth_rows = [h for h in logged.history if "depth/iteration" in h]
    assert len(depth_rows) == summary["counters_this_session"]["depth_iterations"]
    local_rows = (tmp_path / "run" / "depth_metrics.jsonl").read_text().splitlines()
    assert len(local_rows) == len(depth_rows)  # the local tracker's file is still written
    assert {"depth/kv_radix", "depth/problems_in_flight"} <= set(depth_rows[0])
    assert len([h for h in logged.history if "problem/index" in h]) == 3

    records = {r["id"]: r for r in ResultsFile(tmp_path / "run" / "problems.jsonl").load()}
    (table_file,) = (run_dir / "files" / "media" / "table").glob("problem_table_*.table.json")
    table = json.loads(table_file.read_text())
    cols = table["columns"]
    assert cols[:2] == ["id", "gold"] and "kv_mean_radix" in cols
    assert cols[-3:] == ["tokens", "flops", "flops_no_reuse"]
    assert len(table["data"]) == 3
    for row in table["data"]:
        rec = records[row[0]]
        got = dict(zip(cols, row))
        assert got["gold"] == rec["gold"] and got["tokens"] == rec["tokens"]
        assert got["correct_weighted_majority"] == rec["correct"]["weighted_majority"]
        assert got["pred_majority"] == (rec["predictions"]["majority"] or "")
        assert got["kv_mean_paged"] == pytest.approx(rec["kv"]["paged"]["mean"])
        per = summary["compute"]["per_problem"][row[0]]  # FLOPs per problem (ets.analysis.compute)
        assert got["flops"] == pytest.approx(per["total"]) and per["total"] > 0
        assert got["flops_no_reuse"] == pytest.approx(per["total_no_reuse"])
    (point_file,) = (run_dir / "files" / "media" / "table").glob("accuracy_vs_kv_table_*.table.json")
    point = dict(zip(*(lambda t: (t["columns"], t["data"][0]))(json.loads(point_file.read_text()))))
    assert point["kv_mean"] == pytest.approx(summary["kv"]["radix"]["mean"])
    assert point["accuracy"] == pytest.approx(summary["accuracy"]["weighted_majority"])
    assert "accuracy_vs_kv" in logged.config["_wandb"]["visualize"]
    assert_key_never_written(tmp_path)


class Crash(RuntimeError):
    pass


def test_crash_finishes_the_run_as_failed_and_defaults_to_offline(compose_cfg, tmp_path, monkeypatch, capsys):
    for k, v in _wandb_env(tmp_path, key=False).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_MODE")  # no key and no mode: offline by default, with a hint
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    crash_policy_at(monkeypatch, 2, Crash("boom"))
    with pytest.raises(Crash):
        run(compose_cfg(*TINY, "tracker=wandb"), tmp_path / "run")
    (run_dir,) = offline_runs(tmp_path / "wandb")
    logged = read_offline_run(run_dir)
    assert logged.exit_code == 1
    assert "accuracy/weighted_majority" not in logged.summary
    assert [h["depth/iteration"] for h in logged.history if "depth/iteration" in h] == [1]
    err = capsys.readouterr().err
    assert "no WANDB_API_KEY" in err and "wandb sync" in err


def test_cli_sweep_shares_a_group_and_never_writes_the_key(tmp_path):
    sweep = tmp_path / "sweep"
    env = {**os.environ, **_wandb_env(tmp_path), "HF_HUB_OFFLINE": "1"}
    del env["WANDB_DIR"]  # default: wandb writes into each run dir
    proc = subprocess.run(
        [sys.executable, "-m", "ets", "-m", *TINY[:4], "dataset.limit=2", "tracker=wandb",
         "search.seed=0,1", f"hydra.sweep.dir={sweep}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert len(runs) == 2
    groups = set()
    for run_dir in runs:
        (wandb_run,) = offline_runs(run_dir)
        logged = read_offline_run(wandb_run)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert logged.exit_code == 0 and logged.name == run_dir.name
        assert logged.summary["accuracy/majority"] == pytest.approx(summary["accuracy"]["majority"])
        assert logged.config["search"]["seed"] in (0, 1)
        groups.add(logged.group)
    try:  # the sweep dir, relative to the launch dir when inside it
        expected = str(sweep.resolve().relative_to(ROOT.resolve()))
    except ValueError:
        expected = str(sweep)
    assert groups == {expected}
    assert KEY not in proc.stdout + proc.stderr
    assert_key_never_written(tmp_path)


def test_wandb_is_imported_lazily():
    code = "import sys, ets.rundir.run, ets.trackers.wandb, ets.analysis.report, ets.rundir.rerun; print('wandb' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_mode_group_and_summary_helpers(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert resolve_mode(None) == "online" and resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline"
    (tmp_path / "sweep" / "a=1").mkdir(parents=True)
    assert default_group(tmp_path / "sweep" / "a=1", {"name": "n"}) == "n"
    (tmp_path / "sweep" / "multirun.yaml").write_text("{}")
    assert default_group(tmp_path / "sweep" / "a=1", {"name": "n"}) == str(tmp_path / "sweep")
    flat = summary_metrics({"accuracy": {"majority": 0.5}, "kv": {"radix": {"mean": 2.0, "peak": 3}},
                            "tokens_generated": 100, "problems": 4, "wall_time_s": 2.0,
                            "selector_stats": {"solves": 7, "note": "x"}})
    assert flat["throughput/tokens_per_s"] == 50 and flat["throughput/problems_per_s"] == 2
    assert flat["kv/radix/peak"] == 3 and flat["selector_stats/solves"] == 7
    assert "selector_stats/note" not in flat


def test_key_but_no_network_falls_back_to_offline(compose_cfg, tmp_path, monkeypatch, capsys):
    """An API key and an unreachable server: before the fix wandb.init waited ~100 s and
    then failed the run; now the tracker logs offline at once and says so."""
    import socket

    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in _wandb_env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("WANDB_MODE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert resolve_mode(None) == "online"
    summary = run(compose_cfg(*TINY, "tracker=wandb"), tmp_path / "run")
    err = capsys.readouterr().err
    assert f"the W&B server http://127.0.0.1:{port} cannot be reached, so W&B logs offline" in err
    (run_dir,) = offline_runs(tmp_path / "wandb")
    logged = read_offline_run(run_dir)
    assert logged.exit_code == 0
    assert logged.summary["accuracy/weighted_majority"] == pytest.approx(summary["accuracy"]["weighted_majority"])
