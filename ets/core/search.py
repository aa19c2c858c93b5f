"""The search loop (ALGORITHMS.md §1): per-problem strategies, batched across problems.

Each problem in flight has its own :class:`~ets.protocols.SearchStrategy` (made by a
:class:`~ets.protocols.StrategyFactory`; a plain ``Selector`` runs through
:class:`ets.core.width.WidthStrategies`). A round of one problem is: the strategy
proposes expansions → the policy generates → :class:`~ets.protocols.FinishClassifier`
marks finished children → the PRM scores → the strategy observes → the KV backends
measure the strategy's ``kv_nodes``. Problems join and leave the pool independently
(a finished problem is written out at once and a new one takes its place).

Two schedulers (``search.scheduler``):

- ``lockstep``: every round, all problems in flight propose; one policy call, one PRM
  call, then every strategy observes. (The loop before issue 9.)
- ``async``: a problem's next expansions go to the engine as soon as its previous
  children are scored and observed. With a :class:`~ets.protocols.StreamingPolicy`
  (continuous batching) the engine keeps generating other problems' requests while
  finished groups are scored and selected. The groups that finished since the last
  wait are scored and selected in chunks of at least ``search.round_chunk`` children
  (one PRM call and one embedding call each), and each chunk's next expansions leave
  before the next chunk is scored. Other policies get one ``generate`` per wait, of
  everything submitted (:class:`ets.core.engines.BatchEngine`).

Results do not depend on the scheduler: request seeds depend only on (run seed,
problem, node), node ids only on the problem's own rounds, and records are written per
problem (their order in ``problems.jsonl`` may differ; ``run`` keys them by id).
"""

from __future__ import annotations

import random
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ets.core.answers import vote
from ets.core.checks import StrategyError, check_proposal
from ets.core.engines import streaming
from ets.core.finish import from_policy
from ets.core.tree import Node, Tree
from ets.core.width import WidthStrategies
from ets.kv.accounting import KVAccounting, ProblemKV
from ets.protocols import (
    PRM,
    BatchPreparer,
    Budget,
    EngineTelemetry,
    Expander,
    Expansion,
    FinishClassifier,
    Grader,
    HasNodeBudget,
    HasRunStats,
    HasSelectionCounts,
    Policy,
    SearchStrategy,
    Selector,
    StepLogprobSwitch,
    StrategyFactory,
    UsesStepLogprobs,
)
from ets.types import Generation, GenRequest, Problem

SCHEDULERS = ("lockstep", "async")
Results = list[tuple[Expansion, list[Node]]]


@dataclass(eq=False)  # identity: states are looked up in lists of live problems
class _Live:
    problem: Problem
    strategy: SearchStrategy
    kv: ProblemKV
    started: float = field(default_factory=time.perf_counter)
    start_index: int = 0  # order in which problems entered the search (ets.rundir.replay)
    pending: list[Expansion] = field(default_factory=list)
    nodes: int = 0  # generated nodes (tree and rollouts), for the budget check
    kv_count: int = 0  # len(strategy.kv_nodes()) after the last round (asked once per round)
    rollout_tokens: int = 0
    prm_scored: int = 0  # items the PRM scored for this problem (tree steps and rollouts)

    @property
    def tree(self) -> Tree:
        return self.strategy.tree


@dataclass
class SearchCounters:
    policy_calls: int = 0
    prm_calls: int = 0
    tokens_generated: int = 0
    depth_iterations: int = 0


def request_seed(seed: int, problem_id: str, node_id: int) -> int:
    """A stable 31-bit seed per (run seed, problem, node): batch order does not matter."""
    return zlib.crc32(f"{seed}:{problem_id}:{node_id}".encode()) & 0x7FFFFFFF


def problem_rng(seed: int, problem_id: str) -> random.Random:
    """The strategy's RNG of one problem: independent of batching and of other problems."""
    return random.Random(zlib.crc32(f"{seed}:{problem_id}:strategy".encode()))


