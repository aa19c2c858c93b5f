"""Finding and loading run directories (``config.yaml`` + ``problems.jsonl``/``summary.json``) for reports and merges."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from ets.rundir.results import RunFileError, read_json, read_records

log = logging.getLogger("ets")


@dataclass
class Run:
    """One run directory: its resolved config and summary."""

    path: Path
    name: str
    config: dict[str, Any]
    summary: dict[str, Any]

    @property
    def selector(self) -> str:
        target = str(self.config.get("selector", {}).get("_target_", "?"))
        return target.rsplit(".", 1)[-1].removesuffix("Selector")

    def get(self, dotted: str) -> Any:
        """A config value by dotted key (``selector.lambda``), None when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    @property
    def headline(self) -> str:
        """The headline KV backend of the run."""
        return self.summary.get("kv_headline") or sorted(self.summary["kv"])[0]

    def leaves(self) -> dict[str, Any]:
        """The config flattened to ``dotted.key: value`` (the tracker left out)."""
        return flatten({k: v for k, v in self.config.items() if k != "tracker"})


#: Component modules that moved (issue 9 §3, the package regroup): ``old: new``. A config
#: saved before the move names the old module in its ``_target_``s; the old path still
#: imports (a re-export), and :func:`flatten` reads it as the new one so that such a run
#: resumes, merges and groups with runs saved after the move.
MOVED_MODULES = {"ets.cluster": "ets.selectors.cluster", "ets.grading": "ets.datasets.grading"}


def current_target(target: Any) -> Any:
    """``target`` (a ``_target_`` value) with a moved module's old path replaced by the new one."""
    if isinstance(target, str):
        module, _, name = target.rpartition(".")
        if module in MOVED_MODULES:
            return f"{MOVED_MODULES[module]}.{name}"
    return target


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config flattened to ``dotted.key: value`` (empty dicts are leaves), the
    ``_target_``s of moved modules read as their current paths (:func:`current_target`):
    every comparison of saved configs (resume, merge, report) goes through here."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    key = prefix[:-1]
    return {key: current_target(node) if key.rpartition(".")[2] == "_target_" else node}


def same_but_seed(a: Run, b: Run) -> bool:
    """Configs equal except for seeds: every ``*seed*`` key that differs holds each run's own
    ``search.seed`` (so ``policy.seed: ${search.seed}`` follows it)."""
    la, lb = a.leaves(), b.leaves()
    sa, sb = a.get("search.seed"), b.get("search.seed")
    for key in la.keys() | lb.keys():
        va, vb = la.get(key), lb.get(key)
        if va != vb and not ("seed" in key.rsplit(".", 1)[-1] and va == sa and vb == sb):
            return False
    return True


def find_run_dirs(root: Path, exclude: Path | None = None) -> list[Path]:
    """Run dirs at or below ``root`` (a ``config.yaml`` next to ``problems.jsonl`` or
    ``summary.json``), sorted. Runs nested inside another run (``python -m ets.rerun``'s
    ``<run>/rerun-1``) are left out, and so are ``exclude`` and everything below it.
    The one finder of reports and merges, so neither counts a nested run twice."""
    skip = Path(exclude).resolve() if exclude is not None else None
    found = sorted({p.parent for name in ("problems.jsonl", "summary.json")
                    for p in Path(root).rglob(name) if (p.parent / "config.yaml").exists()})
    found = [d for d in found if not (skip and (d.resolve() == skip or skip in d.resolve().parents))]
    return [d for d in found if not any(o != d and o in d.parents for o in found)]


def find_runs(root: Path) -> list[Path]:
    """Finished run dirs (with ``summary.json``) of :func:`find_run_dirs`."""
    return [d for d in find_run_dirs(root) if (d / "summary.json").exists()]


def load_config(path: Path) -> dict[str, Any]:
    """A run's resolved ``config.yaml``; :class:`RunFileError` naming the file when unreadable."""
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except UnicodeDecodeError as exc:
        raise RunFileError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # yaml's and OmegaConf's errors share no useful base class
        raise RunFileError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(cfg, dict):
        raise RunFileError(f"{path}: not a mapping")
    return cfg


def load_run(d: Path, name: str) -> Run:
    """One finished run; :class:`RunFileError` naming the file when a file is unreadable."""
    cfg = load_config(d / "config.yaml")
    summary = read_json(d / "summary.json")
    missing = [k for k in ("accuracy", "kv") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise RunFileError(f"{d / 'summary.json'}: no {', '.join(missing)}")
    return Run(d, name, cfg, summary)


def load_runs(root: Path) -> list[Run]:
    """Every finished run of :func:`find_run_dirs`, named by its path relative to ``root``.
    A run with an unreadable file, or unfinished (no ``summary.json``), is skipped with a
    warning naming it; the others are loaded."""
    root = Path(root)
    runs = []
    for d in find_run_dirs(root):
        if not (d / "summary.json").exists():
            log.warning("skipping %s: no summary.json (the run has not finished)", d)
            continue
        try:
            runs.append(load_run(d, str(d.relative_to(root)) if d != root else d.name))
        except RunFileError as exc:
            log.warning("skipping run %s: %s", d, exc)
    for run, short in zip(runs, short_names([r.name for r in runs])):
        run.name = short
    return runs


def short_names(names: Sequence[str]) -> list[str]:
    """Names without the ``key=value`` overrides shared by all of them (when still unique)."""
    if len(names) < 2:
        return list(names)
    split = [[part.split(",") for part in n.split("/")] for n in names]
    common = set.intersection(*({t for part in parts for t in part if "=" in t} for parts in split))
    short = ["/".join(",".join(t for t in part if t not in common) or "-" for part in parts)
             for parts in split]
    return short if len(set(short)) == len(short) else list(names)


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """Runs identical but for their seeds (:func:`same_but_seed`), in first-seen order."""
    groups: list[list[Run]] = []
    for r in runs:
        home = next((g for g in groups if same_but_seed(g[0], r)), None)
        if home is None:
            groups.append([r])
        else:
            home.append(r)
    return groups


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float | None]:
    """Mean and the half-width of the t-based confidence interval (None for one value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)


def kv_per_depth(run: Run) -> dict[str, list[float]]:
    """Per backend: mean KV at each selection call (depth) over *all* the run's problems, a
    problem that has stopped counting 0 (so the curve sums to the run's ``total``)."""
    series: dict[str, list[list[int]]] = {}
    for rec in read_records(run.path / "problems.jsonl"):
        for b, stats in rec["kv"].items():
            series.setdefault(b, []).append(stats["per_depth"])
    out: dict[str, list[float]] = {}
    for b, problems in series.items():
        depth = max((len(s) for s in problems), default=0)
        out[b] = [sum(s[d] for s in problems if d < len(s)) / len(problems) for d in range(depth)]
    return out


def choose_budget_run(runs: Sequence[Run]) -> Run | None:
    """The widest best-of-N run, else the widest run of any selector but FFS."""
    usable = [r for r in runs if r.selector != "FFS" and (r.path / "problems.jsonl").exists()]
    pool = [r for r in usable if r.selector == "BestOfN"] or usable
    return max(pool, key=lambda r: r.get("search.width") or 0, default=None)


def load_grader(config: dict[str, Any]) -> Any:
    """The dataset's grader, instantiated from the run's saved config."""
    from hydra.utils import instantiate

    spec = config["dataset"].get("grader")
    if spec is not None:
        return instantiate(spec)
    return instantiate(config["dataset"]).grader
