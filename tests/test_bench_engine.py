"""bench/engine.py's row syntax: a selector with its own overrides (composition only)."""

import argparse

from bench.engine import compose_cfg, probe_texts, row_flags, safe, split_variant
from ets.config import register_configs


def _args(**kw) -> argparse.Namespace:
    base = dict(data="x.jsonl", problems=4, width=8, seed=0, max_tokens=64, max_step_tokens=16,
                concurrency=None, scheduler="lockstep", override=[])
    base.update(kw)
    return argparse.Namespace(**base)


def test_split_variant_and_file_name():
    assert split_variant("ets") == ("ets", [])
    assert split_variant("ets:selector.embedder.device=cpu,selector.lambda=2") == (
        "ets", ["selector.embedder.device=cpu", "selector.lambda=2"])
    assert safe("ets:selector.embedder.device=cpu") == "ets_selector.embedder.device_cpu"
    # "arrays" is a row flag (the engine core's arrays, not floats), not an override
    assert split_variant("rebase:arrays,search.seed=2") == ("rebase", ["search.seed=2"])
    assert row_flags("rebase:arrays,search.seed=2") == {"arrays"} and row_flags("ets") == set()
    assert row_flags("ets:selector.arrays=1") == set()


def test_row_overrides_replace_the_common_ones_and_selector_keys_stay_with_ets():
    register_configs()
    args = _args(override=["selector.embedder.num_threads=2", "search.seed=3"])
    cfg = compose_cfg(args, "ets:selector.embedder.num_threads=8,selector.embedder.device=cpu")
    assert cfg.selector._target_ == "ets.selectors.ets.ETSSelector"
    assert cfg.selector.embedder.num_threads == 8 and cfg.selector.embedder.device == "cpu"
    assert cfg.search.seed == 3 and cfg.search.width == 8
    plain = compose_cfg(args, "ets")
    assert plain.selector.embedder.num_threads == 2 and plain.selector.embedder.device == "auto"
    rebase = compose_cfg(args, "rebase")  # selector.* overrides are ETS's only
    assert "embedder" not in rebase.selector and rebase.search.seed == 3


def test_probe_texts_are_new_every_call():
    a, b = probe_texts(1), probe_texts(2)
    assert len(a) == len(set(a)) == 64 and not set(a) & set(b)


def test_decision_timer_pairs_each_observe_with_the_next_propose():
    """A decision at a depth = that depth's ``observe`` + the ``propose`` after it (the
    first propose, before anything was observed, is no decision; the last observe has
    no propose after it)."""
    from bench.engine import DecisionTimer

    timer = DecisionTimer.__new__(DecisionTimer)
    timer.per_strategy = [{"propose": [1.0, 2.0, 3.0], "observe": [10.0, 20.0, 30.0]},
                          {"propose": [5.0], "observe": [7.0]}]
    assert timer.decisions() == [12.0, 23.0, 30.0, 7.0]


def test_decision_timer_sees_every_strategy_and_changes_no_record():
    """Hooked into a real search (synthetic world, ETS with its embedder and CP-SAT): one
    decision per problem and depth, and the records are the golden ones."""
    from bench.engine import DecisionTimer
    from ets.rundir.run import build_search
    from tests.core import golden

    search, dataset = build_search(golden.compose(*golden.WORLDS["synthetic"], *golden.METHODS["ets"]))
    timer = DecisionTimer(search)
    rows = golden.run_search(search, dataset, [])
    assert {r["id"]: r for r in rows} == {r["id"]: r for r in golden.load("synthetic", "ets")}
    assert len(timer.per_strategy) == len(rows)
    assert len(timer.decisions()) == sum(len(c["observe"]) for c in timer.per_strategy) > len(rows)
    # the strategy proposes once more than it observes, unless it stopped after observing
    assert all(len(c["propose"]) in (len(c["observe"]), len(c["observe"]) + 1) for c in timer.per_strategy)


def test_medians_of_repeated_rows():
    """A method measured three times: the median tokens/s and the median of each run's own
    ratio to its bound (not the ratio of medians); a method measured once gets no line."""
    from bench.engine import medians

    def row(method, tok_s, bound, so=0.0, decide=1.0):
        return {"method": method, "tok_s": tok_s, "bound_tok_s": bound, "chains_tok_s": 0.0,
                "bound_so_tok_s": so, "chains_so_tok_s": 0.0, "decide_ms_median": decide}

    rows = [row("ets (async)", 100.0, 200.0, 125.0, 0.7), row("rebase (async)", 50.0, 100.0),
            row("ets (async)", 120.0, 150.0, 150.0, 0.6), row("ets (async)", 90.0, 100.0, 100.0, 0.9)]
    assert medians(rows) == [
        "ets (async), median of 3 runs: 100 tok/s; 80% of the plain batch bound (50%, 80%, 90%); "
        "80% of the search-output batch bound (80%, 80%, 90%); decision 0.700 ms"]
