"""``python -m ets.report <run or sweep dir> [--out DIR] [--wandb] [--trees [IDS]]``: tables and plots over runs.

Every directory below the path holding ``summary.json`` and ``config.yaml`` is a run (runs
nested in a run, e.g. ``rerun-1/``, are left out; a run with an unreadable file is skipped
with a warning naming the file, and the others are reported). Writes ``report.md`` (a row per run;
mean and t-based 95% CI across seeds; a KV table with the after-pruning view, the
newest-step share and, with ``--baseline RUN``, each run's KV ratios to that run),
``accuracy_vs_kv.png`` (Pareto front marked), ``kv_per_depth.png`` and a budget curve
subsampled from one run (:mod:`ets.analysis.budget`). Compute columns (TFLOPs, :mod:`ets.analysis.compute`);
``--pareto-x flops`` puts compute on the Pareto plot's x axis; ``--pareto-x tokens`` /
``prm_calls`` the generated tokens (rollouts included) / PRM-scored items per problem,
also table columns (``summary.json`` ``per_problem``, :func:`ets.rundir.results.per_problem`). ``--trees [IDS]`` writes one
self-contained HTML tree viewer per problem instead (:mod:`ets.analysis.treeview`).
"""

from __future__ import annotations

import argparse
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ets.analysis import budget as B
from ets.analysis import compute as C
from ets.analysis import plots
from ets.rundir.results import VOTES, read_records
from ets.rundir.results import per_problem as _per_problem
from ets.rundir.runs import Run, choose_budget_run, kv_per_depth, load_grader, load_runs, mean_ci, seed_groups

SHORT = {"weighted_majority": "wmaj", "majority": "maj", "best_of_n": "bon", "coverage": "cov"}
Column = tuple[str, Callable[[Run], Any], str]


def _fmt(value: Any, spec: str = "") -> str:
    return "—" if value is None else format(value, spec)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _backends(runs: Sequence[Run]) -> list[str]:
    return sorted({b for r in runs for b in r.summary["kv"]})


def _views(runs: Sequence[Run]) -> list[str]:
    """Backends with the per-problem ``total`` (every backend but the engine's gauge)."""
    return [b for b in _backends(runs) if any("total" in r.summary["kv"].get(b, {}) for r in runs)]


def _acc(vote: str) -> Callable[[Run], Any]:
    return lambda r: r.summary["accuracy"].get(vote)


def _kv(backend: str, stat: str, view: str | None = None) -> Callable[[Run], Any]:
    def get(r: Run) -> Any:
        kv = r.summary["kv"].get(backend, {})
        return (kv.get(view, {}) if view else kv).get(stat)
    return get


def kv_ratio(run: Run, baseline: Run, backend: str, stat: str) -> float | None:
    """Baseline KV / this run's KV (the paper's "1.8x smaller" reads as 1.8); None if missing."""
    ours, base = _kv(backend, stat)(run), _kv(backend, stat)(baseline)
    return None if ours is None or base is None or ours == 0 else base / ours


def pick_baseline(runs: Sequence[Run], wanted: str) -> Run:
    """The run named ``wanted`` (its name or path), else the one run whose name contains it.

    Raises:
        SystemExit: No run or several runs match, naming the runs.
    """
    exact = [r for r in runs if wanted in (r.name, str(r.path))
             or Path(wanted).resolve() == r.path.resolve()]
    found = exact or [r for r in runs if wanted in r.name]
    if len(found) != 1:
        what = "no run" if not found else f"{len(found)} runs"
        raise SystemExit(f"ets.report: --baseline {wanted!r} matches {what}; runs: "
                         + ", ".join(r.name for r in (found or runs)))
    return found[0]


def _cfg(key: str) -> Callable[[Run], Any]:
    return lambda r: r.get(key)


def _sum(key: str) -> Callable[[Run], Any]:
    return lambda r: r.summary.get(key)


def run_compute(run: Run) -> dict[str, Any] | None:
    """The run's ``compute`` (FLOPs) block: from ``summary.json``, or, for runs written
    before it existed, computed from ``problems.jsonl`` and the config (:mod:`ets.analysis.compute`)."""
    if "compute" not in run.summary:
        path = run.path / "problems.jsonl"
        run.summary["compute"] = (C.run_compute(read_records(path), run.config)
                                  if path.exists() else None)
    return run.summary["compute"]


