"""MathVerifyGrader when its worker process dies: a real math-verify worker, killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import time

from ets.datasets.grading import MathVerifyGrader


def _worker_pids(grader: MathVerifyGrader) -> list[int]:
    return list(grader._pool._processes) if grader._pool is not None else []


def _kill_worker(grader: MathVerifyGrader) -> int:
    (pid,) = _worker_pids(grader)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the pool has noticed (and is broken)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    time.sleep(0.3)
    return pid


def test_killed_worker_is_replaced_and_failures_are_not_cached():
    grader = MathVerifyGrader(timeout_s=30)
    try:
        assert grader.equivalent("\\frac{1}{2}", "0.5")  # starts the worker
        dead = _kill_worker(grader)
        # before the fix: BrokenProcessPool was read as "not equivalent", and cached
        assert grader.equivalent("\\frac{3}{4}", "0.75")
        assert grader.equivalent("\\sqrt{4}", "2")
        assert not grader.equivalent("\\frac{1}{3}", "0.5")
        assert _worker_pids(grader) and dead not in _worker_pids(grader)
        assert grader.failures == 0
        assert grader._cache[("\\frac{3}{4}", "0.75")] is True
    finally:
        grader.close()


def test_a_failure_is_counted_and_retried_not_cached():
    grader = MathVerifyGrader(timeout_s=0.001)  # too short for any worker start: a timeout
    try:
        assert not grader.equivalent("\\frac{1}{2}", "0.5")
        assert grader.failures == 1 and grader.timeouts == 1 and not grader._cache
        grader.timeout_s = 30
        assert grader.equivalent("\\frac{1}{2}", "0.5")  # asked again: really verified now
        assert grader.failures == 1 and grader._cache == {("\\frac{1}{2}", "0.5"): True}
    finally:
        grader.close()
