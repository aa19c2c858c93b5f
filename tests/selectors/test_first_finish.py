"""First Finish Search as published (``selector=ffs_sync`` / ``ffs_async``): hand-computed
races with a scripted policy, the granularity (step vs fixed token chunks), the token count,
configs, and end-to-end runs (synthetic CLI, SmolLM2)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hydra.utils import instantiate

from ets.config import validate
from ets.rundir.run import build_search
from ets.selectors.first_finish import AsyncFFS, FirstFinish, SyncFFS
from tests.conftest import ROOT
from tests.core import golden
from tests.core.helpers import ScriptedPolicy, make_search, problems, run_all

# Step lengths per sample (sample i = the root's i-th child); a sample's last step states
# its answer (sample 3 has none: it runs into the 40-token cap at its second step).
LENS = {0: [10, 10, 10], 1: [4, 4, 4, 4], 2: [5, 5, 15], 3: [20, 20, 20]}
ANSWERS = {0: "5", 1: "7", 2: "6"}  # gold is "7"


def race(lens, answers, eos=()):
    def script(context, j, req):
        steps = context.split("\n", 1)[1].split("\n\n")[:-1]
        sample = j if not steps else int(steps[0][1])
        r = len(steps)
        last = r == len(lens[sample]) - 1
        if last and sample in eos:  # ends by EOS without stating an answer
            return f"s{sample} r{r} done\n\n", lens[sample][r], "eos"
        text = f"s{sample} r{r}" + (f"\nThe answer is {answers[sample]}" if last and sample in answers else "")
        return text + "\n\n", lens[sample][r], "stop"
    return script


def run(factory, lens=LENS, answers=ANSWERS, eos=()):
    policy = ScriptedPolicy(race(lens, answers, eos))
    search = make_search(policy, factory, width=len(lens), max_tokens=40)
    [rec] = run_all(search, problems(1))
    return rec, policy, search


def leaves(rec):
    """Each sample's newest step (the tree is one chain per sample)."""
    parents = {n["parent"] for n in rec["tree"]}
    return [n for n in rec["tree"][1:] if n["id"] not in parents]


def test_sync_stops_every_sample_in_the_first_finishers_round():
    # cum tokens per round: s0 10/20/30 (answers 5), s1 4/8/12/16 (answers 7 at round 4),
    # s2 5/10/25 (answers 6), s3 20/40 (token cap at round 2: truncated, not a finish).
    # Round 3: s0 (30) and s2 (25) complete -> s2 wins (fewer tokens); s1 stops at 12.
    rec, policy, search = run(SyncFFS())
    assert rec["predictions"]["weighted_majority"] == "6" and rec["votes"][0]["count"] == 1
    assert rec["tokens"] == 30 + 12 + 25 + 40 == search.counters.tokens_generated
    assert rec["depths"] == 3
    by_text = {n["text"].split("\n")[0]: n for n in leaves(rec)}
    assert by_text["s1 r2"]["finished"] is False  # left unfinished, its 12 tokens counted
    assert by_text["s3 r1"]["finish_reason"] == "length"
    assert sorted(n["answer"] for n in rec["tree"] if n["finished"] and n["answer"]) == ["5", "6"]
    # token-level stop at the winner's 25 tokens: 25 + 12 + 25 + 25
    assert rec["strategy"] == {"rounds": 3, "stopped": 1, "winner_tokens": 25,
                               "token_level_tokens": 87, "overshoot_tokens": 20}
    # one request of n=4, then one step per live sample: 4 in round 2, 3 in round 3
    assert [r.n for r in policy.requests] == [4] + [1] * 7
    assert all(r.temperature is None for r in policy.requests)  # the policy's sampling
    # KV measured at the two rounds that continued; none at the stop
    assert all(len(v["per_depth"]) == 2 for v in rec["kv"].values())


