"""``python -m ets.report`` over a real small sweep: tables, CIs, plots, budget curves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.stats import t as student_t

from ets.analysis.budget import budget_curve, budgets, trajectories
from ets.analysis.plots import pareto_front
from ets.analysis.report import main, pick_baseline
from ets.rundir.results import VOTES, read_records, summarize
from ets.rundir.runs import find_runs, kv_per_depth, load_grader, load_runs, mean_ci, short_names
from tests.conftest import ROOT
from tests.ops.wandb_log import offline_runs, read_offline_run

COMMON = ["+experiment=synthetic", "dataset.limit=4", "policy.base_error=0.2", "search.seed=0,1"]
SWEEPS = {
    "ets": ["search.width=4", "selector=ets", "selector.coverage_weight=0", "selector.lambda=0.5"],
    "base": ["search.width=8", "selector=rebase,best_of_n"],
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """Two real CLI sweeps (run in parallel): ETS (λ=0.5) x 2 seeds; REBASE, best-of-N x 2 seeds."""
    root = tmp_path_factory.mktemp("sweeps")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "ets", "-m", *COMMON, *extra,
                               f"hydra.sweep.dir={root / name}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name, extra in SWEEPS.items()]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    return root


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert main([str(sweep), "--out", str(out), "--samples", "16"]) == 0
    return out


def _table(md: str, heading: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the first Markdown table after ``heading``."""
    lines = md[md.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split(" | ")])
    return rows[0], rows[2:]


def test_report_has_one_row_per_run_with_its_summary_numbers(sweep, report):
    header, rows = _table((report / "report.md").read_text(), "## Runs")
    runs = {r.name: r for r in load_runs(sweep)}
    assert len(rows) == len(runs) == 6
    for row in rows:
        cell = dict(zip(header, row))
        run = runs[cell["run"]]
        summary = json.loads((run.path / "summary.json").read_text())
        config = run.config
        assert cell["selector"] == {"ets.selectors.ets.ETSSelector": "ETS",
                                    "ets.selectors.rebase.RebaseSelector": "Rebase",
                                    "ets.selectors.best_of_n.BestOfNSelector": "BestOfN"}[config["selector"]["_target_"]]
        assert int(cell["W"]) == config["search"]["width"]
        assert int(cell["seed"]) == config["search"]["seed"]
        assert cell["λ"] == ("0.5" if cell["selector"] == "ETS" else "—")
        assert cell["coverage w"] == ("0.0" if cell["selector"] == "ETS" else "—")
        for short, vote in (("wmaj", "weighted_majority"), ("maj", "majority"), ("bon", "best_of_n"),
                            ("cov", "coverage")):
            assert cell[f"acc {short}"] == f"{summary['accuracy'][vote]:.4f}"
        for backend in ("paper", "radix", "paged"):
            assert cell[f"KV {backend} mean"] == f"{summary['kv'][backend]['mean']:.2f}"
            assert int(cell[f"KV {backend} peak"]) == summary["kv"][backend]["peak"]
        assert int(cell["tokens"]) == summary["tokens_generated"]
        assert cell["wall s"] == f"{summary['wall_time_s']:.2f}"


def test_across_seeds_table_mean_and_ci_are_the_hand_computed_ones(sweep, report):
    header, rows = _table((report / "report.md").read_text(), "## Across seeds")
    runs = load_runs(sweep)
    assert len(rows) == 3
    for row in rows:
        cell = dict(zip(header, row))
        assert cell["n"] == "2" and cell["seeds"] == "0,1"
        pair = [r for r in runs if r.selector == cell["selector"]]
        assert len(pair) == 2
        for col, get, spec in (("acc wmaj", lambda r: r.summary["accuracy"]["weighted_majority"], ".4f"),
                               ("KV radix mean", lambda r: r.summary["kv"]["radix"]["mean"], ".2f")):
            a, b = (get(r) for r in pair)
            hw = student_t.ppf(0.975, 1) * abs(a - b) / 2  # s = |a-b|/sqrt(2), over sqrt(n=2)
            assert cell[col] == f"{(a + b) / 2:{spec}} ± {hw:{spec}}"