class Search:
    """Runs tree search over a stream of problems.

    Args:
        policy, prm, expander: The components (see :mod:`ets.protocols`).
        strategies: A :class:`~ets.protocols.StrategyFactory`, or a ``Selector`` (run
            through :class:`~ets.core.width.WidthStrategies`).
        kv: KV accounting over all backends.
        grader: Answer equivalence for voting and correctness.
        width: W, trajectories to finish per problem (the strategies' width budget).
        max_depth: Depth cap; trajectories still live there end with reason ``depth``.
        max_tokens: Per-trajectory generated-token cap (1024 in the paper).
        seed: Run seed (mixed into every request seed and every strategy's RNG).
        concurrency: Problems in flight.
        aggregation: Step-score aggregation for the vote weights.
        scheduler: ``lockstep`` or ``async`` (module docstring).
        round_chunk: Async scheduler only: the groups that come back in one wait are
            scored, prepared and observed in chunks of at least this many children, each
            chunk's next expansions sent before the next chunk is scored (0: all at once,
            one PRM call per wait). The default, 64, is one batch of the ETS embedder.
            On an H200 (README "Performance on a GPU") the engine was idle 0.4-1.6% of
            an async ETS search with chunks; with the CUDA-graph embedder, 0 and 64 were
            within run-to-run noise of each other.
        switch_interval_ms: Python's GIL switch interval while :meth:`run` runs (restored
            after); ``None`` leaves it. Under async the search thread shares the GIL with
            vLLM's output handler; CP-SAT and the embedder release it and, at Python's
            5 ms, can wait up to that long to get it back. On an H200, 0.5 ms made no
            measurable difference (README "Performance on a GPU"): the handler's own
            CPU was the cost, now moved out by ``policy.frontend_process``.
        finisher: Finish classification; default: the policy's markers and step tag
            (:func:`ets.core.finish.from_policy`).
        max_nodes: Generated nodes per problem a strategy may spend; default
            ``2 * width * max_depth`` (beam search's reference variant may hand out up
            to twice the remaining width per round), or the factory's
            ``node_budget(width, max_depth)`` when it has one.
    """

    def __init__(
        self, policy: Policy, prm: PRM, expander: Expander, strategies: StrategyFactory | Selector,
        kv: KVAccounting, grader: Grader, *, width: int, max_depth: int, max_tokens: int,
        seed: int = 0, concurrency: int = 8, aggregation: str = "last", scheduler: str = "async",
        finisher: FinishClassifier | None = None, max_nodes: int | None = None,
        round_chunk: int = 64, switch_interval_ms: float | None = None,
    ) -> None:
        if scheduler not in SCHEDULERS:
            raise ValueError(f"search.scheduler={scheduler!r} is invalid; allowed: {', '.join(SCHEDULERS)}")
        self.policy, self.prm, self.expander = policy, prm, expander
        self.selector: Selector | None = None
        if isinstance(strategies, Selector):
            self.selector, strategies = strategies, WidthStrategies(strategies)
        self.strategies: StrategyFactory = strategies
        self.kv, self.grader = kv, grader
        self.width, self.max_depth, self.max_tokens = width, max_depth, max_tokens
        self.seed, self.concurrency, self.aggregation = seed, concurrency, aggregation
        self.scheduler = scheduler
        if round_chunk < 0:
            raise ValueError(f"search.round_chunk={round_chunk} is invalid: use 0 (no chunks) or more")
        self.round_chunk = round_chunk
        if switch_interval_ms is not None and not switch_interval_ms > 0:
            raise ValueError(f"search.switch_interval_ms={switch_interval_ms} is invalid: use null or > 0")
        self.switch_interval_ms = switch_interval_ms
        self.finisher = finisher or from_policy(policy, max_tokens, max_depth)
        if isinstance(policy, StepLogprobSwitch):
            readers = [(key, part) for key, part in (("prm", prm), ("selector", strategies))
                       if isinstance(part, UsesStepLogprobs) and part.uses_step_logprobs]
            if policy.step_logprobs is False and readers:
                key, part = readers[0]
                raise ValueError(
                    f"policy.step_logprobs=false, but {key} {type(part).__name__} reads the "
                    "policy's step log-probabilities: set policy.step_logprobs=true (or null: auto)")
            policy.need_step_logprobs(bool(readers))  # what auto (null) asks the engine for
        if max_nodes is None and isinstance(strategies, HasNodeBudget):
            max_nodes = strategies.node_budget(width, max_depth)
        self.budget = Budget(width, max_depth, max_tokens, max_nodes or 2 * width * max_depth)
        self.counters = SearchCounters()
        # Engines that report their own numbers (vLLM) are read after every policy call.
        self.engine_series: list[dict[str, float]] = []
        self.started = 0  # problems started so far (each record's ``start_index``)

    def stats(self) -> dict[str, Any]:
        """Run-level strategy numbers (``summary.json``'s ``selector_stats``)."""
        return self.strategies.stats() if isinstance(self.strategies, HasRunStats) else {}

    def run(
        self, problems: Iterable[Problem], on_result: Callable[[dict[str, Any]], None],
        on_depth: Callable[[dict[str, float]], None] | None = None,
    ) -> SearchCounters:
        """Search every problem; ``on_result`` gets each problem's record as it finishes."""
        loop = self._run_lockstep if self.scheduler == "lockstep" else self._run_async
        before = sys.getswitchinterval()
        if self.switch_interval_ms is not None:
            sys.setswitchinterval(self.switch_interval_ms / 1e3)
        try:
            loop(iter(problems), on_result, on_depth)
        finally:
            sys.setswitchinterval(before)
        return self.counters

    # -- schedulers ----------------------------------------------------------------------
    def _fill(self, live: list[_Live], queue: Iterator[Problem],
              on_result: Callable[[dict[str, Any]], None]) -> list[_Live]:
        """Start problems until ``concurrency`` are in flight; returns the new ones."""
        new = []
        while len(live) < self.concurrency:
            problem = next(queue, None)
            if problem is None:
                break
            state = self._start(problem)
            if state.strategy.done():  # nothing to search (e.g. a zero budget)
                on_result(self._record(state))
                continue
            live.append(state)
            new.append(state)
        return new

    def _run_lockstep(self, queue: Iterator[Problem], on_result: Callable[[dict[str, Any]], None],
                      on_depth: Callable[[dict[str, float]], None] | None) -> None:
        live: list[_Live] = []
        while True:
            self._fill(live, queue, on_result)
            if not live:
                return
            for state in live:
                state.pending = self._propose(state)
            jobs = [(state, self._requests(state, state.pending)) for state in live]
            gens = self.policy.generate([r for _, reqs in jobs for r in reqs])
            self._after_policy_call()
            done, i = [], 0
            for state, reqs in jobs:
                done.append((state, gens[i:i + len(reqs)]))
                i += len(reqs)
            self._round(done, on_depth)
            self._finish(live, on_result)

    def _run_async(self, queue: Iterator[Problem], on_result: Callable[[dict[str, Any]], None],
                   on_depth: Callable[[dict[str, float]], None] | None) -> None:
        engine = streaming(self.policy)
        live: list[_Live] = []
        tickets: dict[int, _Live] = {}

        def submit(states: Iterable[_Live]) -> None:
            for state in states:
                state.pending = self._propose(state)
                tickets[engine.submit(self._requests(state, state.pending))] = state

        def go_on(state: _Live) -> None:
            # Each problem's next expansions leave as soon as it has observed, while the
            # search thread selects for the other problems of the same wait.
            if not state.strategy.done():
                submit([state])

        submit(self._fill(live, queue, on_result))
        while live:
            finished = engine.wait()
            self._after_policy_call()
            # Keep the order of ``live`` (not of completion) for the PRM batch.
            ready: dict[int, tuple[_Live, list[list[Generation]]]] = {}
            for ticket, gens in finished:
                state = tickets.pop(ticket)
                ready[id(state)] = (state, gens)
            done = [ready[id(s)] for s in live if id(s) in ready]
            self._round(done, on_depth, after=go_on)
            self._finish(live, on_result)
            submit(self._fill(live, queue, on_result))

    # -- one round of a set of problems -----------------------------------------------------
    def _start(self, problem: Problem) -> _Live:
        prompt = self.policy.format_prompt(problem)
        tree = Tree(prompt.text, prompt.token_ids)
        strategy = self.strategies(problem, tree, problem_rng(self.seed, problem.id), self.budget)
        self.started += 1
        return _Live(problem, strategy, self.kv.problem(), start_index=self.started - 1)

    def _name(self, state: _Live) -> str:
        return str(getattr(state.strategy, "name", type(state.strategy).__name__))

    def _propose(self, state: _Live) -> list[Expansion]:
        proposal = check_proposal(self._name(state), state.tree, self.budget,
                                  state.strategy.propose(), state.nodes)
        if not proposal:
            raise StrategyError(f"strategy {self._name(state)!r} is not done but proposed no expansion")
        return proposal

    def _requests(self, state: _Live, expansions: list[Expansion]) -> list[GenRequest]:
        out = []
        for e in expansions:
            node = e.node
            text, ids = state.tree.context(node)
            stop, max_new = self.expander.step_limits(self.max_tokens - node.cum_tokens)
            seed = request_seed(self.seed, state.problem.id, node.id)
            out.append(GenRequest(state.problem, text, ids, e.n, max_new, stop, seed, e.temperature))
        return out

    def _after_policy_call(self) -> None:
        self.counters.policy_calls += 1
        self.counters.depth_iterations += 1
        if isinstance(self.policy, EngineTelemetry):
            self.engine_series.append(self.policy.engine_metrics())

    def _round(self, done: list[tuple[_Live, list[list[Generation]]]],
               on_depth: Callable[[dict[str, float]], None] | None,
               after: Callable[[_Live], None] | None = None) -> None:
        """Attach, classify, score and observe the generations of ``done`` (problem order
        kept); ``after(state)`` runs once that problem has observed and been measured.

        With ``after`` (the async scheduler) ``done`` is handled in chunks of at least
        ``round_chunk`` children (:meth:`_chunks`): each chunk is scored, prepared (ETS
        embeds its step texts) and observed, and its problems' next expansions are sent,
        before the next chunk is scored, so that the engine is not left idle while the
        search thread works through every group that came back in one wait."""
        chunks = self._chunks(done) if after is not None else [done]
        measured: list[_Live] = []
        for chunk in chunks:
            measured += self._score_and_observe(chunk, after)
        if on_depth is not None:
            on_depth(self._depth_metrics([s for s, _ in done], measured))

    def _chunks(self, done: list[tuple[_Live, list[list[Generation]]]]
                ) -> list[list[tuple[_Live, list[list[Generation]]]]]:
        """``done`` cut, in order, into runs of problems holding ``round_chunk`` or more
        children each (the last may hold fewer); one run when ``round_chunk`` is 0."""
        if not self.round_chunk:
            return [done]
        chunks, chunk, size = [], [], 0
        for item in done:
            chunk.append(item)
            size += sum(len(outs) for outs in item[1])
            if size >= self.round_chunk:
                chunks.append(chunk)
                chunk, size = [], 0
        return chunks + [chunk] if chunk else chunks

    def _score_and_observe(self, done: list[tuple[_Live, list[list[Generation]]]],
                           after: Callable[[_Live], None] | None) -> list[_Live]:
        """One PRM call and one ``prepare`` for ``done``, then each problem observes and is
        measured; returns the problems a KV sample was taken for."""
        results = [(state, self._attach(state, gens)) for state, gens in done]
        children = [(s.problem, c) for s, res in results for _, kids in res for c in kids]
        if children:
            scores = self.prm.score(children)
            self.counters.prm_calls += 1
            for (_, child), score in zip(children, scores):
                child.score = float(score)
            for state, res in results:
                state.prm_scored += sum(len(kids) for _, kids in res)
        if isinstance(self.strategies, BatchPreparer):
            self.strategies.prepare([c for _, res in results for e, kids in res if not e.rollout
                                     for c in kids if not c.finished])
        measured = []
        for state, res in results:
            state.strategy.observe(res)
            if self._measure_kv(state):
                measured.append(state)
            if after is not None:
                after(state)
        return measured

    def _attach(self, state: _Live, gens: list[list[Generation]]) -> Results:
        if len(gens) != len(state.pending):
            raise RuntimeError(f"policy returned {len(gens)} generation lists for "
                               f"{len(state.pending)} requests")
        out: Results = []
        for e, outs in zip(state.pending, gens):
            add = state.tree.add_rollout if e.rollout else state.tree.add_child
            kids = []
            for g in outs:
                child = add(e.node, g.text, g.token_ids, logprob=g.logprob, stop_reason=g.finish_reason)
                self.counters.tokens_generated += child.n_tokens
                if e.rollout:
                    state.rollout_tokens += child.n_tokens
                self._classify(state.tree, child, g.finish_reason)
                kids.append(child)
            state.nodes += len(kids)
            out.append((e, kids))
        state.pending = []
        return out

    def _classify(self, tree: Tree, child: Node, finish_reason: str) -> None:
        self.finisher.classify(tree, child, finish_reason)

    def _measure_kv(self, state: _Live) -> bool:
        """One KV sample per selection: the paths of the strategy's ``kv_nodes`` (before
        pruning) and of those it gives children to (after pruning; strategies without
        :class:`~ets.protocols.HasSelectionCounts`: all of them).

        Nothing is recorded for a round after which the search stops without selecting:
        the reference stops there without measuring (:mod:`ets.kv.accounting`). Returns
        whether a sample was taken.
        """
        nodes = state.strategy.kv_nodes()
        state.kv_count = len(nodes)
        if isinstance(state.strategy, HasSelectionCounts):
            counts = state.strategy.counts
            if not counts:
                return False
        else:
            if state.strategy.done() or not nodes:
                return False
            counts = [1] * len(nodes)
        state.kv.observe(state.tree, nodes, counts)
        return True

    def _finish(self, live: list[_Live], on_result: Callable[[dict[str, Any]], None]) -> None:
        for state in [s for s in live if s.strategy.done()]:
            live.remove(state)
            on_result(self._record(state))

    def _depth_metrics(self, states: list[_Live], measured: list[_Live]) -> dict[str, float]:
        metrics: dict[str, float] = {
            "depth_iteration": self.counters.depth_iterations,
            "problems_in_flight": len(states),
            "parents_expanded": sum(s.kv_count for s in states),
            "tokens_generated": self.counters.tokens_generated,
        }
        for name in self.kv.names:
            vals = [s.kv.last(name) for s in measured]  # the problems measured at this step
            metrics[f"kv_{name}"] = sum(vals) / len(vals) if vals else 0.0
        if self.engine_series:
            metrics.update({f"engine_{k}": v for k, v in self.engine_series[-1].items()})
        return metrics

    def _record(self, state: _Live) -> dict[str, Any]:
        tree, problem = state.tree, state.problem
        votes = vote(state.strategy.finalists(), problem.gold, self.grader, self.aggregation)
        record = {
            "id": problem.id,
            "gold": problem.gold,
            "answers": [n.answer for n in tree.finished()],
            "correct": {k: v["correct"] for k, v in votes.items() if k != "votes"},
            "predictions": {k: v["answer"] for k, v in votes.items() if "answer" in v},
            "votes": votes["votes"],
            "kv": state.kv.summary(),
            "tokens": sum(n.n_tokens for n in tree.nodes[1:]),
            "prompt_tokens": tree.root.n_tokens,
            "depths": max(n.depth for n in tree.nodes),  # expansion rounds of the tree
            "wall_time_s": time.perf_counter() - state.started,
            "start_index": state.start_index,
            "tree": tree.to_records(),
            "prm_scored": state.prm_scored,
        }
        if state.rollout_tokens:
            record["rollout_tokens"] = state.rollout_tokens
        if tree.rollouts:  # their compute (ets.analysis.compute); not part of the tree, width or KV
            record["rollouts"] = [{"id": n.id, "parent": n.parent.id if n.parent else None,
                                   "tokens": n.n_tokens, "score": n.score}
                                  for n in tree.rollouts.values()]
        stats = state.strategy.stats()
        if stats:
            record["strategy"] = stats
        return record
