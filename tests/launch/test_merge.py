"""``ets.rundir.merge``: shard runs merge into the unsharded run; bad inputs fail clearly."""

from __future__ import annotations

import json
import shutil

import pytest

from ets.rundir.merge import MergeError, main, merge
from ets.rundir.results import read_records
from ets.rundir.run import run

TINY = ["+experiment=synthetic", "dataset.n=7", "search.width=4", "selector.coverage_weight=0"]
COMPARED = ("problems", "accuracy", "kv", "tokens_generated")


@pytest.fixture
def make_run(compose_cfg, tmp_path):
    """``make_run(name, *overrides)`` runs the tiny synthetic experiment into ``tmp_path/name``."""

    def _run(name: str, *overrides: str):
        out = tmp_path / name
        run(compose_cfg(*TINY, *overrides), out)
        return out

    return _run


@pytest.fixture
def shards(make_run):
    """Three shard runs of the tiny experiment below ``shards/``."""
    return [make_run(f"shards/s{i}", f"dataset.shard={i}/3") for i in range(3)]


def test_merged_shards_equal_the_unsharded_run(make_run, shards, tmp_path):
    whole = make_run("whole")
    summary = merge(tmp_path / "shards")
    expected = json.loads((whole / "summary.json").read_text())
    assert {k: summary[k] for k in COMPARED} == {k: expected[k] for k in COMPARED}
    assert summary["shards"] == 3 and summary["complete"] is True
    merged = tmp_path / "shards" / "merged"
    assert json.loads((merged / "summary.json").read_text())["problems"] == 7
    ids = [r["id"] for r in read_records(merged / "problems.jsonl")]
    assert ids == [f"syn-{i:05d}" for i in range(7)]  # dataset order restored
    assert "shard: null" in (merged / "config.yaml").read_text()
    merge(tmp_path / "shards")  # again: the earlier merged/ is not taken for a shard


def _shard_sums(shards) -> dict[str, float]:
    sums = [json.loads((s / "summary.json").read_text()) for s in shards]
    return {k: sum(x[k] for x in sums) for k in ("policy_calls", "prm_calls", "wall_time_s")}


def test_identical_duplicates_are_dropped(shards, tmp_path):
    shutil.copytree(shards[1], tmp_path / "shards" / "s1-again")
    summary = merge(tmp_path / "shards")
    assert summary["problems"] == 7
    # its records are deduplicated, and so are its calls: the shard is counted once
    assert {k: summary[k] for k in ("policy_calls", "prm_calls")} == \
        {k: v for k, v in _shard_sums(shards).items() if k != "wall_time_s"}


def test_a_rerun_inside_a_shard_is_not_a_shard(shards, tmp_path):
    from ets.rundir.rerun import rerun

    comparison, nested = rerun(shards[1])
    assert comparison.identical and nested == shards[1] / "rerun-1"
    summary = merge(tmp_path / "shards")
    # before: rerun-1 was taken for a fourth shard dir: calls 15 instead of 11 here
    assert summary["merged_from"] == [str(s) for s in shards]
    expected = _shard_sums(shards)
    assert {k: summary[k] for k in ("policy_calls", "prm_calls")} == \
        {k: expected[k] for k in ("policy_calls", "prm_calls")}
    assert summary["wall_time_s"] == pytest.approx(expected["wall_time_s"])


def test_an_unreadable_shard_file_is_named(shards, tmp_path):
    summary = shards[0] / "summary.json"
    summary.write_text(summary.read_text()[:50])
    with pytest.raises(MergeError, match=r"s0/summary.json line \d+: invalid JSON"):
        merge(tmp_path / "shards")


def test_conflicting_duplicates_fail(shards, tmp_path):
    copy = tmp_path / "shards" / "s1-again"
    shutil.copytree(shards[1], copy)
    lines = (copy / "problems.jsonl").read_text().splitlines(keepends=True)
    rec = json.loads(lines[0])
    rec["tokens"] += 1
    lines[0] = json.dumps(rec) + "\n"
    (copy / "problems.jsonl").write_text("".join(lines))
    with pytest.raises(MergeError, match=f"conflicting records for {rec['id']}.*tokens"):
        merge(tmp_path / "shards")


def test_missing_shard_fails(shards, tmp_path):
    shutil.rmtree(shards[2])
    with pytest.raises(MergeError, match="missing shards: 2/3"):
        merge(tmp_path / "shards")
    assert not (tmp_path / "shards" / "merged").exists()


def test_unfinished_shard_fails_unless_allowed(shards, tmp_path):
    path = shards[0] / "problems.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0])
    with pytest.raises(MergeError, match="1 of 3 problems not done|2 of 3 problems not done"):
        merge(tmp_path / "shards")
    summary = merge(tmp_path / "shards", allow_incomplete=True)
    assert summary["problems"] == 5 and summary["complete"] is False


def test_different_experiments_fail(make_run, tmp_path):
    make_run("mixed/a", "dataset.shard=0/2")
    make_run("mixed/b", "dataset.shard=1/2", "search.width=8")
    with pytest.raises(MergeError, match="search.width"):
        merge(tmp_path / "mixed")


def test_cli(shards, tmp_path, capsys):
    assert main([str(tmp_path / "shards"), "--out", str(tmp_path / "out")]) == 0
    assert "merged 3 shards" in capsys.readouterr().out
    assert (tmp_path / "out" / "summary.json").exists()
    assert main([str(tmp_path / "nothing-here")]) == 1
    assert "no run dirs" in capsys.readouterr().err
