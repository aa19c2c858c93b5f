"""Run-directory integrity (issue 12): locks, resume checks, exact counters over attempts,
bad lines set aside, whole-line writes, unreadable files named. Real processes and
signals on the synthetic world."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ets.rundir.integrity import RunDirError, RunLock
from ets.rundir.results import ResultsFile, read_records, write_json
from ets.rundir.run import run
from tests.conftest import ROOT, crash_policy_at

BASE = ["+experiment=synthetic", "search.width=8", "search.concurrency=2"]
SMALL = [*BASE, "dataset.limit=6"]
# One problem in flight: a problem's policy/PRM calls are then its own depth iterations, so
# counters over attempts can be checked against the records exactly.
SERIAL = ["+experiment=synthetic", "dataset.limit=12", "search.width=8", "search.concurrency=1"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def cli(out: Path, *overrides: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ets", *overrides, f"hydra.run.dir={out}"],
                            cwd=ROOT, env=ENV, text=True, **kw)


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def attempts(out: Path) -> list[dict]:
    return json.loads((out / "run.json").read_text())["attempts"]


# ---- 1. resume refuses another config ------------------------------------------------
def test_resume_refuses_a_different_config(compose_cfg, tmp_path):
    out = tmp_path / "run"
    first = run(compose_cfg(*SMALL, "selector=rebase"), out)
    saved = (out / "config.yaml").read_text()
    with pytest.raises(RunDirError) as err:
        run(compose_cfg(*SMALL, "selector=beam"), out)
    assert "selector._target_" in str(err.value) and "resume_force" in str(err.value)
    assert (out / "config.yaml").read_text() == saved  # nothing overwritten
    assert len(attempts(out)) == 1
    # the tracker and the dataset selection may change; the results are REBASE's still
    again = run(compose_cfg(*BASE, "selector=rebase", "tracker=local", "dataset.limit=5"), out)
    assert again["problems"] == 5
    forced = run(compose_cfg(*SMALL, "selector=beam", "+resume_force=true"), out)
    assert forced["accuracy"] == first["accuracy"]  # nothing re-run, but it is on record:
    assert "selector._target_" in attempts(out)[-1]["resume_forced"]


def test_a_config_saved_with_moved_targets_still_loads_reruns_and_resumes(compose_cfg, tmp_path):
    """A ``config.yaml`` written before the package regroup names the embedder and grader at
    their old paths (``ets.cluster``, ``ets.grading``; now ``ets.selectors.cluster``, ``ets.datasets.grading``):
    its grader still loads (reports), ``python -m ets.rerun`` re-executes it identically,
    and resuming it with today's config is not refused as another experiment."""
    from ets.datasets.grading import NumericGrader
    from ets.rundir.rerun import main as rerun_main
    from ets.rundir.runs import flatten, load_config, load_grader

    out = tmp_path / "run"
    tiny = [*BASE, "dataset.limit=3", "selector=ets"]
    first = run(compose_cfg(*tiny), out)
    today = (out / "config.yaml").read_text()
    assert "ets.selectors.cluster.SentenceEmbedder" in today and "ets.datasets.grading.NumericGrader" in today
    before = today.replace("ets.selectors.cluster.", "ets.cluster.").replace("ets.datasets.grading.", "ets.grading.")
    (out / "config.yaml").write_text(before)
    saved = load_config(out / "config.yaml")
    leaves = flatten(saved)  # the saved (old) paths compare as today's
    assert (saved["dataset"]["grader"]["_target_"], leaves["dataset.grader._target_"]) == \
        ("ets.grading.NumericGrader", "ets.datasets.grading.NumericGrader")
    assert (saved["selector"]["embedder"]["_target_"], leaves["selector.embedder._target_"]) == \
        ("ets.cluster.SentenceEmbedder", "ets.selectors.cluster.SentenceEmbedder")
    assert isinstance(load_grader(saved), NumericGrader)
    assert rerun_main([str(out), "--out", str(tmp_path / "rerun")]) == 0  # identical records
    again = run(compose_cfg(*tiny), out)  # resume: the same experiment, nothing re-run
    assert again["accuracy"] == first["accuracy"] and again["problems"] == 3
    assert "resume_forced" not in attempts(out)[-1]


