"""Weights & Biases tracker (``tracker=wandb``), on top of the local one (``depth_metrics.jsonl``).

``wandb`` is imported when this tracker is built, never by ``import ets``. The API key is
only looked for (``WANDB_API_KEY``), never read into config, logs or outputs: wandb takes
it from the environment itself. Without a key (and without ``WANDB_MODE``) the run is
logged offline and a hint to upload it with ``wandb sync`` is printed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from ets.analysis.compute import flat_metrics
from ets.rundir.results import VOTES, read_records
from ets.schema import schema
from ets.trackers.local import LocalTracker, TrackerConf

_GROUP_MAX = 128


Mode = Literal["online", "offline", "disabled", "shared"]
MODES: tuple[Mode, ...] = ("online", "offline", "disabled", "shared")


def resolve_mode(mode: str | None) -> Mode:
    """``mode`` if given, else ``WANDB_MODE``, else ``online`` with an API key, ``offline`` without.

    Raises:
        ValueError: for a mode wandb does not know.
    """
    chosen = str(getattr(mode, "value", mode)) if mode is not None else os.environ.get("WANDB_MODE")
    if not chosen:
        chosen = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    for known in MODES:
        if chosen == known:
            return known
    raise ValueError(f"W&B mode {chosen!r} is not one of {', '.join(MODES)}")


def server_reachable(timeout: float = 5.0) -> bool:
    """Whether the W&B server (``WANDB_BASE_URL``, default https://api.wandb.ai) accepts a TCP
    connection within ``timeout`` seconds. With a proxy configured, assume it does."""
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                                       "ALL_PROXY", "all_proxy")):
        return True  # a proxy may reach what a direct connection cannot: let wandb try
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout).close()
    except OSError:
        return False
    return True


def default_group(run_dir: Path, config: dict[str, Any]) -> str:
    """The sweep dir when the run is one job of a ``-m`` sweep, else the config's ``name``."""
    sweep: Path | None = None
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            sweep = Path(HydraConfig.get().sweep.dir)
    except (ImportError, ValueError, AttributeError):
        sweep = None
    if sweep is None and (run_dir.parent / "multirun.yaml").exists():
        sweep = run_dir.parent
    if sweep is None:
        return str(config.get("name") or run_dir.name)
    try:
        text = str(sweep.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        text = str(sweep)
    return text[-_GROUP_MAX:]


def summary_metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat W&B summary: accuracy per vote, KV mean/peak per backend, counts, throughput,
    ``compute/...`` FLOPs."""
    out: dict[str, Any] = {f"accuracy/{k}": v for k, v in summary["accuracy"].items()}
    for name, kv in summary["kv"].items():
        out[f"kv/{name}/mean"] = kv["mean"]
        out[f"kv/{name}/peak"] = kv["peak"]
    for key in ("problems", "tokens_generated", "policy_calls", "prm_calls", "wall_time_s",
                "kv_headline"):
        if key in summary:
            out[key] = summary[key]
    wall = summary.get("wall_time_s") or 0.0
    out["throughput/tokens_per_s"] = summary["tokens_generated"] / wall if wall > 0 else 0.0
    out["throughput/problems_per_s"] = summary["problems"] / wall if wall > 0 else 0.0
    out.update(flat_metrics(summary.get("compute")))  # FLOPs (ets.analysis.compute), where known
    for key, value in (summary.get("selector_stats") or {}).items():
        if isinstance(value, int | float):
            out[f"selector_stats/{key}"] = value
    return out


def problem_row(rec: dict[str, Any], backends: list[str]) -> list[Any]:
    """One row of the per-problem table (see :func:`problem_columns`)."""
    preds = rec.get("predictions", {})
    return ([rec["id"], str(rec["gold"])]
            + [str(preds.get(v) or "") for v in VOTES if v != "coverage"]
            + [bool(rec["correct"].get(v, False)) for v in VOTES]
            + [float(rec["kv"][b]["mean"]) if b in rec["kv"] else None for b in backends]
            + [int(rec["tokens"])])


def problem_columns(backends: list[str]) -> list[str]:
    return (["id", "gold"] + [f"pred_{v}" for v in VOTES if v != "coverage"]
            + [f"correct_{v}" for v in VOTES] + [f"kv_mean_{b}" for b in backends] + ["tokens"])


class WandbTracker:
    """Logs the resolved config, per-depth and per-problem metrics, and a final summary.

    Args:
        project, entity: W&B destination.
        group: W&B group; ``None``: the sweep dir for sweep jobs, ``name`` otherwise.
        tags: Run tags (experiment files can set ``tracker.tags``).
        mode: ``online``, ``offline`` or ``disabled`` (see :func:`resolve_mode`).
        dir: Where wandb writes; ``None``: ``WANDB_DIR`` if set, else the run dir.
    """

    def __init__(self, project: str = "ets", entity: str | None = None, group: str | None = None,
                 tags: list[str] | tuple[str, ...] = (), mode: str | None = None,
                 dir: str | None = None) -> None:
        import wandb  # here, not at module level: only runs with tracker=wandb need it

        self._wandb = wandb
        self.project, self.entity, self.group = project, entity, group
        self.tags, self.mode, self.dir = list(tags), mode, dir
        self.local = LocalTracker()  # depth_metrics.jsonl is written as with tracker=local
        self._run: Any = None
        self._run_dir: Path | None = None
        self._n = 0
        self._correct = 0

    def start(self, config: dict[str, Any], run_dir: str) -> None:
        self.local.start(config, run_dir)
        self._run_dir = Path(run_dir)
        mode = resolve_mode(self.mode)
        # explicit every time: wandb caches WANDB_DIR at its first setup in a process
        wdir = self.dir or os.environ.get("WANDB_DIR") or str(self._run_dir)
        base = Path(wdir) / "wandb"
        if mode == "offline" and self.mode is None and not os.environ.get("WANDB_MODE"):
            print(f"ets: no WANDB_API_KEY in the environment, so W&B logs offline into {base}; "
                  f"upload later with `wandb sync {base}/offline-run-*`", file=sys.stderr)
        elif mode == "online" and not server_reachable():
            # wandb.init would wait ~100 s for the server and then fail the run
            server = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
            print(f"ets: the W&B server {server} cannot be reached, so W&B logs offline into {base}; "
                  f"upload later with `wandb sync {base}/offline-run-*`", file=sys.stderr)
            mode = "offline"
        Path(wdir).mkdir(parents=True, exist_ok=True)
        self._run = self._wandb.init(
            project=self.project, entity=self.entity, tags=self.tags or None, mode=mode,
            group=self.group or default_group(self._run_dir, config), dir=wdir,
            name=self._run_dir.name, config=json.loads(json.dumps(config, default=str)),
            reinit="finish_previous",
        )
        self._run.define_metric("depth/iteration")
        self._run.define_metric("depth/*", step_metric="depth/iteration")
        self._run.define_metric("problem/index")
        self._run.define_metric("problem/*", step_metric="problem/index")

    def log_depth(self, metrics: dict[str, float]) -> None:
        self.local.log_depth(metrics)
        if self._run is not None:
            self._run.log({"depth/" + k.removeprefix("depth_"): v for k, v in metrics.items()})

    def log_problem(self, record: dict[str, Any]) -> None:
        if self._run is None:
            return
        self._n += 1
        self._correct += bool(record["correct"].get("weighted_majority", False))
        row: dict[str, Any] = {"problem/index": self._n, "problem/tokens": record["tokens"],
                               "problem/running_accuracy": self._correct / self._n}
        row.update({f"problem/correct_{v}": int(bool(c)) for v, c in record["correct"].items()})
        row.update({f"problem/kv_mean_{b}": kv["mean"] for b, kv in record["kv"].items()})
        self._run.log(row)

    def finish(self, summary: dict[str, Any] | None) -> None:
        """Log the summary, tables and chart, and end the run (``exit_code=1`` when ``summary``
        is None, i.e. the search crashed). The run is always finished."""
        self.local.finish(summary)
        run, self._run = self._run, None
        if run is None:
            return
        try:
            if summary is not None:
                run.summary.update(summary_metrics(summary))
                self._log_tables(run, summary)
        except Exception as exc:  # never lose the run because a table failed
            print(f"ets: W&B table logging failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            offline = getattr(run.settings, "mode", None) == "offline"
            where = Path(run.dir).parent if run.dir else None
            run.finish(exit_code=0 if summary is not None else 1)
            if offline and where is not None:
                print(f"ets: W&B run saved offline; upload with `wandb sync {where}`", file=sys.stderr)

    def _log_tables(self, run: Any, summary: dict[str, Any]) -> None:
        wandb = self._wandb
        assert self._run_dir is not None
        backends = sorted(summary["kv"])
        records = read_records(self._run_dir / "problems.jsonl")
        per = (summary.get("compute") or {}).get("per_problem") or {}  # FLOPs (ets.analysis.compute)
        table = wandb.Table(columns=problem_columns(backends) + ["flops", "flops_no_reuse"],
                            data=[problem_row(r, backends)
                                  + [per.get(str(r["id"]), {}).get(k) for k in ("total", "total_no_reuse")]
                                  for r in records])
        head = summary.get("kv_headline") or backends[0]
        cols = (["run", "kv_backend", "kv_mean", "kv_peak", "accuracy"]
                + [f"accuracy_{v}" for v in VOTES])
        point = wandb.Table(columns=cols, data=[
            [self._run_dir.name, head, summary["kv"][head]["mean"], summary["kv"][head]["peak"],
             summary["accuracy"]["weighted_majority"]] + [summary["accuracy"][v] for v in VOTES]])
        run.log({
            "problem_table": table,
            "accuracy_vs_kv": wandb.plot.scatter(
                point, "kv_mean", "accuracy",
                title=f"accuracy (weighted majority) vs mean KV ({head}), one point per run"),
        })


class WandbMode(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    online = "online"
    offline = "offline"
    disabled = "disabled"


@schema("tracker", "wandb", WandbTracker)
class WandbTrackerConf(TrackerConf):
    """W&B logging; the API key is read from ``WANDB_API_KEY`` only, never from config.

    ``mode=None``: ``WANDB_MODE`` if set, else online with a key, offline without one.
    ``group=None``: the sweep dir for sweeps, ``name`` otherwise. ``dir=None``:
    ``WANDB_DIR`` if set, else the run dir.
    """

    project: str
    entity: str | None
    group: str | None
    mode: WandbMode | None
    dir: str | None
