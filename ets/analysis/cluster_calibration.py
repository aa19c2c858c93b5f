"""Calibrate an embedding model's clustering cut on labelled pairs of step texts.

ETS merges candidate steps whose embeddings are closer than a cosine-distance cut
(ALGORITHMS.md §3.4). The paper's 0.05 belongs to its zbMath model; another model
spreads the same texts differently, so its cut is chosen here on data:

1. **Pairs.** Sibling (same parent) and cousin (parents are siblings) steps at one
   depth of real search trees: exactly the texts ETS clusters together (live,
   unfinished candidates; the root prompt, and with it the dataset question, is never
   stored). Pairs of identical texts are left out: every cut merges them.
   :func:`synthetic_pairs` adds pairs from the synthetic world's step vocabulary.
2. **Labels**, by a rule anyone can re-run (:func:`same_move`): two steps make the
   *same move* when they state the same set of numbers (operands and results, after
   normalising ``1,000`` -> ``1000`` and ``2.50`` -> ``2.5``), and a different move
   otherwise. Why numbers: in a math solution a step's content is the quantities it
   computes; two phrasings of one calculation state the same numbers, while a
   different operation, operand or result shows up as a different number (an error
   in a step is a different move too: it leads elsewhere). Pairs where neither
   step states a number ("Let's think step by step.") have no label and are left
   out. Known bias: a paraphrase that restates one extra given number is labelled
   *different*, so the rule errs towards "different" and the chosen cut towards
   merging less. In the synthetic world the label is exact: same (move, value).
3. **Cut.** :func:`sweep` computes precision/recall of "distance <= t predicts same
   move" at every cut on a 0.01 grid; :func:`choose` takes the cut with the best F1 of
   the same-move class (ties: the smaller cut), over all labelled pairs, real and
   synthetic together: real SmolLM2 siblings rarely make the same move (10 of 1466
   pairs in the shipped set), too few to place a cut alone. F1 rather than accuracy
   because most pairs are different moves, and a cut that merged nothing would score
   well on accuracy while doing nothing for ETS.

The shipped set (1666 pairs): real pairs from SmolLM2-135M searches on an H200 (vLLM,
bf16, policy temperature 1.0, logprob PRM, 100 GSM8K + 100 MATH500 problems, REBASE and
ETS at W = 16 and 64, max_tokens 512, max_step_tokens 128), at most 2 labelled pairs per
problem and run (seed 0): 800 GSM8K + 666 MATH500 pairs; plus 200 synthetic pairs. The
rule labels 1.5% of the real sibling/cousin pairs same-move (531 of 36049 labelled in the two
W = 16 REBASE runs): a 135M model sampled at temperature 1 rarely repeats a calculation
(the closest different-move pairs by string similarity are genuinely different steps,
e.g. ``20 - 3 = 10 liters`` vs ``20-10 = 8 liters``), so the rule is kept.

Result for all-MiniLM-L6-v2: cut 0.15, precision 0.81, recall 0.74 (F1 0.77) over all
pairs; synthetic pairs 0.90 / 0.80; real SmolLM2 pairs only 0.09 / 0.10 (1 of 10
same-move pairs under the cut, 10 of 1456 different-move pairs, 0.7%). Median cosine
distance of real pairs: same move 0.54, different move 0.61 (synthetic: 0.09 / 0.27):
on real steps MiniLM hardly tells a repeated calculation from a different one (it
barely sees numbers), so the cut merges near-verbatim restatements and little else.
(The earlier set from 7 CPU-traced problems, 516 pairs, chose 0.14.)
On the real frontiers (the same traces' REBASE W = 16 runs, calls with >= 2
candidates) MiniLM clustering leaves K/N at 0.967 / 0.953 / 0.950 (GSM8K, 885 calls)
and 0.995 / 0.981 / 0.979 (MATH500, 981 calls) at cuts 0.05 / 0.14 / 0.15: nearly every
candidate is its own cluster.

    python -m ets.cluster_calibration collect RUN_DIR [RUN_DIR ...] --per-problem 2 --out ets/data/step_pairs.jsonl
    python -m ets.cluster_calibration collect RUN_DIR [RUN_DIR ...] --out ets/data/step_pairs.jsonl
    python -m ets.cluster_calibration calibrate            # uses the shipped pairs

The labelled set ships as ``ets/data/step_pairs.jsonl`` (one JSON object a line:
``a``, ``b``, ``relation`` sibling/cousin/paraphrase, ``source``, ``same``).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PAIRS_PATH = Path(__file__).resolve().parents[1] / "data" / "step_pairs.jsonl"
_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")


def step_numbers(text: str) -> frozenset[str]:
    """The numbers a step states, normalised (``1,000`` -> ``1000``, ``2.50`` -> ``2.5``,
    ``3.0`` -> ``3``); a sign is kept; a trailing sentence period is not part of it."""
    out = set()
    for tok in _NUMBER.findall(text):
        tok = tok.replace(",", "")
        if "." in tok:
            tok = tok.rstrip("0").rstrip(".")
        if tok in ("", "-"):
            continue
        if tok in ("-0",):
            tok = "0"
        out.add(tok)
    return frozenset(out)


def same_move(a: str, b: str) -> bool | None:
    """The labelling rule (module docstring): ``True`` when both steps state the same
    non-empty set of numbers, ``False`` when the sets differ, ``None`` (no label) when
    neither states a number."""
    na, nb = step_numbers(a), step_numbers(b)
    if not na and not nb:
        return None
    return na == nb


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    relation: str
    source: str
    same: bool


def tree_pairs(tree: Sequence[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(text, text, ``sibling``/``cousin``) for every pair of distinct live step texts
    at one depth whose parents are equal or siblings (a dumped ``Tree.to_records``)."""
    by_id = {n["id"]: n for n in tree}
    live = [n for n in tree if n["parent"] is not None and not n["finished"]]
    out = []
    for i, x in enumerate(live):
        for y in live[i + 1:]:
            if x["depth"] != y["depth"] or x["text"] == y["text"]:
                continue
            if x["parent"] == y["parent"]:
                out.append((x["text"], y["text"], "sibling"))
            elif x["depth"] > 1 and by_id[x["parent"]]["parent"] == by_id[y["parent"]]["parent"]:
                out.append((x["text"], y["text"], "cousin"))
    return out


