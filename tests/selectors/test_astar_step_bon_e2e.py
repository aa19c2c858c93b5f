"""A*-decoding and step-level best-of-N end to end through the CLI: the synthetic world
and SmolLM2 (transformers), checking each record against the method's rules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from tests.conftest import ROOT

SYNTHETIC = ["+experiment=synthetic", "dataset.limit=6", "search.width=4", "search.concurrency=3"]
SMOLLM2 = ["dataset=demo", "dataset.limit=2", "search.width=2", "search.max_step_tokens=12",
           "search.max_tokens=36", "search.max_depth=4", "search.concurrency=2", "tracker=local"]


def cli(tmp_path, *overrides: str) -> tuple[dict, list[dict]]:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ets", *overrides, f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    return summary, rows


def check_astar(rows: list[dict], width: int, k: int) -> None:
    for r in rows:
        s, tree = r["strategy"], r["tree"]
        # every expansion generated k tree steps, each scored once by the PRM
        assert s["expansions"] * k == len(tree) - 1 == s["prm_calls"]
        assert all(n["score"] is not None for n in tree[1:])
        assert s["solutions"] <= width
        voted = sum(v["count"] for v in r["votes"])
        finished = sum(n["finished"] for n in tree)
        assert voted <= (s["solutions"] if s["solutions"] else finished)  # answers only
        # only a budget stop ends a search short of W solutions while nodes are open
        if s["solutions"] < width and not s["budget_stop"]:
            assert all(n["finished"] or any(c["parent"] == n["id"] for c in tree) for n in tree[1:])


def check_step_bon(rows: list[dict], width: int, c: int) -> None:
    for r in rows:
        tree = r["tree"]
        kids = defaultdict(list)
        for n in tree[1:]:
            kids[n["parent"]].append(n)
        assert len(kids[0]) == width * c
        groups = [kids[0][i * c:(i + 1) * c] for i in range(width)]
        groups += [v for p, v in kids.items() if p != 0]
        ends = []
        for group in groups:
            assert len(group) == c
            best = max(range(c), key=lambda i: group[i]["score"])  # first on ties
            # only the group's argmax is continued; a kept step without children ends a chain
            for i, n in enumerate(group):
                assert (len(kids[n["id"]]) > 0) <= (i == best)
            if not kids[group[best]["id"]]:
                ends.append(group[best])
        assert len(ends) == width and all(n["finished"] for n in ends)  # W chains, all ended
        assert sum(v["count"] for v in r["votes"]) == sum(n["answer"] is not None for n in ends)


def test_astar_synthetic_cli(tmp_path):
    summary, rows = cli(tmp_path, *SYNTHETIC, "selector=astar", "selector.k=3")
    assert summary["problems"] == 6 and summary["prm_calls"] > 0
    assert summary["tokens_generated"] == sum(r["tokens"] for r in rows)
    check_astar(rows, 4, 3)
    assert sum(r["strategy"]["solutions"] for r in rows) > 0


def test_step_bon_synthetic_cli(tmp_path):
    summary, rows = cli(tmp_path, *SYNTHETIC, "selector=step_bon", "selector.candidates_per_step=3")
    assert summary["problems"] == 6
    check_step_bon(rows, 4, 3)


@pytest.mark.slow  # about 40 s each on 2 CPU cores (model load included)
def test_astar_smollm2_cli(tmp_path):
    _, rows = cli(tmp_path, *SMOLLM2, "selector=astar", "selector.k=2")
    assert len(rows) == 2
    check_astar(rows, 2, 2)


@pytest.mark.slow
def test_step_bon_smollm2_cli(tmp_path):
    _, rows = cli(tmp_path, *SMOLLM2, "selector=step_bon", "selector.candidates_per_step=2")
    assert len(rows) == 2
    check_step_bon(rows, 2, 2)