def test_async_returns_the_sample_that_completes_with_fewest_tokens():
    # After round 3 the best completion is s2 at 25 tokens; s1 holds 12 < 25 and could
    # still finish first, so it goes on: round 4, it completes at 16 tokens and wins.
    rec, policy, search = run(AsyncFFS())
    assert rec["predictions"]["weighted_majority"] == "7" and rec["correct"]["weighted_majority"]
    assert rec["tokens"] == 30 + 16 + 25 + 40 == search.counters.tokens_generated
    assert rec["depths"] == 4
    assert rec["strategy"] == {"rounds": 4, "stopped": 0, "winner_tokens": 16,
                               "token_level_tokens": 64, "overshoot_tokens": 47}
    assert [r.n for r in policy.requests] == [4] + [1] * 7 + [1]
    assert all(len(v["per_depth"]) == 3 for v in rec["kv"].values())


def test_async_stops_samples_that_cannot_finish_first():
    # s0 completes at round 1 with 10 tokens; s1 holds 12 already and stops at once,
    # s2 (6 < 10) goes on and completes at 14: s0 wins after round 2, s1 never moved.
    lens = {0: [10], 1: [12, 1], 2: [6, 8]}
    rec, policy, _ = run(AsyncFFS(), lens, {0: "7", 1: "1", 2: "2"})
    assert rec["predictions"]["weighted_majority"] == "7"
    assert rec["tokens"] == 10 + 12 + 14
    assert [r.n for r in policy.requests] == [3, 1]  # only s2 in round 2
    assert rec["strategy"]["stopped"] == 1 and rec["strategy"]["token_level_tokens"] == 10 + 10 + 10
    # Sync stops in round 1 with s0 (s2 is cut off at 6 tokens)
    rec, _, _ = run(SyncFFS(), lens, {0: "7", 1: "1", 2: "2"})
    assert rec["tokens"] == 10 + 12 + 6 and rec["strategy"]["stopped"] == 2


@pytest.mark.parametrize("factory", [SyncFFS, AsyncFFS])
def test_ties_go_to_the_lowest_sample_and_eos_without_answer_counts(factory):
    # s1 and s2 complete in round 2 with 8 tokens each: s1 wins the tie, by index
    rec, _, _ = run(factory(), {0: [9, 9], 1: [4, 4], 2: [5, 3]}, {0: "1", 1: "7", 2: "3"})
    assert rec["predictions"]["majority"] == "7"
    # an EOS without an answer is a finish: the trace ends first and there is no answer
    rec, _, _ = run(factory(), {0: [9, 9], 1: [4, 4], 2: [5, 30]}, {0: "1", 2: "3"}, eos=(1,))
    assert rec["predictions"]["majority"] is None and rec["strategy"]["winner_tokens"] == 8


@pytest.mark.parametrize("factory", [SyncFFS, AsyncFFS])
def test_no_completion_no_answer(factory):
    # every sample hits the 40-token cap: truncated traces do not win
    rec, _, _ = run(factory(), {0: [25, 25], 1: [30, 30]}, {})
    assert rec["predictions"]["weighted_majority"] is None
    assert rec["tokens"] == 80 and "winner_tokens" not in rec["strategy"]


def synthetic_records(selector, *extra):
    cfg = golden.compose(*golden.WORLDS["synthetic"], f"selector={selector}",
                         "dataset.limit=12", *extra)
    search, dataset = build_search(cfg)
    return {r["id"]: r for r in golden.run_search(search, dataset)}


def test_fixed_token_chunks_make_sync_and_async_identical():
    """With equal chunks every live sample holds the same tokens before a round, so the
    first round with a completion holds the token-level first finisher: same records."""
    chunks = ("expander=fixed_tokens", "expander.tokens=16")
    sync, asyn = synthetic_records("ffs_sync", *chunks), synthetic_records("ffs_async", *chunks)
    assert len(sync) == 12 and sync == asyn
    for r in sync.values():  # each stopped sample overshoots by less than one chunk
        s = r["strategy"]
        if "winner_tokens" in s:
            assert s["overshoot_tokens"] < 16 * 8