def collect(run_dirs: Iterable[Path], per_problem: int, seed: int = 0) -> list[Pair]:
    """Labelled pairs from the ``problems.jsonl`` of search runs: at most ``per_problem``
    labelled pairs per problem (a random sample, so no problem dominates)."""
    rng = random.Random(seed)
    out: list[Pair] = []
    for run in run_dirs:
        source = _source_name(Path(run))
        for line in (Path(run) / "problems.jsonl").read_text().splitlines():
            if not line.strip():
                continue
            rec = json.loads(line)
            labelled = [(a, b, rel, same_move(a, b)) for a, b, rel in tree_pairs(rec["tree"])]
            labelled = [t for t in labelled if t[3] is not None]
            rng.shuffle(labelled)
            out += [Pair(a, b, rel, source, bool(s)) for a, b, rel, s in labelled[:per_problem]]
    return out


def _source_name(run: Path) -> str:
    cfg = run / "config.yaml"
    text = cfg.read_text() if cfg.exists() else ""
    for name in ("gsm8k", "math500", "aime24", "synthetic"):
        if name in text or name in str(run):
            return name
    return run.name


def replay_frontiers(tree: Sequence[dict[str, Any]], width: int):
    """Rebuild a dumped search tree and yield, per depth, ``(tree, live candidates,
    remaining width)`` as the search loop handed them to its selector (remaining =
    ``width`` minus the trajectories finished so far). Token ids are placeholders of
    the recorded lengths. Used to run a selector offline on real frontiers."""
    from ets.core.tree import Tree

    root = tree[0]
    t = Tree(root["text"], tuple(range(root["tokens"])))
    nodes = {root["id"]: t.root}
    for rec in tree[1:]:
        nodes[rec["id"]] = t.add_child(nodes[rec["parent"]], rec["text"],
                                       tuple(range(rec["tokens"])), score=rec["score"],
                                       finished=rec["finished"])
    finished = 0
    for depth in range(1, max(r["depth"] for r in tree) + 1):
        layer = [nodes[r["id"]] for r in tree if r["depth"] == depth]
        finished += sum(n.finished for n in layer)
        live = [n for n in layer if not n.finished]
        if live and width - finished > 0:
            yield t, live, width - finished


