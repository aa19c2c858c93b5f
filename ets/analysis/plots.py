"""Report plots (PNG, matplotlib's Agg backend): accuracy vs KV with the Pareto front,
KV per depth, budget curves; and the Pareto front itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ets.rundir.results import VOTES


def pareto_front(xs: Sequence[float], ys: Sequence[float]) -> list[int]:
    """Indices of the points not dominated when x (KV) is minimised and y (accuracy) maximised.

    A point is dominated when another has x <= and y >= with at least one strict;
    duplicates of a front point are all on the front. Returned in increasing x.
    """
    idx = [
        i for i in range(len(xs))
        if not any(xs[j] <= xs[i] and ys[j] >= ys[i] and (xs[j] < xs[i] or ys[j] > ys[i])
                   for j in range(len(xs)))
    ]
    return sorted(idx, key=lambda i: (xs[i], -ys[i], i))


def _figure(ncols: int = 1, width: float = 6.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, 4.6), squeeze=False)
    return fig, axes[0]


def _save(fig: Any, path: Path, tight: bool = True) -> Path:
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_kv(points: Sequence[dict[str, Any]], headline: str, path: Path,
                        x: str = "kv", xlabel: str | None = None) -> Path:
    """One point per run (``x``, ``accuracy``, ``selector``, ``label``), coloured by selector,
    with the Pareto front (least ``x`` for the accuracy) drawn as a step line.

    ``x`` picks the cost axis: ``kv`` (mean KV of the ``headline`` backend) or any other
    key of the points (e.g. ``flops``, from :mod:`ets.analysis.compute`), labelled ``xlabel``.
    """
    fig, (ax,) = _figure()
    points = [dict(p, kv=p[x]) for p in points]
    xs = [p["kv"] for p in points]
    ys = [p["accuracy"] for p in points]
    selectors = sorted({p["selector"] for p in points})
    colours = {s: f"C{i % 10}" for i, s in enumerate(selectors)}
    for sel in selectors:
        pts = [p for p in points if p["selector"] == sel]
        ax.scatter([p["kv"] for p in pts], [p["accuracy"] for p in pts], s=46,
                   color=colours[sel], label=sel, alpha=0.85, zorder=3)
    front = pareto_front(xs, ys)
    if front:
        ax.step([xs[i] for i in front], [ys[i] for i in front], where="post", color="black",
                linewidth=1.2, linestyle="--", label="Pareto front", zorder=2)
        ax.scatter([xs[i] for i in front], [ys[i] for i in front], s=130, facecolors="none",
                   edgecolors="black", linewidths=1.3, zorder=4)
    ax.set_xlabel(xlabel or f"mean KV ({headline}, tokens)")
    ax.set_ylabel("accuracy (weighted majority)")
    what = "KV" if x == "kv" else x.replace("_", " ")
    ax.set_title(f"accuracy vs {what}, one point per run ({len(points)} runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_kv_per_depth(series: dict[str, dict[str, list[float]]], path: Path) -> Path:
    """``series[run][backend]``: mean KV at each depth over all the run's problems (0 once a
    problem has stopped, :func:`ets.rundir.runs.kv_per_depth`); one panel per backend, one line per run."""
    from matplotlib.ticker import MaxNLocator

    backends = sorted({b for per in series.values() for b in per})
    fig, axes = _figure(max(1, len(backends)), width=5.0)
    fig.set_figheight(4.0 + 0.22 * len(series))
    for ax, backend in zip(axes, backends):
        for i, (label, per) in enumerate(series.items()):
            values = per.get(backend, [])
            ax.plot(range(1, len(values) + 1), values, marker=".", color=f"C{i % 10}", label=label)
        ax.set_title(f"KV per depth: {backend}")
        ax.set_xlabel("depth (selection call)")
        ax.set_ylabel("mean KV over all problems, 0 once stopped (tokens)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.tight_layout(rect=(0, 0.055 * len(series) + 0.02, 1, 1))
    fig.legend(handles, labels, loc="lower center", fontsize=7, ncol=1, frameon=False)
    return _save(fig, path, tight=False)


def plot_budget(curve: dict[str, Any], source: str, path: Path) -> Path:
    """Accuracy per vote against N (log2 axis), titled as subsampled from the ``source`` run."""
    fig, (ax,) = _figure()
    ns = [r["n"] for r in curve["rows"]]
    for i, v in enumerate(VOTES):
        ax.plot(ns, [r[v] for r in curve["rows"]], marker="o", color=f"C{i}", label=v)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.set_xlabel("N (finished trajectories per problem)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"budget curve, subsampled from one N={curve['n_source']} run\n{source}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)