def test_mean_ci_by_hand():
    mean, hw = mean_ci([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5
    assert hw == pytest.approx(student_t.ppf(0.975, 3) * np.std([1, 2, 3, 4], ddof=1) / 2)
    assert mean_ci([0.7]) == (0.7, None)


@pytest.mark.parametrize("name", ["accuracy_vs_kv.png", "kv_per_depth.png", "budget_curve.png"])
def test_plots_are_real_images(report, name):
    with Image.open(report / name) as img:
        assert img.format == "PNG" and img.width >= 500 and img.height >= 350
        pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 0
    codes = pixels[..., 0].astype(np.int32) << 16 | pixels[..., 1].astype(np.int32) << 8 | pixels[..., 2]
    assert len(np.unique(codes)) > 10


def test_pareto_front_on_hand_made_points():
    # (kv, accuracy): minimise kv, maximise accuracy
    pts = [(10, 0.5), (20, 0.7), (15, 0.4), (30, 0.7), (25, 0.9), (10, 0.5), (5, 0.1), (40, 0.95)]
    front = pareto_front([p[0] for p in pts], [p[1] for p in pts])
    assert front == [6, 0, 5, 1, 4, 7]  # (15,.4) and (30,.7) are dominated; duplicates both kept
    assert pareto_front([], []) == []
    assert pareto_front([1.0], [0.0]) == [0]


def test_budget_curve_matches_the_run_at_full_n_and_the_correct_fraction_at_n1(sweep, report):
    assert "subsampled from one N=8 run" in (report / "report.md").read_text()
    for run in load_runs(sweep):
        if run.selector not in ("BestOfN", "Rebase") or run.get("search.seed") != 0:
            continue
        records = read_records(run.path / "problems.jsonl")
        grader = load_grader(run.config)
        curve = budget_curve(records, grader, n_source=8, samples=16, seed=3)
        rows = {r["n"]: r for r in curve["rows"]}
        assert list(rows) == budgets(8) == [1, 2, 4, 8]
        for vote, acc in run.summary["accuracy"].items():
            assert rows[8][vote] == pytest.approx(acc, abs=1e-12), (run.name, vote)
        fractions = []
        for rec in records:
            pool = trajectories(rec["tree"])
            ok = [t.answer is not None and grader.equivalent(rec["gold"], t.answer) for t in pool]
            fractions.append(sum(ok) / len(ok) if ok else 0.0)
        assert rows[1]["exact"]  # 8 singletons <= 16 samples: enumerated
        assert rows[1]["majority"] == pytest.approx(sum(fractions) / len(fractions), abs=1e-12)
        assert rows[1]["weighted_majority"] == pytest.approx(rows[1]["majority"], abs=1e-12)
        assert 0 < rows[1]["majority"] < 1


def test_find_runs_skips_runs_nested_in_runs_and_short_names(tmp_path):
    for d in ("s/a=1,b=2", "s/a=1,b=3", "s/a=1,b=3/rerun-1", "s/notarun"):
        (tmp_path / d).mkdir(parents=True)
        if d != "s/notarun":
            (tmp_path / d / "summary.json").write_text("{}")
            (tmp_path / d / "config.yaml").write_text("{}")
    assert find_runs(tmp_path) == [tmp_path / "s/a=1,b=2", tmp_path / "s/a=1,b=3"]
    assert find_runs(tmp_path / "s/a=1,b=3/rerun-1") == [tmp_path / "s/a=1,b=3/rerun-1"]
    assert short_names(["s/a=1,b=2", "s/a=1,b=3"]) == ["s/b=2", "s/b=3"]


def test_report_wandb_logs_tables_and_images(sweep, tmp_path, monkeypatch):
    for key, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                       "WANDB_CACHE_DIR": str(tmp_path / "cache"),
                       "WANDB_DATA_DIR": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "report"
    assert main([str(sweep / "base"), "--out", str(out), "--budget", "none", "--wandb"]) == 0
    (run_dir,) = offline_runs(out)
    logged = read_offline_run(run_dir)
    assert logged.exit_code == 0
    assert logged.summary["report/runs"]["_type"] == "table-file"
    images = sorted(p.name for p in (run_dir / "files" / "media" / "images").rglob("*.png"))
    assert [n.split("_0_")[0] for n in images] == ["accuracy_vs_kv", "kv_per_depth"]  # no budget
    table = json.loads(next((run_dir / "files" / "media" / "table").rglob("runs_*.table.json")).read_text())
    assert len(table["data"]) == 4 and table["columns"][0] == "run"


# --- KV totals, ratios to a baseline, per-depth curves: two hand-made runs ------------------


def _kv_record(pid: str, before: list[int], after: list[int], newest: int) -> dict:
    kv = {"per_depth": before, "mean": sum(before) / len(before), "peak": max(before),
          "total": sum(before), "after_pruning": {"per_depth": after},
          "newest_step": {"total": newest}}
    return {"id": pid, "correct": dict.fromkeys(VOTES, True), "tokens": 1, "kv": {"paper": kv}}


HAND_RUNS = {  # run: (selector, [(per-depth KV before pruning, after pruning, newest-step tokens)])
    "rebase": ("rebase.RebaseSelector", [([10, 20, 30], [5, 10, 15], 30), ([40], [20], 12)]),
    "ets": ("ets.ETSSelector", [([10, 10], [4, 6], 8), ([20], [10], 4)]),
}


@pytest.fixture
def hand_runs(tmp_path) -> Path:
    for name, (target, problems) in HAND_RUNS.items():
        d = tmp_path / name
        d.mkdir()
        records = [_kv_record(f"p{i}", *p) for i, p in enumerate(problems)]
        with open(d / "problems.jsonl", "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        (d / "summary.json").write_text(json.dumps(summarize(records, wall_time_s=1.0)))
        (d / "config.yaml").write_text(json.dumps(
            {"selector": {"_target_": f"ets.selectors.{target}"}, "search": {"width": 4, "seed": 0}}))
    return tmp_path


def test_kv_table_ratios_to_the_baseline_by_hand(hand_runs, tmp_path):
    out = tmp_path / "out"
    assert main([str(hand_runs), "--out", str(out), "--budget", "none", "--baseline", "rebase"]) == 0
    md = (out / "report.md").read_text()
    header, rows = _table(md, "## KV")
    cells = {r[0]: dict(zip(header, r)) for r in rows}
    assert len(rows) == 2 and header[-2:] == ["mean × rebase", "total × rebase"]
    # rebase: mean over 4 calls (10+20+30+40)/4 = 25, total (60 + 40)/2 = 50
    # ets: mean (10+10+20)/3 = 13.33, total (20 + 20)/2 = 20 → ratios 25/13.33 = 1.875, 50/20 = 2.5
    assert cells["rebase"]["mean"] == "25.00" and cells["rebase"]["total"] == "50.0"
    assert cells["ets"]["mean"] == "13.33" and cells["ets"]["total"] == "20.0"
    assert cells["ets"]["mean × rebase"] == "1.875" and cells["ets"]["total × rebase"] == "2.500"
    assert cells["rebase"]["mean × rebase"] == "1.000" and cells["rebase"]["total × rebase"] == "1.000"
    # after pruning: rebase (5+10+15+20)/4 = 12.5, total (30+20)/2 = 25; ets 20/3, (10+10)/2
    assert (cells["rebase"]["after pruning mean"], cells["rebase"]["after pruning total"]) == ("12.50", "25.0")
    assert (cells["ets"]["after pruning mean"], cells["ets"]["after pruning total"]) == ("6.67", "10.0")
    # newest-step share: (30+12)/100 and (8+4)/40
    assert cells["rebase"]["newest-step share"] == "0.420" and cells["ets"]["newest-step share"] == "0.300"
    runs_header, runs_rows = _table(md, "## Runs")
    assert {dict(zip(runs_header, r))["KV paper total"] for r in runs_rows} == {"50.0", "20.0"}


def test_kv_per_depth_counts_stopped_problems_as_zero(hand_runs):
    runs = {r.name: r for r in load_runs(hand_runs)}
    assert kv_per_depth(runs["rebase"]) == {"paper": [25.0, 10.0, 15.0]}  # (10+40)/2, (20+0)/2, (30+0)/2
    assert kv_per_depth(runs["ets"]) == {"paper": [15.0, 5.0]}
    for run in runs.values():  # the curve sums to the run's total
        assert sum(kv_per_depth(run)["paper"]) == pytest.approx(run.summary["kv"]["paper"]["total"])


def test_baseline_must_name_exactly_one_run(hand_runs):
    runs = load_runs(hand_runs)
    assert pick_baseline(runs, "ets").name == "ets"
    assert pick_baseline(runs, str(hand_runs / "rebase")).name == "rebase"
    with pytest.raises(SystemExit, match="'nope' matches no run; runs: ets, rebase"):
        pick_baseline(runs, "nope")
    with pytest.raises(SystemExit, match="'e' matches 2 runs"):
        pick_baseline(runs, "e")
