"""The search loop with a scripted policy and PRM: width conservation, every finish
reason, the EOS fallback, token and depth caps, rollouts, validation of strategies, and
the asynchronous scheduler (same records as lockstep; never waits with work unsent)."""

from __future__ import annotations

import random
import re
from typing import Any

import pytest

from ets.core.checks import StrategyError
from ets.protocols import Budget, Expansion
from ets.selectors.best_of_n import BestOfNSelector
from ets.selectors.rebase import RebaseSelector
from tests.core import golden
from tests.core.helpers import (
    LookaheadStrategies,
    ScriptedPolicy,
    make_search,
    problems,
    run_all,
)


def counting(answer_at: int = 3, tokens: int = 5, early: set[tuple[int, int]] = frozenset()):
    """Steps ``s<d>.<j>``; depth ``answer_at`` answers 7 (EOS); (depth, j) in ``early``
    answer one depth early."""

    def script(context, j, req):
        d = context.count("\n\n") + 1
        if d >= answer_at or (d, j) in early:
            return f"s{d}.{j}\nThe answer is 7.", tokens, "eos"
        return f"s{d}.{j} work\n\n", tokens, "stop"

    return script


def nodes(record, **match):
    return [n for n in record["tree"][1:] if all(n[k] == v for k, v in match.items())]


def test_width_is_conserved_every_depth():
    # j == 0 at depth 2 finishes early: REBASE must hand the remaining 5 out at depth 3.
    policy = ScriptedPolicy(counting(answer_at=4, early={(2, 0)}))
    [rec] = run_all(make_search(policy, RebaseSelector(0.2), width=6), problems(1))
    per_depth = {d: len(nodes(rec, depth=d)) for d in (1, 2, 3, 4)}
    early = len([n for n in nodes(rec, depth=2) if n["finished"]])
    assert per_depth[1] == 6 and per_depth[2] == 6
    assert per_depth[3] == 6 - early and per_depth[4] == 6 - early
    assert len(nodes(rec, finished=True)) == 6
    assert rec["answers"] == ["7"] * 6 and rec["depths"] == 4


def run_one(script, **kw):
    policy = ScriptedPolicy(script)
    [rec] = run_all(make_search(policy, RebaseSelector(0.2), width=1, **kw), problems(1))
    return rec, policy


def steps(*spec):
    """A width-1 script from a list of (text, tokens, reason) per depth."""
    return lambda context, j, req: spec[context.count("\n\n")]


def last(rec):
    return rec["tree"][-1]


def test_finish_reason_answer():
    rec, _ = run_one(steps(("a\n\n", 3, "stop"), ("The answer is 7.\n\n", 4, "stop")))
    assert (last(rec)["finish_reason"], last(rec)["answer"], last(rec)["depth"]) == ("answer", "7", 2)


def test_finish_reason_answer_split_over_two_steps():
    rec, _ = run_one(steps(("\\boxed{4\n\n", 3, "stop"), ("2}\n\n", 2, "stop")))
    # the box spans the step boundary: the parent's and the child's text find it (no EOS)
    assert (last(rec)["finish_reason"], last(rec)["answer"], last(rec)["depth"]) == ("answer", "4\n\n2", 2)


def test_finish_reason_eos_without_answer():
    rec, _ = run_one(steps(("a\n\n", 3, "stop"), ("bye", 2, "eos")))
    assert (last(rec)["finish_reason"], last(rec)["answer"]) == ("eos", None)
    assert rec["predictions"]["majority"] is None and rec["correct"]["coverage"] is False


def test_eos_fallback_reads_the_whole_trajectory():
    # the box opens at depth 1 and closes at depth 3: only the whole text has the answer
    rec, _ = run_one(steps(("\\boxed{1\n\n", 2, "stop"), ("2\n\n", 1, "stop"), ("3}", 1, "eos")))
    assert (last(rec)["finish_reason"], last(rec)["answer"], last(rec)["depth"]) == ("answer", "1\n\n2\n\n3", 3)
    # without EOS the whole trajectory is not read: the depth cap ends it, answerless
    rec, _ = run_one(steps(("\\boxed{1\n\n", 2, "stop"), ("2\n\n", 1, "stop"), ("3}\n\n", 1, "stop")),
                     max_depth=3)
    assert (last(rec)["finish_reason"], last(rec)["answer"]) == ("depth", None)


def test_token_cap_limits_requests_and_ends_with_length():
    rec, policy = run_one(lambda c, j, r: ("w\n\n", 40, "stop"), max_tokens=100)
    assert [r.max_tokens for r in policy.requests] == [100, 60, 20]
    assert [n["tokens"] for n in rec["tree"][1:]] == [40, 40, 20]
    assert (last(rec)["finish_reason"], last(rec)["depth"]) == ("length", 3)


