"""KV accounting over real synthetic searches, against brute force recomputed from the trees.

Each search's per-problem ``kv`` block and the run summary are recomputed from scratch:
from the tree dumped in the record (``paper``: token counts suffice) and from the live
trees the selector saw (``radix``/``paged``, which need token ids). The selection calls
are rebuilt from the tree alone: depth d's unfinished children, while width remains.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hydra import compose, initialize_config_dir

from ets.core.search import _Live
from ets.core.tree import Node, Tree
from ets.core.width import WidthStrategies, WidthStrategy
from ets.kv import PagedKV, PaperKV, RadixKV
from ets.kv.accounting import KVAccounting, ProblemKV, kept, run_kv
from ets.protocols import Expansion
from ets.rundir.results import summarize
from ets.rundir.run import build_search
from ets.types import Problem
from tests.conftest import CONF
from tests.kv.test_backends import brute_paged, brute_paper, brute_radix

SELECTORS = ("rebase", "ets", "beam_ets")


class Spy:
    """Wraps a selector: keeps every tree it is shown and counts its calls per tree."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.trees: dict[str, Tree] = {}
        self.calls: Counter[str] = Counter()

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        self.trees[tree.root.text] = tree
        self.calls[tree.root.text] += 1
        return self.inner.select(candidates, width, tree)

    def __getattr__(self, name: str) -> Any:  # prepare, finalists, stats
        return getattr(self.inner, name)


def selection_calls(rows: list[dict[str, Any]], width: int) -> list[tuple[list[int], list[int]]]:
    """(candidate ids, kept ids) per selection call, rebuilt from a dumped tree.

    Depth-synchronous search: the children made at one step are exactly one depth. The
    width left drops by one per finished child; a call happens while width is left and
    some child is unfinished (never for the last, empty step). Kept = has a child.
    """
    has_child = {r["parent"] for r in rows if r["parent"] is not None}
    remaining, calls = width, []
    for d in range(1, max(r["depth"] for r in rows) + 1):
        level = [r for r in rows if r["depth"] == d]
        remaining -= sum(r["finished"] for r in level)
        cands = [r["id"] for r in level if not r["finished"]]
        if remaining <= 0 or not cands:
            break
        calls.append((cands, [i for i in cands if i in has_child]))
    return calls


def paper_from_rows(rows: list[dict[str, Any]], ids: list[int]) -> int:
    """Paper KV from the dump alone: step tokens over the union of the root-to-node paths."""
    by_id = {r["id"]: r for r in rows}
    on_paths: set[int] = set()
    for i in ids:
        while by_id[i]["parent"] is not None:
            on_paths.add(i)
            i = by_id[i]["parent"]
    return sum(by_id[i]["tokens"] for i in on_paths)


def brute(backend: str, tree: Tree, live: list[Node]) -> int:
    if backend == "paper":
        return brute_paper(live)
    if backend == "radix":
        return brute_radix(tree, live)
    return brute_paged(tree, live, 16)


def search_rows(compose_cfg, selector: str, width: int = 8) -> tuple[list[dict[str, Any]], Spy]:
    # The math_reference world: its searches hit every way to stop (width used up with
    # candidates left included; test_searches_exercise_pruning_and_every_way_to_stop).
    cfg = compose_cfg("+experiment=synthetic", "policy.profile=math_reference", "dataset.limit=6",
                      f"search.width={width}", "search.concurrency=3", f"selector={selector}")
    search, dataset = build_search(cfg)
    spy = Spy(search.selector)
    search.selector, search.strategies = spy, WidthStrategies(spy)
    rows: list[dict[str, Any]] = []
    search.run(dataset.load(), rows.append)
    return rows, spy


@pytest.fixture(scope="module")
def searches() -> dict[str, tuple[list[dict[str, Any]], Spy]]:
    def compose_cfg(*overrides: str):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("config", overrides=list(overrides))

    # beam_ets over-allocates (ceil(W/keep) each), so width can run out with candidates left.
    return {sel: search_rows(compose_cfg, sel) for sel in SELECTORS}



