"""ets.rundir.replay without an engine: the trees and start order a search records rebuild its
exact engine calls (the vLLM replay itself runs in tests/policies/test_vllm.py)."""

from __future__ import annotations

import pytest

from ets.rundir.replay import fit, load_trees, schedule
from ets.rundir.run import run


def record_calls(policy, calls: list) -> None:
    """Wrap ``policy.generate`` to log every call as (problem, context length, n) rows."""
    inner = policy.generate

    def generate(requests):
        calls.append([(r.problem.id, len(r.context_ids), r.n) for r in requests])
        return inner(requests)

    policy.generate = generate


@pytest.mark.parametrize("concurrency", [1, 3])
def test_schedule_rebuilds_the_search_calls(compose_cfg, tmp_path, monkeypatch, concurrency):
    import ets.rundir.run as ets_run

    calls: list = []
    build = ets_run.build_search

    def build_and_watch(cfg):
        search, dataset = build(cfg)
        record_calls(search.policy, calls)
        return search, dataset

    monkeypatch.setattr(ets_run, "build_search", build_and_watch)
    cfg = compose_cfg("+experiment=synthetic", "selector=rebase", "search.width=6", "dataset.limit=5",
                      f"search.concurrency={concurrency}", "search.max_tokens=300")
    run(cfg, tmp_path)
    trees = load_trees(tmp_path)
    assert [t.start_index for t in trees] == list(range(5))
    by_id = {t.id: t for t in trees}

    def ctx_len(tree, node):
        n = 0
        while tree.parent[node] is not None:
            n, node = n + tree.tokens[node], tree.parent[node]
        return n + tree.prompt_tokens

    planned = [[(e.problem, ctx_len(by_id[e.problem], e.parent), len(e.children)) for e in call]
               for call in schedule(trees, concurrency)]
    assert planned == calls
    assert len(calls) > 5 and max(len({p for p, _, _ in c}) for c in calls) == concurrency
    # every recorded token is asked for exactly once
    expected = sum(n for t in trees for e in (x for lv in t.levels for x in lv) for _, n in e.children)
    assert expected == sum(tok for t in trees for node, tok in t.tokens.items() if t.parent[node] is not None)


def test_schedule_rejects_zero_concurrency(tmp_path):
    with pytest.raises(ValueError, match="concurrency"):
        schedule([], 0)


def test_fit_cuts_and_cycles():
    assert fit([1, 2, 3], 2) == [1, 2] and fit([1, 2], 5) == [1, 2, 1, 2, 1] and fit([], 2) == [0, 0]


def test_records_without_a_unique_start_order_keep_the_file_order(tmp_path):
    import json

    def rec(pid, start):
        return {"id": pid, "start_index": start, "tree": [
            {"id": 0, "parent": None, "depth": 0, "tokens": 3, "text": "q"},
            {"id": 1, "parent": 0, "depth": 1, "tokens": 2, "text": "a"}]}

    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in [rec("b", 1), rec("a", 0)]))
    assert [t.id for t in load_trees(tmp_path)] == ["a", "b"]
    path.write_text("".join(json.dumps(r) + "\n" for r in [rec("b", 0), rec("a", 0)]))  # a resumed run
    assert [t.id for t in load_trees(tmp_path)] == ["b", "a"]