def test_depth_cap_ends_with_depth():
    rec, policy = run_one(lambda c, j, r: ("w\n\n", 2, "stop"), max_depth=5)
    assert max(n["depth"] for n in rec["tree"]) == 5 and len(policy.requests) == 5
    assert (last(rec)["finish_reason"], last(rec)["finished"]) == ("depth", True)


def test_rollouts_do_not_consume_width_nor_enter_the_tree():
    policy = ScriptedPolicy(counting(answer_at=5, tokens=5))
    search = make_search(policy, LookaheadStrategies(k=2), width=4)
    [rec] = run_all(search, problems(1))
    tree_nodes = rec["tree"][1:]
    # every depth of the tree is one expansion of the remaining width (4 children)
    assert [len(nodes(rec, depth=d)) for d in (1, 2, 3, 4, 5)] == [4, 4, 4, 4, 4]
    assert len([n for n in tree_nodes if n["finished"]]) == 4
    assert all(n["id"] >= 0 for n in rec["tree"])
    # rollouts: 2 steps below each of the 4 open children at depths 1, 2 and 3, then
    # 1 below those at depth 4 (depth 5 answers: a finished rollout end is not extended)
    rollouts = 4 * 2 + 4 * 2 + 4 * 2 + 4 * 1
    assert rec["strategy"] == {"rollouts": float(rollouts)}
    assert rec["rollout_tokens"] == 5 * rollouts
    assert search.counters.tokens_generated == rec["tokens"] + rec["rollout_tokens"]
    assert rec["tokens"] == 5 * len(tree_nodes)


class Bad:
    """A strategy factory whose strategy proposes ``make(tree)`` once."""

    name = "bad_test"

    def __init__(self, make):
        self.make = make

    def __call__(self, problem, tree, rng, budget):
        self.tree, self.budget = tree, budget
        return self

    def propose(self):
        return self.make(self.tree)

    def observe(self, results):
        pass

    def done(self):
        return False

    def finalists(self):
        return []

    def kv_nodes(self):
        return []

    def stats(self):
        return {}


@pytest.mark.parametrize("make,message", [
    (lambda t: [Expansion(t.root, -1)], "n=-1; n must be a non-negative integer"),
    (lambda t: [Expansion(t.root, 2.5)], "n=2.5"),
    (lambda t: [(t.root, 2)], "not an Expansion"),
    (lambda t: Expansion(t.root, 2), "must return a list of Expansion"),
    (lambda t: [Expansion(t.root, 10_000)], "over its budget max_nodes=80"),
    (lambda t: [], "is not done but proposed no expansion"),
])
def test_invalid_proposals_fail_naming_the_strategy(make, message):
    search = make_search(ScriptedPolicy(counting()), Bad(make), width=4, max_depth=10)
    with pytest.raises(StrategyError, match=re.escape(message)) as err:
        run_all(search, problems(1))
    assert "'bad_test'" in str(err.value)


def test_foreign_finished_and_capped_nodes_are_refused():
    from ets.core.tree import Tree

    other = Tree("x", (1,))
    search = make_search(ScriptedPolicy(counting()), Bad(lambda t: [Expansion(other.root, 1)]))
    with pytest.raises(StrategyError, match="not a node of this problem's tree"):
        run_all(search, problems(1))

    def finished(tree):
        node = tree.add_child(tree.root, "x", (1,))
        node.finished, node.finish_reason = True, "eos"
        return [Expansion(node, 1)]

    with pytest.raises(StrategyError, match=r"node 1 is finished \(eos\)"):
        run_all(make_search(ScriptedPolicy(counting()), Bad(finished)), problems(1))

    def deep(tree):
        node = tree.root
        for _ in range(3):
            node = tree.add_child(node, "x", (1,))
        return [Expansion(node, 1)]

    with pytest.raises(StrategyError, match="depth 3, the depth cap is 3"):
        run_all(make_search(ScriptedPolicy(counting()), Bad(deep), max_depth=3), problems(1))


def test_bad_selector_counts_fail_naming_the_selector():
    class ShortSelector:
        def select(self, candidates, width, tree):
            return [1]

    class NegativeSelector:
        def select(self, candidates, width, tree):
            return [-1] * len(candidates)

    with pytest.raises(StrategyError, match=r"selector 'ShortSelector' returned 1 counts for 4 candidates"):
        run_all(make_search(ScriptedPolicy(counting()), ShortSelector()), problems(1))
    with pytest.raises(StrategyError, match=r"selector 'NegativeSelector' returned counts \[-1, -1, -1, -1\]"):
        run_all(make_search(ScriptedPolicy(counting()), NegativeSelector()), problems(1))