def _flops(*keys: str, scale: float = 1e12) -> Callable[[Run], Any]:
    """A FLOPs figure in TFLOPs, by path in the compute block (None where unknown)."""
    def get(r: Run) -> Any:
        node: Any = run_compute(r)
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return None if node is None else node / scale
    return get


def per_problem(run: Run) -> dict[str, Any]:
    """The run's per-problem compute means (tokens, PRM-scored items): from
    ``summary.json``, or, for runs written before it had them, from ``problems.jsonl``."""
    if "per_problem" not in run.summary:
        path = run.path / "problems.jsonl"
        run.summary["per_problem"] = _per_problem(read_records(path)) if path.exists() else {}
    return run.summary["per_problem"]


def _per(key: str) -> Callable[[Run], Any]:
    return lambda r: per_problem(r).get(key)


#: Compute axes per problem: generated tokens (tree steps + rollouts), items the PRM scored.
PER_PROBLEM_COLUMNS: list[Column] = [("tokens/problem", _per("generated_tokens"), ".1f"),
                                     ("PRM calls/problem", _per("prm_scored"), ".1f")]
COMPUTE_COLUMNS: list[Column] = [
    ("TFLOPs", _flops("total_flops"), ".3f"),
    ("TFLOPs no reuse", _flops("total_flops_no_reuse"), ".3f"),
    ("policy prefill TF", _flops("policy_flops", "prefill"), ".3f"),
    ("policy decode TF", _flops("policy_flops", "decode"), ".3f"),
    ("PRM TF", _flops("prm_flops", "total"), ".3f"),
    ("PRM TF no reuse", _flops("prm_flops", "total_no_reuse"), ".3f"),
]
#: ``--pareto-x`` choices and their axis labels (``kv``: the headline backend's mean).
PARETO_X = {"kv": None, "flops": "total TFLOPs (policy + PRM)",
            "flops_no_reuse": "total TFLOPs without prefix reuse (policy + PRM)",
            "tokens": "generated tokens per problem (tree steps + rollouts)",
            "prm_calls": "PRM calls per problem (items scored)"}


def run_columns(runs: Sequence[Run]) -> list[Column]:
    """(header, getter, format) of the per-run table."""
    cols: list[Column] = [
        ("run", lambda r: r.name, ""), ("selector", lambda r: r.selector, ""),
        ("W", _cfg("search.width"), ""), ("λ", _cfg("selector.lambda"), ""),
        ("coverage w", _cfg("selector.coverage_weight"), ""), ("seed", _cfg("search.seed"), ""),
    ]
    cols += [(f"acc {SHORT[v]}", _acc(v), ".4f") for v in VOTES]
    for b in _backends(runs):
        cols += [(f"KV {b} mean", _kv(b, "mean"), ".2f"), (f"KV {b} peak", _kv(b, "peak"), "")]
        if b in _views(runs):
            cols.append((f"KV {b} total", _kv(b, "total"), ".1f"))
    return cols + PER_PROBLEM_COLUMNS + COMPUTE_COLUMNS + [("tokens", _sum("tokens_generated"), ""),
                                     ("wall s", _sum("wall_time_s"), ".2f")]


