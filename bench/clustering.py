"""ETS clustering and the improved mode on the synthetic world, side by side.

Per variant: weighted-majority accuracy, mean and max search depths, KV (paper and
radix) as the mean over (problem, depth) pairs and as the per-problem total (the
reference's "Total KV cache size": the sum over selection calls) averaged over
problems, tokens, and the selector's per-call statistics (K/N, candidates kept,
candidates REBASE would expand, softmax mass pruned, guaranteed children).

    python bench/clustering.py --problems 100 --width 16
    python bench/clustering.py --variant "old=selector=ets_improved selector.min_child_rule=every"
    python bench/clustering.py --real RUN_DIR [RUN_DIR ...]   # ETS offline on recorded frontiers
    python bench/clustering.py --cut-timing   # the linkage cut: scipy's fcluster vs cut_tree_at
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ets.config import register_configs
from ets.rundir.run import build_search

CONF = Path(__file__).resolve().parents[1] / "conf"
PAPER_CUT = "selector.embedder.threshold=0.05"
# name -> overrides
VARIANTS: dict[str, list[str]] = {
    "rebase": ["selector=rebase"],
    "ets@0.05": ["selector=ets", PAPER_CUT],
    "ets": ["selector=ets"],
    "ets/tokens": ["selector=ets", "selector.node_cost=tokens"],
    "improved/every@0.05": ["selector=ets_improved", "selector.min_child_rule=every", PAPER_CUT],
    "improved/every": ["selector=ets_improved", "selector.min_child_rule=every"],
    "improved/cluster": ["selector=ets_improved", "selector.min_child_rule=cluster"],
    "improved": ["selector=ets_improved"],
}


def run_one(overrides: list[str], width: int, problems: int, seed: int, embedder=None):
    """One search; returns (row of numbers, the embedder it used)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["+experiment=synthetic", *overrides,
                                           f"search.width={width}", f"dataset.limit={problems}",
                                           f"search.seed={seed}"])
    search, dataset = build_search(cfg)
    own = getattr(search.selector, "embedder", None)
    if embedder is not None and own is not None and own.model_name == embedder.model_name:
        # share the loaded model and its per-text cache, keep this run's threshold
        own._model, own._cache = embedder._model, embedder._cache
    recs: list[dict] = []
    start = time.perf_counter()
    search.run(dataset.load(), recs.append)
    n = len(recs)
    row = {
        "acc": sum(r["correct"]["weighted_majority"] for r in recs) / n,
        "depths": sum(r["depths"] for r in recs) / n,
        "max_depths": max(r["depths"] for r in recs),
        "tokens": sum(r["tokens"] for r in recs) / n,
        "wall_s": time.perf_counter() - start,
    }
    for kv in ("paper", "radix"):
        per = [v for r in recs for v in r["kv"][kv]["per_depth"]]
        row[f"{kv}_mean"] = sum(per) / len(per)
        row[f"{kv}_total"] = sum(sum(r["kv"][kv]["per_depth"]) for r in recs) / n
    stats = getattr(search.selector, "stats", {})
    for key in ("clusters_per_candidate", "candidates_per_call", "kept_per_call",
                "rebase_expand_per_call", "expanded_per_call", "mass_pruned_per_call"):
        row[key] = stats.get(key, float("nan"))
    calls = stats.get("selection_calls", 0)
    row["guaranteed_per_call"] = stats.get("guaranteed_children", 0) / calls if calls else float("nan")
    return row, getattr(search.selector, "embedder", None)