def test_cli_refusal_exits_2_naming_the_keys(compose_cfg, tmp_path):
    out = tmp_path / "run"
    run(compose_cfg(*SMALL), out)
    proc = cli(out, *SMALL, "search.width=4", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    assert "search.width: saved 8, now 4" in err and "Traceback" not in err


# ---- 2. per-attempt accounting -------------------------------------------------------
class Crash(RuntimeError):
    pass


def test_counters_are_exact_over_attempts(compose_cfg, tmp_path, monkeypatch):
    cfg = compose_cfg(*SERIAL)
    whole = run(cfg, tmp_path / "whole")
    real = crash_policy_at(monkeypatch, 21, Crash("killed"))  # mid problem 6
    out = tmp_path / "resumed"
    with pytest.raises(Crash):
        run(cfg, out)
    import ets.rundir.run as ets_run

    monkeypatch.setattr(ets_run, "build_search", real)
    resumed = run(cfg, out)
    a = attempts(out)
    assert [x["status"] for x in a] == ["failed", "finished"]
    assert a[0]["total"]["policy_calls"] == 20  # the 21st call raised
    records = read_records(out / "problems.jsonl")
    depths = sum(r["depths"] for r in records)
    # before: the failed attempt's calls were lost; now both are summed, minus the calls of
    # the problem in flight when it failed (re-run by the second attempt)
    for key in ("policy_calls", "prm_calls"):
        assert resumed[key] == whole[key] == depths
    lost = resumed["lost_to_interruptions"]["policy_calls"]
    assert lost == a[0]["total"]["policy_calls"] - a[0]["committed"]["policy_calls"] > 0
    for key in ("solves", "presolved"):  # selector stats summed over attempts, not the last
        assert resumed["selector_stats"][key] == whole["selector_stats"][key]
    assert resumed["attempts"] == 2
    assert resumed["wall_time_s"] >= sum(r["wall_time_s"] for r in records)


# ---- 13. kill -9 twice, then resume --------------------------------------------------
def test_kill_9_twice_then_resume_counts_every_attempt(compose_cfg, tmp_path):
    out = tmp_path / "run"
    for k in (2, 6):
        proc = cli(out, *SERIAL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 240
        while lines(out / "problems.jsonl") < k and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with open(out / "problems.jsonl", "ab") as fh:  # and a record torn by the kill
        fh.write(b'{"id": "syn-00011", "gold"')
    proc = cli(out, *SERIAL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    whole = run(compose_cfg(*SERIAL), tmp_path / "whole")
    a = attempts(out)
    assert [x["status"] for x in a] == ["killed", "killed", "finished"]
    assert not list(out.glob(".*.tmp"))  # a temp file of a killed write is cleaned up
    assert all(x["total"]["policy_calls"] > 0 for x in a[:2])
    records = read_records(out / "problems.jsonl")
    assert sorted(r["id"] for r in records) == [f"syn-{i:05d}" for i in range(12)]
    for key in ("policy_calls", "prm_calls"):
        assert summary[key] == whole[key] == sum(r["depths"] for r in records)
        assert summary[key] + summary["lost_to_interruptions"][key] == \
            sum(x["total"][key] for x in a)
    assert summary["selector_stats"]["solves"] == whole["selector_stats"]["solves"]
    assert summary["wall_time_s"] == pytest.approx(sum(x["committed"]["wall_time_s"] for x in a))
    assert summary["wall_time_s"] >= sum(r["wall_time_s"] for r in records)


# ---- 9. two processes, one directory -------------------------------------------------
def test_two_launches_on_one_dir_one_fails_naming_the_other(tmp_path):
    out = tmp_path / "run"
    args = ["+experiment=synthetic", "dataset.limit=30", "search.width=8", "search.concurrency=1"]
    procs = [cli(out, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [p.communicate(timeout=400) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], [r[1][-1500:] for r in results]
    winner, loser = (0, 1) if procs[0].returncode == 0 else (1, 0)
    assert f"in use by pid {procs[winner].pid}" in results[loser][1]
    ids = [r["id"] for r in read_records(out / "problems.jsonl")]
    assert len(ids) == len(set(ids)) == 30  # before: 2 records per problem
    assert json.loads((out / "summary.json").read_text())["problems"] == 30


def test_lock_wait_waits_for_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    log = tmp_path / "log.txt"
    with RunLock(out):
        with open(log, "w") as fh:
            proc = cli(out, *SMALL, "+lock_wait=true", stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 240
        while "waiting for it" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert f"in use by pid {os.getpid()}" in log.read_text()
        time.sleep(0.5)
        assert not (out / "problems.jsonl").exists()  # it waited, running nothing
    assert proc.wait(timeout=300) == 0, log.read_text()[-2000:]
    assert len(read_records(out / "problems.jsonl")) == 6


def _write_many(path: str, n: int) -> None:
    for i in range(n):
        write_json(Path(path), {"writer": os.getpid(), "i": i})


def test_atomic_writes_of_two_processes_never_collide(tmp_path):
    target = tmp_path / "summary.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_write_many, args=(str(target), 300)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    # before: both wrote summary.tmp and one's os.replace found it gone (FileNotFoundError)
    assert [p.exitcode for p in procs] == [0, 0]
    assert json.loads(target.read_text())["i"] == 299
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp files left


# ---- 10. a corrupted middle line -----------------------------------------------------
def test_a_bad_middle_line_is_set_aside_and_nothing_valid_is_lost(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg(*SMALL)
    out = tmp_path / "run"
    first = run(cfg, out)
    raw = (out / "problems.jsonl").read_bytes().split(b"\n")
    bad = raw[2][:40] + b"\xff\x00garbage"  # line 3 of 6 damaged in place
    raw[2] = bad
    raw.insert(4, b"")  # and a blank line: harmless, skipped
    (out / "problems.jsonl").write_bytes(b"\n".join(raw))
    kept = [raw[i] for i in (0, 1, 3, 5, 6)]
    with caplog.at_level(logging.WARNING, logger="ets"):
        assert len(read_records(out / "problems.jsonl")) == 5  # read-only: skipped, named
        assert "problems.jsonl line 3" in caplog.text
        again = run(cfg, out)
    # before: the file was cut at line 3 and 3 valid records were deleted
    assert "line 3: not UTF-8" in caplog.text and "moved to problems.jsonl.corrupt" in caplog.text
    assert (out / "problems.jsonl.corrupt").read_bytes() == bad + b"\n"
    body = (out / "problems.jsonl").read_bytes().split(b"\n")
    assert body[:5] == kept  # the valid records, byte for byte, then the re-run problem
    assert again["problems"] == 6 and again["accuracy"] == first["accuracy"]


def test_only_an_unterminated_last_line_is_torn(tmp_path):
    path = tmp_path / "problems.jsonl"
    rec = {"id": "a", "correct": {}, "kv": {}, "tokens": 1}
    whole = json.dumps(rec).encode() + b"\n"
    path.write_bytes(whole + b'{"id": "b", "correct": {}, "kv"')
    assert [r["id"] for r in ResultsFile(path).load()] == ["a"]
    assert path.read_bytes() == whole
    path.write_bytes(whole + b"[1, 2]\n")  # terminated but not a record: set aside, not dropped
    assert [r["id"] for r in ResultsFile(path).load()] == ["a"]
    assert path.read_bytes() == whole
    assert (tmp_path / "problems.jsonl.corrupt").read_bytes() == b"[1, 2]\n"


# ---- 11. short writes ----------------------------------------------------------------
SHORT_WRITE = textwrap.dedent("""
    import resource, signal, sys
    from ets.rundir.results import ResultsFile
    path, limit = sys.argv[1], int(sys.argv[2])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit, write() is cut short
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    ResultsFile(path).append({"id": "big", "correct": {}, "kv": {}, "tokens": 0,
                              "text": "x" * 5000})
""")


def test_a_short_write_fails_and_leaves_whole_lines(tmp_path):
    path = tmp_path / "problems.jsonl"
    first = json.dumps({"id": "a", "correct": {}, "kv": {}, "tokens": 1}).encode() + b"\n"
    path.write_bytes(first)
    limit = len(first) + 2000  # room for 2000 of the record's ~5100 bytes (a nearly full disk)
    proc = subprocess.run([sys.executable, "-c", SHORT_WRITE, str(path), str(limit)], cwd=ROOT,
                          env=ENV, capture_output=True, text=True, timeout=120)
    # before: exit 0 with 2000 bytes of a line in the file, merged with the next append
    assert proc.returncode == 1
    assert "could not write the record of big" in proc.stderr and "File too large" in proc.stderr
    assert path.read_bytes() == first


# ---- 15. unreadable run files --------------------------------------------------------
def test_unreadable_files_are_named_and_the_report_skips_that_run(compose_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    for name in ("a", "b", "c", "d"):
        run(compose_cfg(*SMALL, f"search.seed={ord(name)}"), sweep / name)
    summary_b = sweep / "b" / "summary.json"
    summary_b.write_text(summary_b.read_text()[:100])  # truncated
    (sweep / "c" / "config.yaml").write_bytes(b"name: \xff\xfe\n")  # not UTF-8
    rows = (sweep / "d" / "problems.jsonl").read_bytes().split(b"\n")
    rec = json.loads(rows[1])
    del rec["kv"]
    rows[1] = json.dumps(rec).encode()  # a record without kv
    (sweep / "d" / "problems.jsonl").write_bytes(b"\n".join(rows))
    proc = subprocess.run([sys.executable, "-m", "ets.report", str(sweep), "--budget", "none",
                           "--depth-runs", "d"], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert re.search(rf"{re.escape(str(summary_b))} line \d+: invalid JSON", proc.stderr)
    assert f"{sweep / 'c' / 'config.yaml'}: not UTF-8" in proc.stderr
    assert f"{sweep / 'd' / 'problems.jsonl'} line 2 skipped: a record without kv" in proc.stderr
    report = (sweep / "report.md").read_text()
    assert "2 runs." in report and "| a |" in report and "| d |" in report
    # resume: the truncated summary is rewritten, the record without kv set aside and re-run
    cfg_d = compose_cfg(*SMALL, f"search.seed={ord('d')}")
    assert run(cfg_d, sweep / "d")["problems"] == 6
    assert json.loads((sweep / "d" / "problems.jsonl.corrupt").read_bytes()) == rec
    assert run(compose_cfg(*SMALL, f"search.seed={ord('b')}"), sweep / "b")["problems"] == 6


def test_engine_numbers_add_up_over_attempts():
    from ets.rundir.integrity import engine_over_attempts, engine_partial
    from ets.rundir.run import engine_kv

    # the prefix-cache counters are cumulative within one engine (one attempt)
    a = [{"kv_tokens": 10.0, "prefix_cache_hits": 1, "prefix_cache_queries": 4, "num_preemptions": 1},
         {"kv_tokens": 30.0, "prefix_cache_hits": 3, "prefix_cache_queries": 8,
          "prompt_tokens_cached": 5, "num_preemptions": 4}]
    b = [{"kv_tokens": 50.0, "prefix_cache_hits": 6, "prefix_cache_queries": 8,
          "prompt_tokens_cached": 7, "num_preemptions": 2}]
    both = engine_over_attempts([engine_partial(a), engine_partial(b)])
    assert both == {"mean": 30.0, "peak": 50.0, "prefix_cache_hit_rate": 9 / 16,
                    "prompt_tokens_cached": 12, "preemptions": 6}
    assert engine_kv(a) == {"mean": 20.0, "peak": 30.0, "prefix_cache_hit_rate": 3 / 8,
                            "prompt_tokens_cached": 5, "preemptions": 4}
    # an attempt recorded before the counter existed counts none
    old = {k: v for k, v in engine_partial(b).items() if k != "preemptions"}
    assert engine_over_attempts([engine_partial(a), old])["preemptions"] == 4


@pytest.mark.parametrize("on_disk", [True, False])
def test_a_kill_between_record_and_run_json_is_settled_by_the_record(tmp_path, on_disk):
    from types import SimpleNamespace

    from ets.rundir.integrity import Attempts

    first = Attempts(tmp_path, {}, {})
    first.progress(SimpleNamespace(policy_calls=3, prm_calls=3), {"solves": 2}, None)
    # killed after appending the record of p1, before run.json said so:
    first.progress(SimpleNamespace(policy_calls=5, prm_calls=5), {"solves": 4}, None, record="p1")
    second = Attempts(tmp_path, {}, {}, done={"p1"} if on_disk else set())
    old = second.attempts[0]
    assert old["status"] == "killed" and "pending" not in old
    assert old["committed"]["policy_calls"] == (5 if on_disk else 0)
    assert second.summary_counters()["lost_to_interruptions"]["policy_calls"] == (0 if on_disk else 5)


def test_the_lock_holder_is_read_again_while_its_pid_is_not_written_yet(tmp_path):
    """The holder truncates the lock file, then writes its pid: a reader in between waits
    for the pid (the race that made the two-launch test flaky under load) and gives up
    after its patience."""
    import threading
    import time as _time

    from ets.rundir.integrity import RunLock

    lock = RunLock(tmp_path)
    lock.path.write_text("")
    assert lock.holder(patience_s=0.05) == "another process (its pid is not recorded yet)"

    def write_late():
        _time.sleep(0.2)
        lock.path.write_text(json.dumps({"pid": 4242, "host": "h", "since": "t"}))

    threading.Thread(target=write_late).start()
    assert lock.holder(patience_s=5.0) == "pid 4242 on h since t"