def ci_table(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    """Across seeds: ``mean ± half-width`` of the t-based 95% CI (mean alone for one seed)."""
    metrics: list[Column] = [(f"acc {SHORT[v]}", _acc(v), ".4f") for v in VOTES]
    metrics += [(f"KV {b} mean", _kv(b, "mean"), ".2f") for b in _backends(runs)]
    metrics += [(f"KV {b} total", _kv(b, "total"), ".1f") for b in _views(runs)]
    metrics += PER_PROBLEM_COLUMNS + COMPUTE_COLUMNS[:2]
    metrics += [("tokens", _sum("tokens_generated"), ".1f"), ("wall s", _sum("wall_time_s"), ".2f")]
    header = ["selector", "W", "λ", "coverage w", "seeds", "n"] + [m[0] for m in metrics]
    rows = []
    for g in seed_groups(runs):
        row = [g[0].selector, *(_fmt(g[0].get(k)) for k in
                                ("search.width", "selector.lambda", "selector.coverage_weight")),
               ",".join(str(r.get("search.seed")) for r in g), str(len(g))]
        for _, get, spec in metrics:
            values = [get(r) for r in g if get(r) is not None]
            if not values:
                row.append("—")
                continue
            mean, hw = mean_ci(values)
            row.append(format(mean, spec) + ("" if hw is None else f" ± {hw:{spec}}"))
        rows.append(row)
    return header, rows


def kv_table(runs: Sequence[Run], baseline: Run | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per run and KV backend: before/after pruning, newest-step share, ratios.

    ``mean``: over (problem, selection call) pairs; ``total``: per problem, summed over its
    selection calls, averaged over problems (with ``paper``: the reference's number).
    ``× base``: the baseline run's KV over this run's (> 1: this run holds less).
    """
    header = ["run", "selector", "backend", "mean", "total", "after pruning mean",
              "after pruning total", "newest-step share"]
    if baseline is not None:
        header += [f"mean × {baseline.name}", f"total × {baseline.name}"]
    rows = []
    for r in runs:
        for b in _views(runs):
            row = [r.name, r.selector, b, _fmt(_kv(b, "mean")(r), ".2f"), _fmt(_kv(b, "total")(r), ".1f"),
                   _fmt(_kv(b, "mean", "after_pruning")(r), ".2f"),
                   _fmt(_kv(b, "total", "after_pruning")(r), ".1f"),
                   _fmt(_kv(b, "share", "newest_step")(r), ".3f")]
            if baseline is not None:
                row += [_fmt(kv_ratio(r, baseline, b, stat), ".3f") for stat in ("mean", "total")]
            rows.append(row)
    return header, rows


def _depth_runs(runs: Sequence[Run], points: list[dict[str, Any]], wanted: Sequence[str] | None) -> list[Run]:
    if wanted:
        return [r for r in runs if any(w in r.name for w in wanted)]
    front = plots.pareto_front([p["kv"] for p in points], [p["accuracy"] for p in points])
    return [runs[i] for i in front][:6]


def write_report(root: Path, out: Path | None = None, *, budget: str = "auto", samples: int = 64,
                 seed: int = 0, depth_runs: Sequence[str] | None = None, use_wandb: bool = False,
                 project: str = "ets", entity: str | None = None, baseline: str | None = None,
                 pareto_x: str = "kv") -> Path:
    """Write ``report.md`` and the PNGs into ``out`` (default ``root``); returns the report path.

    Args:
        root: A run dir or a sweep dir (searched recursively).
        out: Output dir.
        budget: ``auto`` (widest best-of-N run, else widest run), ``none``, or a run dir.
        samples, seed: Subsets per (problem, N) and RNG seed of the budget curve.
        depth_runs: Substrings of run names for the KV-per-depth plot (default: Pareto front).
        baseline: A run (name, path or unique name substring) for the KV ratio columns.
        use_wandb: Also log the tables and images to W&B (``--wandb``).
        project, entity: W&B destination for ``use_wandb``.
        pareto_x: Cost axis of the accuracy Pareto plot: ``kv`` (mean KV of the headline
            backend), ``flops`` or ``flops_no_reuse`` (total TFLOPs, :mod:`ets.analysis.compute`),
            ``tokens`` or ``prm_calls`` (per problem, :func:`per_problem`).
    """
    if pareto_x not in PARETO_X:
        raise SystemExit(f"ets.report: --pareto-x {pareto_x!r}; allowed: {', '.join(PARETO_X)}")
    root = Path(root)
    runs = load_runs(root)
    if not runs:
        raise SystemExit(f"ets.report: no runs (summary.json + config.yaml) below {root}")
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    headline = Counter(r.headline for r in runs).most_common(1)[0][0]
    cols = run_columns(runs)
    rows = [[_fmt(get(r), spec) for _, get, spec in cols] for r in runs]
    ci_header, ci_rows = ci_table(runs)
    kv_header, kv_rows = kv_table(runs, pick_baseline(runs, baseline) if baseline else None)
    points = [{"kv": r.summary["kv"][headline]["mean"], "selector": r.selector, "label": r.name,
               "accuracy": r.summary["accuracy"]["weighted_majority"]} for r in runs]
    for p, r in zip(points, runs):
        p["flops"], p["flops_no_reuse"] = _flops("total_flops")(r), _flops("total_flops_no_reuse")(r)
        p["tokens"], p["prm_calls"] = _per("generated_tokens")(r), _per("prm_scored")(r)
    if pareto_x == "kv":
        images = [plots.plot_accuracy_vs_kv(points, headline, out / "accuracy_vs_kv.png")]
    else:
        known = [p for p in points if p[pareto_x] is not None]
        if not known:
            why = ("no run has FLOPs (model shapes unknown: see summary.json compute.shapes)"
                   if pareto_x.startswith("flops") else "no run records it")
            raise SystemExit(f"ets.report: --pareto-x {pareto_x}: {why}")
        images = [plots.plot_accuracy_vs_kv(known, headline, out / f"accuracy_vs_{pareto_x}.png",
                                            x=pareto_x, xlabel=PARETO_X[pareto_x])]
    chosen = _depth_runs(runs, points, depth_runs)
    if chosen:
        images.append(plots.plot_kv_per_depth({r.name: kv_per_depth(r) for r in chosen},
                                              out / "kv_per_depth.png"))
    md = [f"# ets report: {root}", "",
          f"{len(runs)} runs. KV in tokens; headline KV backend: **{headline}**. "
          "acc: wmaj = weighted majority, maj = majority, bon = best-of-N, cov = coverage.", "",
          "## Runs", "", markdown([c[0] for c in cols], rows), "",
          "## Across seeds (runs identical but for `search.seed`): mean ± 95% CI (t)", "",
          markdown(ci_header, ci_rows), "",
          "## KV: totals, after pruning, newest step" + (f", ratios to {baseline}" if baseline else ""),
          "", "`mean`: over (problem, selection call) pairs. `total`: per problem, summed over its "
          "selection calls (no measurement where the search stops), mean over problems; for "
          "`paper` this is the ETS reference's \"Total KV cache size\" per problem, the number the "
          "paper's 1.8x compares. `after pruning`: only the paths of candidates given >= 1 child. "
          "`newest-step share`: tokens of the candidates' own newest step / KV held, over all "
          "calls. `× base`: the baseline's KV / the run's (> 1: less KV than the baseline).", "",
          markdown(kv_header, kv_rows), "", "## Plots", "",
          f"![accuracy vs {pareto_x}]({images[0].name}) — Pareto front (least "
          f"{'KV' if pareto_x == 'kv' else 'compute'} for its accuracy) dashed.", "",
          "`tokens/problem`: generated tokens per problem, look-ahead rollouts included; "
          "`PRM calls/problem`: items the PRM scored per problem (tree steps and rollouts).", "",
          "Compute (TFLOPs, forward, policy + PRM; `ets/analysis/compute.py`): 2·N per token plus the "
          "attention term 4·layers·d_attn·context; `no reuse`: every child and every PRM call "
          "re-reads its whole context, otherwise no token is computed twice (ideal prefix cache)."]
    if chosen:
        md += ["", f"![KV per depth](kv_per_depth.png) — runs: {', '.join(r.name for r in chosen)}; "
               "mean over all problems, a problem that has stopped counting 0 (each curve sums "
               "to the run's KV total)."]
    curve, source = _budget(runs, root, budget, samples, seed)
    if curve is not None and source is not None:
        label = f"subsampled from one N={curve['n_source']} run: {source.name} ({source.selector})"
        images.append(plots.plot_budget(curve, f"{source.name} ({source.selector})",
                                        out / "budget_curve.png"))
        md += ["", f"## Budget curve, {label}", "",
               f"Accuracy with N finished trajectories per problem, drawn from that one run's trees "
               f"({curve['samples']} random subsets per problem and N, seed {curve['seed']}; "
               "'exact' = every subset enumerated). Not independent runs at each N.", "",
               markdown(["N", *(f"acc {SHORT[v]}" for v in VOTES), "exact"], list(B.iter_rows(curve))),
               "", "![budget curve](budget_curve.png)"]
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n", encoding="utf-8")
    if use_wandb:
        _log_wandb(root, out, (cols, rows), (ci_header, ci_rows), images, project, entity,
                   (kv_header, kv_rows))
    return report


def _budget(runs: Sequence[Run], root: Path, budget: str, samples: int,
            seed: int) -> tuple[dict[str, Any] | None, Run | None]:
    if budget == "none":
        return None, None
    if budget == "auto":
        source = choose_budget_run(runs)
    else:
        matches = [r for r in runs if r.path.resolve() == Path(budget).resolve()] or load_runs(Path(budget))
        source = matches[0] if matches else None
    if source is None:
        return None, None
    records = read_records(source.path / "problems.jsonl")
    curve = B.budget_curve(records, load_grader(source.config), n_source=int(source.get("search.width")),
                           aggregation=str(source.get("search.aggregation") or "last"),
                           samples=samples, seed=seed)
    return curve, source


def _log_wandb(root: Path, out: Path, runs_table: tuple[list[Column], list[list[str]]],
               ci: tuple[list[str], list[list[str]]], images: list[Path], project: str,
               entity: str | None, kv: tuple[list[str], list[list[str]]]) -> None:
    import wandb

    from ets.trackers.wandb import resolve_mode

    mode = resolve_mode(None)
    if mode == "disabled":
        return
    run = wandb.init(project=project, entity=entity, job_type="report", mode=mode, dir=str(out),
                     group=str(root)[-128:], name=f"report-{root.resolve().name}",
                     config={"root": str(root)}, reinit="finish_previous")
    try:
        run.log({"report/runs": wandb.Table(columns=[c[0] for c in runs_table[0]], data=runs_table[1]),
                 "report/across_seeds": wandb.Table(columns=ci[0], data=ci[1]),
                 "report/kv": wandb.Table(columns=kv[0], data=kv[1]),
                 **{f"report/{p.stem}": wandb.Image(str(p)) for p in images}})
    finally:
        run.finish()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (``python -m ets.report --help``)."""
    ap = argparse.ArgumentParser(prog="python -m ets.report", description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="a run dir or a sweep dir")
    ap.add_argument("--out", type=Path, default=None, help="output dir (default: the given dir)")
    ap.add_argument("--wandb", action="store_true", help="also log tables and plots to W&B")
    ap.add_argument("--project", default="ets", help="W&B project for --wandb")
    ap.add_argument("--entity", default=None, help="W&B entity for --wandb")
    ap.add_argument("--budget", default="auto", help="budget-curve source: auto, none or a run dir")
    ap.add_argument("--samples", type=int, default=64, help="budget curve: subsets per problem and N")
    ap.add_argument("--seed", type=int, default=0, help="budget curve: subsampling seed")
    ap.add_argument("--baseline", default=None,
                    help="run (name, path or unique name substring) for the KV ratio columns")
    ap.add_argument("--pareto-x", default="kv", choices=list(PARETO_X),
                    help="cost axis of the accuracy Pareto plot (default kv)")
    ap.add_argument("--trees", nargs="*", default=None, metavar="ID",
                    help="write one HTML tree viewer per problem (all, or these ids) under "
                         "OUT/trees/<run>/ instead of the report")
    ap.add_argument("--depth-runs", nargs="*", default=None,
                    help="substrings of run names for the KV-per-depth plot (default: Pareto front)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="ets.report: warning: %(message)s")
    if args.trees is not None:
        from ets.analysis.treeview import write_trees

        pages = write_trees(args.path, args.out, args.trees or None)
        print(f"wrote {len(pages)} tree pages" + (f" under {pages[0].parent.parent}" if pages else ""))
        return 0
    report = write_report(args.path, args.out, budget=args.budget, samples=args.samples,
                          seed=args.seed, depth_runs=args.depth_runs, use_wandb=args.wandb,
                          project=args.project, entity=args.entity, baseline=args.baseline,
                          pareto_x=args.pareto_x)
    print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