def test_with_steps_async_finds_the_token_level_first_finisher():
    """With whole steps the race in rounds is not a race in tokens: Async never returns a
    longer winner than Sync and differs on some problems of the synthetic world."""
    sync, asyn = synthetic_records("ffs_sync"), synthetic_records("ffs_async")
    longer = 0
    for pid, r in sync.items():
        a = asyn[pid]["strategy"]
        assert a.get("winner_tokens", 0) <= r["strategy"].get("winner_tokens", 0)
        longer += a.get("winner_tokens", 0) < r["strategy"].get("winner_tokens", 0)
        assert asyn[pid]["tokens"] >= r["tokens"]  # it ran at least Sync's rounds
    assert longer >= 1


def test_configs_instantiate(compose_cfg):
    for name, cls in (("ffs_sync", SyncFFS), ("ffs_async", AsyncFFS)):
        cfg = compose_cfg(f"selector={name}")
        validate(cfg)
        made = instantiate(cfg.selector)
        assert isinstance(made, cls) and made.mode == name.split("_")[1]
    with pytest.raises(ValueError, match="mode='fast' is invalid; allowed: sync, async"):
        FirstFinish("fast")


@pytest.mark.parametrize("selector", ["ffs_sync", "ffs_async"])
def test_cli_synthetic(tmp_path, selector):
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.limit=4", "search.width=6",
         f"selector={selector}", "expander=fixed_tokens", "expander.tokens=24", "tracker=local",
         f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    for r in rows:
        check_race(r, width=6)


def check_race(r, width):
    """A record of a fixed-chunk race: the winner recomputed from the tree."""
    tree = r["tree"]
    assert r["tokens"] == sum(n["tokens"] for n in tree[1:])
    assert len([n for n in tree if n["depth"] == 1]) == width
    ends = leaves(r)
    assert len(ends) == width  # one chain per sample
    s = r["strategy"]
    assert s["rounds"] == r["depths"]
    done = [n for n in ends if n["finish_reason"] in ("answer", "eos")]
    if not done:
        assert r["predictions"]["majority"] is None
        return
    cum = {}
    for n in tree[1:]:
        cum[n["id"]] = cum.get(n["parent"], 0) + n["tokens"]
    first = min(n["depth"] for n in done)
    winner = min((n for n in done if n["depth"] == first), key=lambda n: (cum[n["id"]], n["id"]))
    assert r["predictions"]["majority"] == winner["answer"]
    assert s["winner_tokens"] == cum[winner["id"]]
    # every sample stopped in the winner's round (or was truncated or finished before)
    assert all(n["depth"] == first for n in ends if not n["finished"])
    assert s["token_level_tokens"] == sum(min(cum[n["id"]], cum[winner["id"]]) for n in ends)
    assert s["stopped"] == sum(not n["finished"] for n in ends)


@pytest.mark.slow
@pytest.mark.parametrize("selector", ["ffs_sync", "ffs_async"])
def test_smollm2(selector):
    """SmolLM2-135M (transformers), one demo problem, 3 samples racing in 8-token chunks."""
    from ets.rundir.results import ResultsFile
    from ets.rundir.run import run as run_cfg

    cfg = golden.compose(*golden.WORLDS["smollm2"], "dataset.limit=1", "search.width=3",
                         "search.max_step_tokens=8", "search.max_tokens=48", "search.max_depth=6",
                         f"selector={selector}", "expander=fixed_tokens", "expander.tokens=8")
    with tempfile.TemporaryDirectory() as tmp:
        run_cfg(cfg, Path(tmp) / "run")
        [r] = ResultsFile(Path(tmp) / "run" / "problems.jsonl").load()
    check_race(r, width=3)
    assert all(n["tokens"] <= 8 for n in r["tree"][1:])