@pytest.mark.parametrize("selector", SELECTORS)
def test_per_problem_kv_equals_brute_force_over_the_dumped_tree(searches, selector):
    rows, spy = searches[selector]
    assert len(rows) == 6
    for rec in rows:
        dump = rec["tree"]
        calls = selection_calls(dump, 8)
        tree = spy.trees[dump[0]["text"]]
        nodes = tree.nodes
        assert [(n.id, n.n_tokens) for n in nodes] == [(r["id"], r["tokens"]) for r in dump]
        # one measurement per selection call, none for the step where the search stops
        assert spy.calls[dump[0]["text"]] == len(calls) == len(rec["kv"]["paper"]["per_depth"])
        assert rec["depths"] == max(r["depth"] for r in dump)
        newest = sum(nodes[i].n_tokens for cands, _ in calls for i in cands)
        for backend in ("paper", "radix", "paged"):
            kv = rec["kv"][backend]
            before = [brute(backend, tree, [nodes[i] for i in c]) for c, _ in calls]
            after = [brute(backend, tree, [nodes[i] for i in k]) for _, k in calls]
            if backend == "paper":  # the dump alone is enough for the paper's measure
                assert before == [paper_from_rows(dump, c) for c, _ in calls]
                assert after == [paper_from_rows(dump, k) for _, k in calls]
            assert kv["per_depth"] == before
            assert kv["total"] == sum(before)
            assert kv["mean"] == pytest.approx(sum(before) / len(before))
            assert kv["peak"] == max(before)
            assert kv["after_pruning"]["per_depth"] == after
            assert kv["after_pruning"]["total"] == sum(after)
            assert kv["after_pruning"]["mean"] == pytest.approx(sum(after) / len(after))
            assert kv["newest_step"]["total"] == newest
            assert kv["newest_step"]["share"] == pytest.approx(newest / sum(before))


def test_searches_exercise_pruning_and_every_way_to_stop(searches):
    """The brute-force test above is only as strong as the searches it sees."""
    pruned = stopped_empty = stopped_width = 0
    for rows, _ in searches.values():
        for rec in rows:
            dump = rec["tree"]
            calls = selection_calls(dump, 8)
            pruned += sum(len(k) < len(c) for c, k in calls)
            last = max(r["depth"] for r in dump)
            unfinished_last = [r for r in dump if r["depth"] == last and not r["finished"]]
            stopped_width += bool(unfinished_last)
            stopped_empty += not unfinished_last
    assert pruned > 0 and stopped_empty > 0 and stopped_width > 0


@pytest.mark.parametrize("selector", SELECTORS)
def test_run_summary_totals_are_the_mean_of_the_problem_totals(searches, selector):
    rows, _ = searches[selector]
    summary = summarize(rows)["kv"]
    for backend in ("paper", "radix", "paged"):
        s = summary[backend]
        pairs = [v for r in rows for v in r["kv"][backend]["per_depth"]]
        assert s["mean"] == pytest.approx(sum(pairs) / len(pairs))
        assert s["peak"] == max(pairs)
        assert s["total"] == pytest.approx(sum(sum(r["kv"][backend]["per_depth"]) for r in rows) / 6)
        after = [v for r in rows for v in r["kv"][backend]["after_pruning"]["per_depth"]]
        assert s["after_pruning"]["total"] == pytest.approx(sum(after) / 6)
        assert s["after_pruning"]["mean"] == pytest.approx(sum(after) / len(after))
        newest = [r["kv"][backend]["newest_step"]["total"] for r in rows]
        assert s["newest_step"]["total"] == pytest.approx(sum(newest) / 6)
        assert s["newest_step"]["share"] == pytest.approx(sum(newest) / sum(pairs))


def _accounting() -> KVAccounting:
    return KVAccounting([PaperKV(), RadixKV(), PagedKV(4)], "paper")