def synthetic_pairs(n_same: int, n_different: int, seed: int = 0) -> list[Pair]:
    """Pairs from the synthetic world's step vocabulary, labelled exactly: same move =
    same (move, value) in another paraphrase; different = another value (same or
    other paraphrase of the same move: the hard case) or, for a fifth of them, another
    move."""
    from ets.synthetic.moves import MAX_PARAPHRASES, MOVES, N_VALUES, VALUE_MIN, step_text

    rng = random.Random(seed)
    out: list[Pair] = []
    seen: set[tuple[str, str]] = set()

    def add(a: str, b: str, same: bool) -> bool:
        key = (min(a, b), max(a, b))
        if a == b or key in seen:
            return False
        seen.add(key)
        out.append(Pair(a, b, "paraphrase", "synthetic", same))
        return True

    while sum(p.same for p in out) < n_same:
        m, v = rng.randrange(len(MOVES)), VALUE_MIN + rng.randrange(N_VALUES)
        p, q = rng.sample(range(MAX_PARAPHRASES), 2)
        add(step_text(m, p, v), step_text(m, q, v), True)
    while sum(not p.same for p in out) < n_different:
        m = rng.randrange(len(MOVES))
        v, w = (VALUE_MIN + x for x in rng.sample(range(N_VALUES), 2))
        p, q = rng.randrange(MAX_PARAPHRASES), rng.randrange(MAX_PARAPHRASES)
        m2 = (m + 1 + rng.randrange(len(MOVES) - 1)) % len(MOVES) if rng.random() < 0.2 else m
        add(step_text(m, p, v), step_text(m2, q, w), False)
    return out