def real_frontiers(run_dirs: list[Path], cuts: list[float]) -> None:
    """ETS selection (paper settings) on every depth's frontier of recorded searches
    (e.g. REBASE runs of the real model), at each clustering cut: the K/N, kept and
    pruned numbers the selector would log there."""
    import json

    from ets.analysis.cluster_calibration import replay_frontiers
    from ets.selectors.cluster import SentenceEmbedder
    from ets.selectors.ets import ETSSelector

    emb = SentenceEmbedder(device="cpu", threshold=0.0)
    print("| runs | cut | calls | candidates/call | K/N | kept/call | REBASE would expand/call "
          "| expanded/call | mass pruned/call |\n|---|---|---|---|---|---|---|---|---|")
    for cut in cuts:
        sel = ETSSelector(cluster_threshold=cut, embedder=emb)
        for run in run_dirs:
            width = int(OmegaConf.load(run / "config.yaml").search.width)
            for line in (run / "problems.jsonl").read_text().splitlines():
                for tree, live, remaining in replay_frontiers(json.loads(line)["tree"], width):
                    sel.select(live, remaining, tree)
        st = sel.stats
        print(f"| {' '.join(r.name for r in run_dirs)} | {cut:.2f} | {st['selection_calls']} "
              f"| {st['candidates_per_call']:.2f} | {st['clusters_per_candidate']:.3f} "
              f"| {st['kept_per_call']:.2f} | {st['rebase_expand_per_call']:.2f} "
              f"| {st['expanded_per_call']:.2f} | {st['mass_pruned_per_call']:.3f} |")


def cut_timing(seed: int, repeats: int = 200) -> None:
    """Milliseconds per cut (fastest of ``repeats``) of the average linkage of N random
    384-d embeddings (a third of them duplicates), at the shipped embedder's threshold and
    the paper's: scipy's ``fcluster(criterion="distance")`` against
    ``ets.selectors.cluster.cut_tree_at`` (what ``cluster_labels`` uses), with whether
    both give the same partition."""
    import numpy as np
    from scipy.cluster.hierarchy import fcluster

    from ets.selectors.cluster import average_linkage, cut_tree_at, first_seen

    rng = np.random.default_rng(seed)
    print("| N | threshold | scipy fcluster ms | cut_tree_at ms | same partition |\n|---:|---:|---:|---:|---|")
    for n in (16, 64, 256):
        emb = rng.normal(size=(n, 384)).astype(np.float32)
        dup = rng.integers(0, n, n // 3)
        emb[dup] = emb[rng.integers(0, n, len(dup))]
        merges = average_linkage(emb)
        for t in (0.05, float(np.median(merges[:, 2]))):
            times = {}
            for name in ("scipy", "ets"):
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    if name == "scipy":
                        fcluster(merges, t=t, criterion="distance")
                    else:
                        cut_tree_at(merges, t, n)
                    best = min(best, time.perf_counter() - start)
                times[name] = best
            same = first_seen(fcluster(merges, t=t, criterion="distance")) == first_seen(cut_tree_at(merges, t, n))
            print(f"| {n} | {t:.3f} | {1e3 * times['scipy']:.3f} | {1e3 * times['ets']:.3f} | {same} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--variant", action="append", default=[],
                        help="extra NAME=override override ... (space-separated overrides)")
    parser.add_argument("--real", type=Path, nargs="+", help="recorded run dirs (see real_frontiers)")
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.05, 0.15])
    parser.add_argument("--cut-timing", action="store_true",
                        help="time the average-linkage cut alone: scipy's fcluster vs cut_tree_at")
    args = parser.parse_args()
    if args.cut_timing:
        cut_timing(args.seed)
        return
    if args.real:
        real_frontiers(args.real, args.cuts)
        return
    register_configs()
    todo = {v: VARIANTS[v] for v in args.variants}
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        todo[name] = rest.split()
    print(f"synthetic world, {args.problems} problems, W={args.width}, seed {args.seed}\n")
    cols = ["acc", "depths", "max_depths", "paper_mean", "paper_total", "radix_mean",
            "radix_total", "tokens", "clusters_per_candidate", "candidates_per_call",
            "kept_per_call", "rebase_expand_per_call", "expanded_per_call",
            "mass_pruned_per_call", "guaranteed_per_call", "wall_s"]
    print("| variant | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    embedder = None
    for name, overrides in todo.items():
        row, used = run_one(overrides, args.width, args.problems, args.seed, embedder)
        embedder = used or embedder
        cells = [f"{row[c]:.3f}" if c in ("acc", "clusters_per_candidate", "mass_pruned_per_call")
                 else f"{row[c]:.2f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
