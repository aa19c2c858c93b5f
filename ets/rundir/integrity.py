"""Run-directory integrity: one process at a time, resume only into the same experiment,
and counters that are exact over every attempt (killed ones included).

* :class:`RunLock`: an exclusive ``flock`` on ``<run>/.lock`` held for the whole run. A
  second process fails at once naming the holder's pid and host (``+lock_wait=true``
  waits for it instead). The kernel drops the lock when the holder dies, even by ``kill -9``.
* :func:`check_resume`: a directory is resumed only with the config it was started with,
  up to :data:`NOT_COMPARED` (``+resume_force=true`` resumes anyway, and says so in
  ``run.json``).
* :class:`Attempts`: ``run.json`` keeps one entry per attempt (start, host, pid, status,
  counters), rewritten after every depth iteration and every record, so a killed attempt's
  work is not lost. Per attempt, ``total`` counts everything done up to the last finished
  depth iteration, ``committed`` everything up to the attempt's last record that reached
  the disk (a kill between the record's write and ``run.json``'s is settled at the next
  start by whether the record is in ``problems.jsonl``: :func:`reconcile`). The summary's ``policy_calls``, ``prm_calls``, ``wall_time_s`` and
  ``selector_stats`` are sums of ``committed`` over attempts: the cost of the records in
  ``problems.jsonl``. What a killed attempt spent after its last record (problems in
  flight, whose records never reached the disk and are re-run) is summed apart under
  ``lost_to_interruptions``. ``kv.engine`` covers every depth iteration of every attempt.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ets.rundir.results import RunFileError, read_json, write_json
from ets.rundir.runs import flatten

log = logging.getLogger("ets")
LOCK_NAME = ".lock"
# Keys that never change a run's results: where it is logged, how it is launched, and these
# flags. ``dataset.limit`` may grow or shrink a run (each problem's result does not depend on
# the others'); the summary covers the current selection.
NOT_COMPARED = ("tracker", "launcher", "hydra", "resume_force", "lock_wait", "dataset.limit")
COUNTERS = ("policy_calls", "prm_calls", "tokens_generated", "depth_iterations", "wall_time_s")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked; the message says why and what to do."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunLock:
    """Exclusive lock on a run directory (``flock`` on ``<run>/.lock``).

    Args:
        run_dir: The run directory (created beforehand).
        wait: Block until the holder ends instead of failing at once.
    """

    def __init__(self, run_dir: Path, wait: bool = False) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.wait = wait
        self._fd: int | None = None

    def holder(self, patience_s: float = 1.0) -> str:
        """``pid N on HOST since T`` as the holder wrote it (best effort). The holder writes
        it right after taking the lock (truncate, then write): a read in between finds the
        file empty, so an unreadable file is read again for up to ``patience_s``."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                info = json.loads(self.path.read_text() or "{}")
                return f"pid {info['pid']} on {info['host']} since {info['since']}"
            except (OSError, ValueError, KeyError, TypeError):
                if time.monotonic() >= deadline:
                    return "another process (its pid is not recorded yet)"
                time.sleep(0.01)

    def acquire(self) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.wait:
                    raise RunDirError(
                        f"{self.path.parent} is in use by {self.holder()}: two processes in one "
                        "run directory would run every problem twice. Wait for it to end, kill "
                        "it, or pass +lock_wait=true to wait for it.") from None
                log.warning("%s is in use by %s; waiting for it (lock_wait=true)",
                            self.path.parent, self.holder())
                fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": _now()}).encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _compared(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(config).items()
            if not any(k == i or k.startswith(i + ".") for i in NOT_COMPARED)}