def load_pairs(path: Path = PAIRS_PATH) -> list[Pair]:
    return [Pair(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def save_pairs(pairs: Sequence[Pair], path: Path = PAIRS_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for p in pairs:
            fh.write(json.dumps(p.__dict__, ensure_ascii=False) + "\n")


def distances(pairs: Sequence[Pair], embedder: Any) -> np.ndarray:
    """Cosine distance of each pair under ``embedder`` (unit-norm rows)."""
    ea = embedder.embed([p.a for p in pairs])
    eb = embedder.embed([p.b for p in pairs])
    return np.clip(1.0 - np.sum(ea * eb, axis=1), 0.0, 2.0)


def scores_at(dist: np.ndarray, same: np.ndarray, cut: float) -> dict[str, float]:
    """Precision, recall and F1 of "distance <= cut predicts same move"."""
    pred = dist <= cut
    tp = int(np.sum(pred & same))
    fp = int(np.sum(pred & ~same))
    fn = int(np.sum(~pred & same))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"cut": float(cut), "precision": precision, "recall": recall, "f1": f1,
            "tp": tp, "fp": fp, "fn": fn}


def sweep(dist: np.ndarray, same: np.ndarray, step: float = 0.01) -> list[dict[str, float]]:
    """Scores at every cut on a 0.01 grid from 0 to the largest distance (rounded cuts
    are what a config holds)."""
    top = float(np.max(dist)) if len(dist) else 0.0
    return [scores_at(dist, same, round(c, 4)) for c in np.arange(0.0, top + step, step)]


def choose(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The row with the best F1 (the first, i.e. smallest cut, among ties)."""
    return max(rows, key=lambda r: (round(r["f1"], 9), -r["cut"]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m ets.cluster_calibration", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    col = sub.add_parser("collect", help="label sibling/cousin pairs of search runs")
    col.add_argument("runs", nargs="+", type=Path)
    col.add_argument("--out", type=Path, default=PAIRS_PATH)
    col.add_argument("--per-problem", type=int, default=200)
    col.add_argument("--synthetic", type=int, nargs=2, default=(100, 100),
                     metavar=("SAME", "DIFFERENT"))
    col.add_argument("--seed", type=int, default=0)
    cal = sub.add_parser("calibrate", help="precision/recall per cut and the chosen cut")
    cal.add_argument("--pairs", type=Path, default=PAIRS_PATH)
    cal.add_argument("--model", default=None, help="embedding model (default: all-MiniLM-L6-v2)")
    args = parser.parse_args(argv)
    if args.cmd == "collect":
        pairs = collect(args.runs, args.per_problem, args.seed)
        pairs += synthetic_pairs(*args.synthetic, seed=args.seed)
        save_pairs(pairs, args.out)
        for src in sorted({p.source for p in pairs}):
            sel = [p for p in pairs if p.source == src]
            print(f"{src}: {len(sel)} pairs, {sum(p.same for p in sel)} same move")
        return
    from ets.selectors.cluster import SentenceEmbedder

    pairs = load_pairs(args.pairs)
    emb = SentenceEmbedder(args.model, device="cpu", threshold=0.0)
    report = calibrate(pairs, emb)
    best = report["chosen"]
    print(f"{len(pairs)} pairs ({report['real']} real, {report['real_same']} same move); "
          "cut chosen on all pairs: {cut:.2f} precision={precision:.3f} recall={recall:.3f} "
          "F1={f1:.3f}".format(**best))
    for src, r in report["by_source"].items():
        print(f"  {src:<10} n={r['n']:4d} precision={r['precision']:.3f} recall={r['recall']:.3f} "
              f"F1={r['f1']:.3f}  median distance same={r['median_same']:.3f} "
              f"different={r['median_different']:.3f}  best cut on these alone={r['best_cut']:.2f}")
    print("\n| cut | precision | recall | F1 | real precision | real recall |\n|---|---|---|---|---|---|")
    dist, same, real = report["dist"], report["same"], report["is_real"]
    for c in np.arange(0.0, 0.41, 0.02):
        a, r = scores_at(dist, same, c), scores_at(dist[real], same[real], c)
        print(f"| {c:.2f} | {a['precision']:.3f} | {a['recall']:.3f} | {a['f1']:.3f} "
              f"| {r['precision']:.3f} | {r['recall']:.3f} |")


def calibrate(pairs: Sequence[Pair], embedder: Any) -> dict[str, Any]:
    """The chosen cut (best F1 over all labelled pairs: the real ones hold few
    same-move pairs, see the module docstring) and the scores per source at it."""
    dist = distances(pairs, embedder)
    same = np.array([p.same for p in pairs])
    is_real = np.array([p.source != "synthetic" for p in pairs])
    best = choose(sweep(dist, same))
    groups = {"real": is_real, **{s: np.array([p.source == s for p in pairs])
                                  for s in sorted({p.source for p in pairs})}}
    by_source = {}
    for name, m in groups.items():
        if not m.any():
            continue
        d_same, d_diff = dist[m & same], dist[m & ~same]
        by_source[name] = {
            "n": int(m.sum()), **scores_at(dist[m], same[m], best["cut"]),
            "median_same": float(np.median(d_same)) if len(d_same) else float("nan"),
            "median_different": float(np.median(d_diff)) if len(d_diff) else float("nan"),
            "best_cut": choose(sweep(dist[m], same[m]))["cut"],
        }
    return {"chosen": best, "by_source": by_source, "real": int(is_real.sum()),
            "real_same": int((is_real & same).sum()), "dist": dist, "same": same,
            "is_real": is_real}


if __name__ == "__main__":
    main()
