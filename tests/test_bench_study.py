"""bench/search.py (issue 8 §5 study): pooling of seeds, KV ratios and the run plan,
against hand computations."""

from __future__ import annotations

import pytest

from bench.search import PAPER_LAMBDA_S, plan, pool, ratios
from ets.rundir.results import VOTES


def _rec(correct: bool, paper: list[int], radix: list[int], tokens: int, depths: int) -> dict:
    return {"correct": dict.fromkeys(VOTES, correct), "tokens": tokens, "depths": depths,
            "kv": {"paper": {"per_depth": paper}, "radix": {"per_depth": radix}}}


def test_pool_over_problems_and_seeds_by_hand():
    seed0 = [_rec(True, [10, 20], [5, 5], 100, 2), _rec(False, [30], [6], 50, 1)]
    seed1 = [_rec(True, [40], [8], 70, 1), _rec(True, [0, 10], [1, 3], 30, 2)]
    st0 = {"selection_calls": 2, "candidates": 10, "clustered_candidates": 10, "clusters": 5,
           "candidates_kept": 6, "rebase_pruned": 1, "solve_s": 9.0}
    st1 = {"selection_calls": 2, "candidates": 6, "clustered_candidates": 6, "clusters": 3,
           "candidates_kept": 2, "rebase_pruned": 0}
    row = pool([(seed0, st0), (seed1, st1)])
    assert row["pairs"] == 4 and row["accuracy"] == 0.75
    # values 1,0,1,1: sd 0.5, t(0.975, 3) = 3.182446 -> 3.182446 * 0.5 / 2
    assert row["ci95"] == pytest.approx(3.182446 * 0.25, rel=1e-6)
    # mean over all six (problem, seed, call) measurements; total: mean of per-pair sums
    assert row["kv"]["paper"] == {"mean": pytest.approx(110 / 6), "total": 27.5}
    assert row["kv"]["radix"] == {"mean": pytest.approx(28 / 6), "total": 7.0}
    assert row["tokens_per_problem"] == 62.5 and row["depths"] == 1.5
    st = row["selector_stats"]
    assert st["clusters_per_candidate"] == 0.5  # 8 clusters / 16 candidates, pooled
    assert st["kept_per_call"] == 2.0 and st["rebase_pruned"] == 1
    assert "solve_s" not in st  # timings are not summed into the study


def test_ratios_are_rebase_over_the_row():
    base = {"kv": {"paper": {"mean": 30.0, "total": 300.0}, "radix": {"mean": 20.0, "total": 100.0}}}
    row = {"kv": {"paper": {"mean": 20.0, "total": 120.0}, "radix": {"mean": 20.0, "total": 0.0}}}
    r = ratios(base, row)
    assert r["paper.mean"] == 1.5 and r["paper.total"] == 2.5 and r["radix.mean"] == 1.0
    assert r["radix.total"] != r["radix.total"]  # nan, not a division error


def test_plan_uses_the_paper_lambdas_and_a_rebase_baseline_per_seed():
    jobs = plan([16, 256], {16: (5, 2), 256: (3, 1)}, grid=(4, 1))
    main = [j for j in jobs if j.group == "main"]
    assert sorted((j.method, j.width, j.seed) for j in main) == [
        ("ets", 16, 0), ("ets", 16, 1), ("ets", 256, 0),
        ("rebase", 16, 0), ("rebase", 16, 1), ("rebase", 256, 0)]
    for j in main:
        if j.method == "ets":
            assert f"selector.coverage_weight={PAPER_LAMBDA_S[j.width]}" in j.overrides
            assert "selector.lambda=1.0" in j.overrides and "selector.temperature=0.2" in j.overrides
    grid = [j for j in jobs if j.group == "grid"]
    assert len(grid) == 17 and {j.width for j in grid} == {64}
    assert len({(j.lambda_b, j.lambda_s) for j in grid if j.method == "ets"}) == 16
    assert len({j.name for j in jobs}) == len(jobs)  # one run directory each
