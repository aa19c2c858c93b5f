"""The depth-synchronous search loop (ALGORITHMS.md §1), batched across problems.

Every depth, all nodes to expand of all problems in flight go to the policy in one
call, and all new children to the PRM in one call. Problems join and leave the pool
independently (a finished problem is written out at once and a new one takes its
place), so problems in flight may be at different depths.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ets.answers import extract_answer, vote
from ets.kv.accounting import KVAccounting, ProblemKV
from ets.protocols import PRM, Expander, Grader, Policy, Selector
from ets.tree import Node, Tree
from ets.types import GenRequest, Problem


@dataclass
class _Live:
    problem: Problem
    tree: Tree
    remaining: int
    expand: list[tuple[Node, int]]
    kv: ProblemKV
    started: float = field(default_factory=time.perf_counter)
    start_index: int = 0  # order in which problems entered the search (ets.replay)


@dataclass
class SearchCounters:
    policy_calls: int = 0
    prm_calls: int = 0
    tokens_generated: int = 0
    depth_iterations: int = 0


def request_seed(seed: int, problem_id: str, node_id: int) -> int:
    """A stable 31-bit seed per (run seed, problem, node): batch order does not matter."""
    return zlib.crc32(f"{seed}:{problem_id}:{node_id}".encode()) & 0x7FFFFFFF


class Search:
    """Runs tree search over a stream of problems.

    Args:
        policy, prm, expander, selector: The components (see :mod:`ets.protocols`).
        kv: KV accounting over all backends.
        grader: Answer equivalence for voting and correctness.
        width: W, trajectories to finish per problem.
        max_depth: Depth cap; trajectories still live there end with reason ``depth``.
        max_tokens: Per-trajectory generated-token cap (1024 in the paper).
        seed: Run seed (mixed into every request seed).
        concurrency: Problems in flight.
        aggregation: Step-score aggregation for the vote weights.
    """

    def __init__(
        self, policy: Policy, prm: PRM, expander: Expander, selector: Selector,
        kv: KVAccounting, grader: Grader, *, width: int, max_depth: int, max_tokens: int,
        seed: int = 0, concurrency: int = 8, aggregation: str = "last",
    ) -> None:
        self.policy, self.prm, self.expander, self.selector = policy, prm, expander, selector
        self.kv, self.grader = kv, grader
        self.width, self.max_depth, self.max_tokens = width, max_depth, max_tokens
        self.seed, self.concurrency, self.aggregation = seed, concurrency, aggregation
        self.markers = list(getattr(policy, "answer_markers", ["boxed", "The answer is"]))
        # A step tag used as delimiter ("ки") must not stick to the answer ("18 ки").
        delim = getattr(policy, "step_delimiter", "")
        self.step_tag = delim if delim and delim.strip() else ""
        self.counters = SearchCounters()
        # Engines that report their own numbers (vLLM) are read after every policy call.
        self.engine_series: list[dict[str, float]] = []

    def run(
        self, problems: Iterable[Problem], on_result: Callable[[dict[str, Any]], None],
        on_depth: Callable[[dict[str, float]], None] | None = None,
    ) -> SearchCounters:
        """Search every problem; ``on_result`` gets each problem's record as it finishes."""
        queue: Iterator[Problem] = iter(problems)
        live: list[_Live] = []
        while True:
            while len(live) < self.concurrency:
                problem = next(queue, None)
                if problem is None:
                    break
                live.append(self._start(problem))
            if not live:
                return self.counters
            self._step(live)
            if on_depth is not None:
                on_depth(self._depth_metrics(live))
            for state in [s for s in live if not s.expand]:
                live.remove(state)
                on_result(self._record(state))

    def _start(self, problem: Problem) -> _Live:
        prompt = self.policy.format_prompt(problem)
        tree = Tree(prompt.text, prompt.token_ids)
        tree.width = self.width
        self.started = getattr(self, "started", 0) + 1
        return _Live(problem, tree, self.width, [(tree.root, self.width)], self.kv.problem(),
                     start_index=self.started - 1)

    def _requests(self, live: list[_Live]) -> list[tuple[_Live, Node, GenRequest]]:
        out = []
        for state in live:
            for node, n in state.expand:
                text, ids = state.tree.context(node)
                stop, max_new = self.expander.step_limits(self.max_tokens - node.cum_tokens)
                seed = request_seed(self.seed, state.problem.id, node.id)
                out.append((state, node, GenRequest(state.problem, text, ids, n, max_new, stop,
                                                    seed, node.state)))
        return out

    def _step(self, live: list[_Live]) -> None:
        jobs = self._requests(live)
        gens = self.policy.generate([req for _, _, req in jobs])
        self.counters.policy_calls += 1
        engine_metrics = getattr(self.policy, "engine_metrics", None)
        if callable(engine_metrics):
            self.engine_series.append(engine_metrics())
        self.counters.depth_iterations += 1
        new: dict[int, list[Node]] = {id(s): [] for s in live}
        for (state, parent, _), outs in zip(jobs, gens):
            for g in outs:
                child = state.tree.add_child(parent, g.text, g.token_ids, logprob=g.logprob,
                                             state=g.state)
                self.counters.tokens_generated += child.n_tokens
                self._classify(state.tree, child, g.finish_reason)
                new[id(state)].append(child)
        children = [(s.problem, c) for s in live for c in new[id(s)]]
        if children:
            scores = self.prm.score(children)
            self.counters.prm_calls += 1
            for (_, child), score in zip(children, scores):
                child.score = float(score)
        prepare = getattr(self.selector, "prepare", None)
        if callable(prepare):  # e.g. ETS embeds every problem's step texts in one batch
            prepare([c for s in live for c in new[id(s)] if not c.finished])
        for state in live:
            self._select(state, new[id(state)])

    def _extract(self, text: str) -> str | None:
        if self.step_tag:
            text = text.replace(self.step_tag, "\n")
        return extract_answer(text, self.markers)

    def _classify(self, tree: Tree, child: Node, finish_reason: str) -> None:
        parent_text = child.parent.text if child.parent is not None and child.depth > 1 else ""
        answer = self._extract(parent_text + child.text)
        if answer is None and finish_reason == "eos":
            answer = self._extract(tree.context(child)[0][len(tree.root.text):])
        if answer is not None:
            child.finished, child.finish_reason, child.answer = True, "answer", answer
        elif finish_reason == "eos":
            child.finished, child.finish_reason = True, "eos"
        elif finish_reason == "context":  # issue 12.4: the model's context is full, the path cannot grow
            child.finished, child.finish_reason = True, "context"
        elif child.cum_tokens >= self.max_tokens:
            child.finished, child.finish_reason = True, "length"
        elif child.depth >= self.max_depth:
            child.finished, child.finish_reason = True, "depth"

    def _select(self, state: _Live, children: list[Node]) -> None:
        state.remaining -= sum(c.finished for c in children)
        candidates = [c for c in children if not c.finished]
        state.expand = []
        if state.remaining <= 0 or not candidates:
            return  # no KV measurement: the reference stops here without one (ets.kv.accounting)
        counts = self.selector.select(candidates, state.remaining, state.tree)
        state.kv.observe(state.tree, candidates, counts)
        state.expand = [(c, n) for c, n in zip(candidates, counts) if n > 0]

    def _depth_metrics(self, live: list[_Live]) -> dict[str, float]:
        frontier = [len(s.expand) for s in live]
        metrics: dict[str, float] = {
            "depth_iteration": self.counters.depth_iterations,
            "problems_in_flight": len(live),
            "parents_expanded": sum(frontier),
            "tokens_generated": self.counters.tokens_generated,
        }
        for name in self.kv.names:
            vals = [s.kv.last(name) for s in live if s.expand]  # measured at this step
            metrics[f"kv_{name}"] = sum(vals) / len(vals) if vals else 0.0
        if self.engine_series:
            metrics.update({f"engine_{k}": v for k, v in self.engine_series[-1].items()})
        return metrics

    def _record(self, state: _Live) -> dict[str, Any]:
        tree, problem = state.tree, state.problem
        finalists = getattr(self.selector, "finalists", None)
        pool = finalists(tree) if finalists is not None else tree.finished()
        votes = vote(pool, problem.gold, self.grader, self.aggregation)
        return {
            "id": problem.id,
            "gold": problem.gold,
            "answers": [n.answer for n in tree.finished()],
            "correct": {k: v["correct"] for k, v in votes.items() if k != "votes"},
            "predictions": {k: v["answer"] for k, v in votes.items() if "answer" in v},
            "votes": votes["votes"],
            "kv": state.kv.summary(),
            "tokens": sum(n.n_tokens for n in tree.nodes[1:]),
            "prompt_tokens": tree.root.n_tokens,
            "depths": max(n.depth for n in tree.nodes),  # expansion rounds (depth-synchronous)
            "wall_time_s": time.perf_counter() - state.started,
            "start_index": state.start_index,
            "tree": tree.to_records(),
        }