def test_budget_defaults():
    search = make_search(ScriptedPolicy(counting()), BestOfNSelector(), width=4, max_depth=10, max_tokens=99)
    assert search.budget == Budget(width=4, max_depth=10, max_tokens=99, max_nodes=80)


# -- the asynchronous scheduler -------------------------------------------------------------
class ShuffledStream:
    """A streaming policy over a batch policy that returns a random non-empty subset of
    the submitted groups at each wait (an engine whose requests finish in any order).

    ``in_flight()`` tells how many problems are started and not yet written; at every
    wait the scheduler must have one group submitted for each (the engine is never idle
    while a problem has work)."""

    def __init__(self, policy, seed, in_flight):
        self.policy, self.rng, self.in_flight = policy, random.Random(seed), in_flight
        self.pending: dict[int, list] = {}
        self.next, self.waits, self.groups_at_wait = 0, 0, []

    def format_prompt(self, problem):
        return self.policy.format_prompt(problem)

    def generate(self, requests):  # pragma: no cover - the async scheduler never calls it
        raise AssertionError("the async scheduler must use submit/wait")

    def submit(self, requests):
        self.next += 1
        self.pending[self.next] = list(requests)
        return self.next

    def wait(self):
        self.waits += 1
        self.groups_at_wait.append((len(self.pending), self.in_flight()))
        tickets = sorted(self.pending)
        pick = self.rng.sample(tickets, self.rng.randint(1, len(tickets)))
        return [(t, self.policy.generate(self.pending.pop(t))) for t in pick]


class AllAtOnce(ShuffledStream):
    """Every wait returns every submitted group (several problems per round); each submit
    (its problem) and each wait (the children of every group it returns) go to ``events``."""

    def __init__(self, policy, events: list[tuple[str, Any]]):
        super().__init__(policy, 0, lambda: 0)
        self.events = events

    def submit(self, requests):
        self.events.append(("submit", requests[0].problem.id))
        return super().submit(requests)

    def wait(self):
        tickets = sorted(self.pending)
        done = [(t, self.policy.generate(self.pending.pop(t))) for t in tickets]
        self.events.append(("wait", [sum(len(g) for g in gens) for _, gens in done]))
        return done


@pytest.mark.parametrize("method", ["rebase", "beam_ets", "dvts", "ffs", "best_of_n"])
def test_async_out_of_order_engine_gives_the_lockstep_records(method):
    from ets.rundir.run import build_search

    overrides = [*golden.WORLDS["synthetic"], *golden.METHODS[method], "search.concurrency=3"]
    expected = golden.run_search(*build_search(golden.compose(*overrides)))
    for seed in (0, 1):
        search, dataset = build_search(golden.compose(*overrides, "search.scheduler=async"))
        started, written = [], []
        real_start = search._start

        def start(problem, real_start=real_start, started=started):
            started.append(problem.id)
            return real_start(problem)

        search._start = start
        stream = ShuffledStream(search.policy, seed, lambda s=started, w=written: len(s) - len(w))
        search.policy = stream
        rows = golden.run_search(search, dataset, written)
        assert {r["id"]: r for r in rows} == {r["id"]: r for r in expected}
        assert all(pending == flying for pending, flying in stream.groups_at_wait)
        assert stream.waits > max(r["depths"] for r in rows)  # out of order: more waits than depths


def test_finisher_is_configured_from_the_policy():
    from ets.core.finish import from_policy

    class TaggedPolicy:
        step_delimiter, answer_markers = "ки", ["The answer is"]

    class PlainPolicy:
        step_delimiter = "\n\n"

    tagged = from_policy(TaggedPolicy(), max_tokens=10, max_depth=3)
    assert (tagged.markers, tagged.step_tag) == (["The answer is"], "ки")
    assert tagged.extract("so The answer is 18 ки") == "18"  # the tag does not stick
    plain = from_policy(PlainPolicy(), max_tokens=10, max_depth=3)
    assert (plain.markers, plain.step_tag) == (["boxed", "The answer is"], "")
    assert plain.extract("\\boxed{5} The answer is 6") == "5"  # marker order decides


def test_bad_scheduler_is_refused_naming_the_key():
    from ets.config import ConfigError, validate

    with pytest.raises(ConfigError, match="search.scheduler=asyn is invalid; allowed: lockstep, async"):
        validate(golden.compose("+experiment=synthetic", "search.scheduler=asyn"))
    with pytest.raises(ValueError, match="search.scheduler='x' is invalid; allowed: lockstep, async"):
        make_search(ScriptedPolicy(counting()), BestOfNSelector(), scheduler="x")


