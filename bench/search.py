"""Synthetic-world benchmark: ETS vs REBASE vs beam vs DVTS at several widths.

Prints one Markdown table: weighted-majority accuracy, mean and peak KV (paper and
radix definitions), KV ratio vs REBASE at the same width, and wall time (embedding and
CP-SAT included; the embedding model is loaded once and its per-text cache reused
across runs, as within one long run).

    python bench/search.py                       # 500 problems, widths 16 64 256
    python bench/search.py --problems 100 --widths 16 64
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hydra import compose, initialize_config_dir

from ets.config import register_configs
from ets.results import summarize
from ets.run import build_search

CONF = Path(__file__).resolve().parents[1] / "conf"
# name -> overrides. "ets" is the paper setting (lambda_b=1, lambda_s=1.4, threshold 0.05);
# "ets@0.3" cuts the MiniLM clustering at 0.3, where paraphrases of one move merge.
VARIANTS: dict[str, list[str]] = {
    "ets": ["selector=ets"],
    "ets@0.3": ["selector=ets", "selector.cluster_threshold=0.3"],
    "ets_improved": ["selector=ets_improved"],
    "rebase": ["selector=rebase"],
    "beam": ["selector=beam"],
    "dvts": ["selector=dvts"],
}
DEFAULT = ("ets", "ets@0.3", "rebase", "beam", "dvts")


def run_one(variant: str, width: int, problems: int, seed: int, embedder=None) -> tuple[dict, object]:
    """One search; returns its summary and the embedder it used (reused by later runs)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[
            "+experiment=synthetic", *VARIANTS[variant], f"search.width={width}",
            f"dataset.limit={problems}", f"search.seed={seed}",
        ])
    search, dataset = build_search(cfg)
    if embedder is not None and hasattr(search.selector, "embedder"):
        search.selector.embedder = embedder
    rows: list[dict] = []
    start = time.perf_counter()
    search.run(dataset.load(), rows.append)
    summary = summarize(rows, wall_time_s=time.perf_counter() - start)
    summary["selector_stats"] = getattr(search.selector, "stats", {})
    return summary, getattr(search.selector, "embedder", None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--variants", nargs="+", default=list(DEFAULT), choices=list(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    register_configs()
    print(f"synthetic world, {args.problems} problems, seed {args.seed}\n")
    print("| width | selector | acc (wmaj) | acc (maj) | KV paper mean | KV paper peak "
          "| KV radix mean | KV radix peak | REBASE/x paper | REBASE/x radix | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    embedder = None
    for width in args.widths:
        results = {}
        for sel in args.variants:
            results[sel], used = run_one(sel, width, args.problems, args.seed, embedder)
            embedder = used or embedder
        base = results.get("rebase")
        for sel, s in results.items():
            kv = s["kv"]
            ratio = {k: base["kv"][k]["mean"] / kv[k]["mean"] if base else float("nan")
                     for k in ("paper", "radix")}
            print(f"| {width} | {sel} | {s['accuracy']['weighted_majority']:.3f} "
                  f"| {s['accuracy']['majority']:.3f} "
                  f"| {kv['paper']['mean']:.0f} | {kv['paper']['peak']} "
                  f"| {kv['radix']['mean']:.0f} | {kv['radix']['peak']} "
                  f"| {ratio['paper']:.2f}x | {ratio['radix']:.2f}x | {s['wall_time_s']:.1f} |",
                  flush=True)


if __name__ == "__main__":
    main()