def test_problem_kv_by_hand():
    """Prompt (3 tokens) → a (2) → {b (3), c (5)}; a second root child d (4) pruned."""
    tree = Tree("q", (1, 2, 3))
    a = tree.add_child(tree.root, "a", (7, 8))
    d = tree.add_child(tree.root, "d", (9, 9, 9, 9))
    log = ProblemKV(_accounting())
    log.observe(tree, [a, d], [2, 0])
    b = tree.add_child(a, "b", (4, 5, 6))
    c = tree.add_child(a, "c", (4, 5, 6, 7, 8))
    log.observe(tree, [b, c], [1, 1])
    s = log.summary()
    assert s["paper"]["per_depth"] == [2 + 4, 2 + 3 + 5]
    assert s["paper"]["after_pruning"]["per_depth"] == [2, 10]
    # radix: prompt 3 + {a 2, d 4} = 9; then 3 + 2 + shared (4,5,6) + (7,8) = 10
    assert s["radix"]["per_depth"] == [9, 10] and s["radix"]["after_pruning"]["per_depth"] == [5, 10]
    # paged (B=4): [1,2,3,7] full + 8 partial; [1,2,3,9] full + (9,9,9) partial → 4 blocks
    assert s["paged"]["per_depth"][0] == 4 * 4 and s["paged"]["after_pruning"]["per_depth"][0] == 2 * 4
    assert s["paper"]["total"] == 16 and s["paper"]["peak"] == 10 and s["paper"]["mean"] == 8.0
    assert s["paper"]["newest_step"] == {"total": 6 + 8, "share": 14 / 16}
    assert s["radix"]["newest_step"]["share"] == 14 / 19


def test_kept_rejects_a_count_list_of_the_wrong_length():
    tree = Tree("q", (1,))
    a = tree.add_child(tree.root, "a", (2,))
    assert kept([a], [0]) == []
    with pytest.raises(ValueError, match="2 counts for 1 candidates"):
        kept([a], [1, 1])


def test_no_measurement_when_the_search_stops(compose_cfg):
    """A round with all children finished, and one with the width used up: no sample."""
    cfg = compose_cfg("+experiment=synthetic", "dataset.limit=1", "search.width=2")
    search, _ = build_search(cfg)
    spy = Spy(search.selector)
    tree = Tree("q", (1, 2))
    strategy = WidthStrategy(spy, tree, search.budget, "spy")
    state = _Live(Problem("p", "q", "1"), strategy, search.kv.problem())

    def round_(parent: Node, *kids: Node) -> bool:
        strategy.observe([(Expansion(parent, len(kids)), list(kids))])
        return search._measure_kv(state)

    done = tree.add_child(tree.root, "x", (3,), finished=True)
    alive = tree.add_child(tree.root, "y", (4, 5))
    assert round_(tree.root, done, alive)  # width 2 → 1 left, one candidate: a selection call
    assert state.kv.calls == 1 and state.kv.summary()["paper"]["per_depth"] == [2]
    finished = tree.add_child(alive, "z", (6,), finished=True)
    assert not round_(alive, finished)  # no candidate left: stop, no measurement
    assert state.kv.calls == 1 and spy.calls["q"] == 1 and strategy.done()
    strategy.remaining = 2
    extra = [tree.add_child(alive, "w", (7,), finished=True),
             tree.add_child(alive, "u", (9,), finished=True), tree.add_child(alive, "v", (8,))]
    assert not round_(alive, *extra)  # width used up, a candidate left: stop, no measurement
    assert state.kv.calls == 1 and spy.calls["q"] == 1 and strategy.done()
    assert run_kv([{"kv": state.kv.summary()}])["paper"]["total"] == 2


def test_depth_metrics_average_the_problems_measured_at_that_step(compose_cfg):
    """The per-depth KV aggregate is over the problems that selected at this step only."""
    cfg = compose_cfg("+experiment=synthetic", "dataset.limit=6", "search.width=8",
                      "search.concurrency=6", "selector=rebase")
    search, dataset = build_search(cfg)
    depth_rows: list[dict[str, float]] = []
    rows: list[dict[str, Any]] = []
    search.run(dataset.load(), rows.append, depth_rows.append)
    assert len(depth_rows) == max(r["depths"] for r in rows)  # all 6 in flight from the start
    for d, metrics in enumerate(depth_rows):
        vals = [r["kv"]["radix"]["per_depth"][d] for r in rows if d < len(r["kv"]["radix"]["per_depth"])]
        assert metrics["kv_radix"] == pytest.approx(sum(vals) / len(vals) if vals else 0.0)
    assert any(len(r["kv"]["radix"]["per_depth"]) < r["depths"] for r in rows)