def test_async_sends_each_problems_next_group_before_selecting_for_the_next_problem():
    """Issue 9 §2: a problem's next expansions go to the engine as soon as its own children
    are scored and selected, not after every problem that finished in the same wait."""
    from ets.rundir.run import build_search

    overrides = [*golden.WORLDS["synthetic"], *golden.METHODS["rebase"], "search.concurrency=4",
                 "search.scheduler=async"]
    search, dataset = build_search(golden.compose(*overrides))
    events: list[tuple[str, Any]] = []
    real_measure = search._measure_kv

    def measure(state):
        events.append(("selected", state.problem.id))
        return real_measure(state)

    search._measure_kv = measure
    search.policy = AllAtOnce(search.policy, events)
    rows = golden.run_search(search, dataset, [])
    assert len(rows) == len(dataset.load())
    checked = 0
    for i, (kind, pid) in enumerate(events):
        if kind != "selected":
            continue
        later = [e for e in events[i + 1:] if e[0] != "wait"]
        resubmitted = ("submit", pid) in later
        if resubmitted:  # the problem goes on: its group is the very next event
            assert events[i + 1] == ("submit", pid), events[i - 2:i + 4]
            checked += 1
    assert checked > 10


@pytest.mark.parametrize("chunk", [0, 1, 9, 20])
def test_async_scores_and_selects_the_groups_of_a_wait_in_chunks_of_round_chunk_children(chunk):
    """search.round_chunk: the groups of one wait are scored (one PRM call each chunk) in
    runs of problems holding at least ``chunk`` children, cut as soon as a run reaches it,
    and each chunk's next expansions are sent before the next chunk is scored; 0 = one
    PRM call per wait. The records do not change."""
    from ets.rundir.run import build_search

    overrides = [*golden.WORLDS["synthetic"], *golden.METHODS["rebase"], "search.concurrency=4",
                 "search.scheduler=async", f"search.round_chunk={chunk}"]
    search, dataset = build_search(golden.compose(*overrides))
    events: list[tuple[str, Any]] = []
    real_score = search.prm.score

    def score(children):
        per_problem: dict[str, int] = {}
        for problem, _ in children:
            per_problem[problem.id] = per_problem.get(problem.id, 0) + 1
        events.append(("score", per_problem))
        return real_score(children)

    search.prm.score = score
    search.policy = AllAtOnce(search.policy, events)
    rows = golden.run_search(search, dataset, [])
    assert {r["id"]: r for r in rows} == {r["id"]: r for r in golden.load("synthetic", "rebase")}

    waits = [i for i, e in enumerate(events) if e[0] == "wait"] + [len(events)]
    split = 0
    for start, end in zip(waits, waits[1:]):
        sizes = events[start][1]
        # the chunks this wait must be cut into, by hand: close a run once it holds >= chunk
        expected, run = [], []
        for n in sizes:
            run.append(n)
            if chunk and sum(run) >= chunk:
                expected.append(run)
                run = []
        expected += [run] if run else []
        scored = [e for e in events[start + 1:end] if e[0] == "score"]
        assert [list(e[1].values()) for e in scored] == expected
        split += len(scored) > 1
        # every chunk but the first is scored only after the previous chunk's problems that
        # go on have been sent their next group
        body = events[start + 1:end]
        for k in range(1, len(scored)):
            before = body[:body.index(scored[k])]
            previous = set(scored[k - 1][1])
            sent = {pid for kind, pid in before if kind == "submit"}
            going_on = {pid for kind, pid in body if kind == "submit"} & previous
            assert going_on <= sent
    if chunk in (1, 9):
        assert split > 3  # the cases where chunks matter did occur
    if chunk == 0:
        assert split == 0


def test_switch_interval_is_set_while_the_search_runs_and_restored_after():
    """search.switch_interval_ms: the PRM (called from the search thread) sees the
    configured GIL switch interval; Python's own is back once the run ends; null leaves
    it; 0 fails at composition naming the key."""
    import sys

    from ets.config import ConfigError, validate
    from ets.rundir.run import build_search

    before = sys.getswitchinterval()
    for value, expected in (("0.5", 0.0005), ("null", before)):
        search, dataset = build_search(golden.compose(*golden.WORLDS["synthetic"], *golden.METHODS["rebase"],
                                                      f"search.switch_interval_ms={value}"))
        seen: list[float] = []
        real_score = search.prm.score

        def score(children, real_score=real_score, seen=seen):
            seen.append(sys.getswitchinterval())
            return real_score(children)

        search.prm.score = score
        golden.run_search(search, dataset, [])
        assert seen and all(abs(s - expected) < 1e-9 for s in seen)
        assert sys.getswitchinterval() == before
    with pytest.raises(ConfigError, match=r"search\.switch_interval_ms=0\.0 is invalid: must be > 0"):
        validate(golden.compose(*golden.WORLDS["synthetic"], "search.switch_interval_ms=0"))