def config_differences(saved: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ (absent on one side counts), :data:`NOT_COMPARED` aside."""
    a, b = _compared(saved), _compared(new)
    missing = object()
    return sorted(k for k in a.keys() | b.keys() if a.get(k, missing) != b.get(k, missing))


def check_resume(run_dir: Path, new: dict[str, Any], force: bool = False) -> list[str]:
    """Refuse to resume ``run_dir`` with another experiment's config.

    Args:
        run_dir: The run directory (its ``config.yaml`` is the saved config).
        new: The resolved config of this launch.
        force: Resume anyway (``+resume_force=true``); the differences are returned.

    Returns:
        The differing keys (empty for a fresh directory or the same experiment).

    Raises:
        RunDirError: naming the differing keys, saved and new values.
    """
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return []
    try:
        saved = yaml.safe_load(path.read_bytes().decode("utf-8"))
        if not isinstance(saved, dict):
            raise ValueError("not a mapping")
    except (ValueError, yaml.YAMLError) as exc:
        if force:
            log.warning("%s is unreadable (%s); resuming anyway (resume_force=true)", path, exc)
            return ["<unreadable config.yaml>"]
        raise RunDirError(f"{path} is unreadable ({exc}): cannot tell which experiment this "
                          "directory holds. Pass +resume_force=true to resume anyway.") from None
    keys = config_differences(saved, new)
    if not keys:
        return []
    a, b = flatten(saved), flatten(new)
    shown = "; ".join(f"{k}: saved {a.get(k, '<absent>')!r}, now {b.get(k, '<absent>')!r}"
                      for k in keys[:8]) + (f"; ... ({len(keys)} keys)" if len(keys) > 8 else "")
    if force:
        log.warning("resuming %s with a different config (resume_force=true): %s", run_dir, shown)
        return keys
    raise RunDirError(
        f"{run_dir} holds a run of another config; resuming would mix its results with this "
        f"one's. Differs in {shown}. Use another directory, or pass +resume_force=true to "
        "resume anyway.")


def _zeros() -> dict[str, Any]:
    return {k: 0 for k in COUNTERS} | {"wall_time_s": 0.0, "selector_stats": {}}


def _add_numeric(into: dict[str, Any], other: dict[str, Any]) -> None:
    for k, v in other.items():
        if isinstance(v, int | float) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v


class Attempts:
    """The per-attempt ledger in ``run.json`` (see the module docstring for the semantics).

    Args:
        run_dir: The run directory (locked by this process).
        meta: Environment, seed etc. written at the top level of ``run.json``.
        attempt: This attempt's own fields (``problems_todo``, ``resume_forced``, ...).
    """

    def __init__(self, run_dir: Path, meta: dict[str, Any], attempt: dict[str, Any],
                 done: set[str] | frozenset[str] = frozenset()) -> None:
        self.path = Path(run_dir) / "run.json"
        self.meta = meta
        for tmp in Path(run_dir).glob(".*.*.tmp"):  # temp files of a killed writer (we hold the lock)
            tmp.unlink(missing_ok=True)
        self.attempts = reconcile(self._earlier(Path(run_dir)), done)
        self.current: dict[str, Any] = {
            "attempt": len(self.attempts) + 1, "pid": os.getpid(), "host": socket.gethostname(),
            "started": _now(), "ended": None, "status": "running", **attempt, "records": 0,
            "committed": _zeros(), "total": _zeros(), "engine": None,
        }
        self.attempts.append(self.current)
        self._start = time.perf_counter()
        self.save()

    def _earlier(self, run_dir: Path) -> list[dict[str, Any]]:
        attempts: list[dict[str, Any]] = []
        if self.path.exists():
            try:
                attempts = list(read_json(self.path).get("attempts") or [])
            except (RunFileError, AttributeError) as exc:
                raise RunDirError(f"{exc}. It holds the counters of earlier attempts: repair it, "
                                  "or move it aside to resume with those counters lost.") from None
        summary = run_dir / "summary.json"
        if not attempts and summary.exists():  # a run from before per-attempt accounting
            try:
                old = read_json(summary)
            except RunFileError as exc:
                log.warning("%s; the counters of earlier attempts are unknown", exc)
                old = {}
            c = _zeros() | {k: old.get(k, 0) for k in ("policy_calls", "prm_calls", "wall_time_s")}
            attempts.append({"attempt": 1, "status": "finished (recorded before per-attempt "
                             "accounting)", "committed": c, "total": dict(c), "engine": None})
        for a in attempts:
            if a.get("status") == "running":  # we hold the lock: that process is gone
                a["status"] = "killed"
        return attempts

    def start_clock(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def progress(self, counters: Any, selector_stats: dict[str, Any], engine: dict[str, float] | None,
                 record: str | None = None) -> None:
        """Persist this attempt's counters (after every depth iteration). With ``record``
        (the id of a record about to be appended) they are also kept as ``pending``: the
        record and ``run.json`` are two files, so a kill between the two writes is settled
        at the next start by whether the record reached the disk (:func:`reconcile`)."""
        snap = {k: getattr(counters, k, 0) for k in COUNTERS if k != "wall_time_s"}
        snap["wall_time_s"] = self.elapsed()
        snap["selector_stats"] = {k: v for k, v in selector_stats.items()
                                  if isinstance(v, int | float) and not isinstance(v, bool)}
        self.current["total"] = snap
        if record is not None:
            self.current["pending"] = {"id": record, **snap}
        self.current["engine"] = engine
        self.save(durable=False)  # after every depth: a kill keeps it, fsync would cost

    def committed(self) -> None:
        """The pending record reached the disk: its counters are committed."""
        pending = self.current.pop("pending")
        pending.pop("id")
        self.current["committed"] = pending
        self.current["records"] += 1
        self.save(durable=False)

    def finish(self, status: str) -> None:
        if status == "finished":  # the summary closes the attempt: nothing of it is lost
            self.current["total"]["wall_time_s"] = self.elapsed()
            self.current["committed"] = dict(self.current["total"])
        self.current["status"], self.current["ended"] = status, _now()
        self.save()

    def save(self, durable: bool = True) -> None:
        write_json(self.path, {**self.meta, "attempts": self.attempts}, durable)

    def summary_counters(self) -> dict[str, Any]:
        """The summary's counters over all attempts (see the module docstring)."""
        kept, lost = _zeros(), {k: 0 for k in COUNTERS} | {"wall_time_s": 0.0}
        for a in self.attempts:
            c, t = a.get("committed") or {}, a.get("total") or {}
            for k in COUNTERS:
                kept[k] += c.get(k, 0)
                lost[k] += max(t.get(k, 0) - c.get(k, 0), 0)
            _add_numeric(kept["selector_stats"], c.get("selector_stats") or {})
        rederive_stats(kept["selector_stats"])
        engines = [a["engine"] for a in self.attempts if a.get("engine")]
        return {"policy_calls": kept["policy_calls"], "prm_calls": kept["prm_calls"],
                "wall_time_s": kept["wall_time_s"], "selector_stats": kept["selector_stats"],
                "attempts": len(self.attempts),
                "lost_to_interruptions": {k: lost[k] for k in ("policy_calls", "prm_calls",
                                                               "tokens_generated", "wall_time_s")},
                "engine": engine_over_attempts(engines) if engines else None}


def reconcile(attempts: list[dict[str, Any]], done: set[str] | frozenset[str]) -> list[dict[str, Any]]:
    """Settle each earlier attempt's ``pending`` record (killed between appending a record
    and updating ``run.json``): committed when its id is among the records on disk
    (``done``), dropped otherwise (the record was torn or never written)."""
    for a in attempts:
        pending = a.pop("pending", None)
        if pending is not None and pending.get("id") in done:
            a["committed"] = {k: v for k, v in pending.items() if k != "id"}
            a["records"] = a.get("records", 0) + 1
    return attempts


def engine_partial(series: list[dict[str, float]]) -> dict[str, float] | None:
    """One attempt's engine numbers in a form that adds up over attempts (the prefix-cache
    counters are cumulative within an engine, which lives for one attempt)."""
    if not series:
        return None
    used = [m.get("kv_tokens", 0.0) for m in series]
    last = series[-1]
    return {"iterations": len(used), "kv_tokens_sum": float(sum(used)), "peak": max(used),
            "prefix_cache_hits": last.get("prefix_cache_hits", 0.0),
            "prefix_cache_queries": last.get("prefix_cache_queries", 0.0),
            "prompt_tokens_cached": last.get("prompt_tokens_cached", 0.0),
            "preemptions": last.get("num_preemptions", 0.0)}


def engine_over_attempts(parts: list[dict[str, float]]) -> dict[str, float]:
    """Run-level engine numbers: KV tokens in use (mean/peak over every depth iteration of
    every attempt, from the engine's own gauge), the prefix-cache hit rate and the
    requests the engine preempted (its KV budget ran out; attempts recorded before this
    counter count 0)."""
    n = sum(p["iterations"] for p in parts)
    queries = sum(p["prefix_cache_queries"] for p in parts)
    return {"mean": sum(p["kv_tokens_sum"] for p in parts) / n if n else 0.0,
            "peak": max(p["peak"] for p in parts),
            "prefix_cache_hit_rate": sum(p["prefix_cache_hits"] for p in parts) / queries
            if queries else 0.0,
            "prompt_tokens_cached": sum(p["prompt_tokens_cached"] for p in parts),
            "preemptions": sum(p.get("preemptions", 0.0) for p in parts)}


def rederive_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """Recompute the ratio keys of summed selector stats in place (K/N, per-call means:
    summing those over attempts or shards is meaningless)."""
    if "selection_calls" in stats:
        from ets.selectors.ets import derived_stats

        stats.update(derived_stats(stats))
    return stats
