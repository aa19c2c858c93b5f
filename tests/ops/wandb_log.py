"""Read back what wandb wrote for an offline run.

wandb 0.31 does not write ``files/wandb-summary.json`` or ``files/config.yaml`` in offline
mode (those are produced by ``wandb sync``); everything is in the run's transaction log
``run-<id>.wandb``: a ``:W&B`` header followed by LevelDB-log framed protobuf ``Record``s.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte); and each chunk: crc32, length, type


def _chunks(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a wandb transaction log"
    pos, out, buf = _HEADER, [], b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        chunk = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:  # full
            out.append(chunk)
        elif kind == 2:  # first
            buf = chunk
        elif kind == 3:  # middle
            buf += chunk
        elif kind == 4:  # last
            out.append(buf + chunk)
            buf = b""
    return out


def _apply(target: dict[str, Any], key: str, nested: list[str], value_json: str) -> None:
    path = [key] if key else list(nested)
    node = target
    for part in path[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[path[-1]] = json.loads(value_json)


@dataclass
class OfflineRun:
    """Config, summary, history, tags, group and exit code of one offline run."""

    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    group: str = ""
    tags: list[str] = field(default_factory=list)
    name: str = ""
    exit_code: int | None = None


def read_offline_run(run_dir: Path, wait_s: float = 30.0) -> OfflineRun:
    """Parse ``run_dir/run-*.wandb`` (``run_dir`` is ``.../wandb/offline-run-...``).

    ``run.finish()`` can return before wandb's service process has flushed the log, so
    this re-reads until the run's exit record is there (or ``wait_s`` has passed).
    """
    deadline = time.monotonic() + wait_s
    while True:
        out = _read(Path(run_dir))
        if out.exit_code is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def _read(run_dir: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    (log,) = Path(run_dir).glob("run-*.wandb")
    out = OfflineRun(Path(run_dir))
    for raw in _chunks(log.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            out.group, out.tags, out.name = rec.run.run_group, list(rec.run.tags), rec.run.display_name
            for item in rec.run.config.update:
                _apply(out.config, item.key, list(item.nested_key), item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                _apply(out.config, item.key, list(item.nested_key), item.value_json)
        elif kind == "summary":
            for item in rec.summary.update:
                _apply(out.summary, item.key, list(item.nested_key), item.value_json)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _apply(row, item.key, list(item.nested_key), item.value_json)
            out.history.append(row)
        elif kind == "exit":
            out.exit_code = rec.exit.exit_code
    return out


def offline_runs(wandb_dir: Path) -> list[Path]:
    """Offline run dirs under ``<WANDB_DIR>/wandb``, oldest first."""
    return sorted(Path(wandb_dir).glob("wandb/offline-run-*"))
