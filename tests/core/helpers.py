"""A scripted policy and PRM for loop tests, a small grader, and a test strategy that uses
rollouts (greedy look-ahead, the shape of issue 10's lookahead methods)."""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from ets.core.search import Search
from ets.core.tree import Node, Tree
from ets.kv.accounting import KVAccounting
from ets.kv.paged import PagedKV
from ets.kv.paper import PaperKV
from ets.kv.radix import RadixKV
from ets.protocols import Budget, Expansion
from ets.types import Generation, GenRequest, Problem, Prompt

# step(context_text, child_index, request) -> (text, n_tokens, finish_reason)
Script = Callable[[str, int, GenRequest], tuple[str, int, str]]


class ScriptedPolicy:
    """Children from a script; token ids are a hash of the text (so the KV backends see
    distinct steps). Records every request it was given."""

    step_delimiter = "\n\n"

    def __init__(self, script: Script, answer_markers: Sequence[str] = ("The answer is", "boxed")) -> None:
        self.script, self.answer_markers = script, list(answer_markers)
        self.requests: list[GenRequest] = []
        self.calls = 0

    def format_prompt(self, problem: Problem) -> Prompt:
        return Prompt(f"Q: {problem.question}\n", (1, 2, 3))

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        self.calls += 1
        self.requests.extend(requests)
        out = []
        for req in requests:
            gens = []
            for j in range(req.n):
                text, n, reason = self.script(req.context_text, j, req)
                if n > req.max_tokens:  # what an engine does at its token limit
                    n, reason = req.max_tokens, "length"
                base = zlib.crc32(f"{req.context_text}|{j}".encode())
                gens.append(Generation(text, tuple((base + k) % 50000 for k in range(n)), -0.1 * n, reason))
            out.append(gens)
        return out


class ScriptedPRM:
    """Score = a stable hash of the path text in [0, 1) (or ``fn(text)``)."""

    def __init__(self, fn: Callable[[str], float] | None = None) -> None:
        self.fn = fn or (lambda t: (zlib.crc32(t.encode()) % 1000) / 1000)
        self.calls = 0

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        self.calls += 1
        return [self.fn("".join(n.text for n in node.path())) for _, node in items]


class ExactGrader:
    def equivalent(self, gold: str, pred: str) -> bool:
        return gold.strip() == pred.strip()


class StepExpander:
    def __init__(self, max_step_tokens: int = 1000) -> None:
        self.max_step_tokens = max_step_tokens

    def step_limits(self, remaining_tokens: int) -> tuple[list[str], int]:
        return ["\n\n"], min(self.max_step_tokens, remaining_tokens)


def kv() -> KVAccounting:
    return KVAccounting([PaperKV(), RadixKV(), PagedKV(block_size=4)], "radix")


def make_search(policy: Any, selector: Any, *, prm: Any = None, width: int = 4, max_depth: int = 10,
                max_tokens: int = 1000, **kw: Any) -> Search:
    return Search(policy, prm or ScriptedPRM(), StepExpander(), selector, kv(), ExactGrader(),
                  width=width, max_depth=max_depth, max_tokens=max_tokens, **kw)


def problems(n: int = 1) -> list[Problem]:
    return [Problem(f"p{i}", f"question {i}", "7") for i in range(n)]


def run_all(search: Search, probs: list[Problem]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    search.run(probs, out.append)
    return out


class LookaheadStrategy:
    """Test strategy: every round, each open frontier node first gets one rollout of
    ``k`` further steps (chained rollouts, n=1 each); the frontier node with the best
    rollout end score is expanded into the remaining width (tree steps). Ties go to the
    first node; an RNG-drawn coin breaks them when ``random_ties`` (to test seeding)."""

    name = "lookahead_test"

    def __init__(self, tree: Tree, budget: Budget, rng: random.Random, k: int = 1,
                 random_ties: bool = False) -> None:
        self.tree, self.budget, self.rng, self.k = tree, budget, rng, k
        self.random_ties = random_ties
        self.remaining = budget.width
        self.frontier: list[Node] = []
        self.rollouts: dict[int, Node] = {}  # frontier node id -> its rollout's current end
        self.phase = "expand"
        self._next = [Expansion(tree.root, budget.width)]
        self.n_rollouts = 0
        self.generated = 0  # tree nodes and rollouts so far (budget.max_nodes)

    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        self.generated += sum(len(cs) for _, cs in results)
        if self.phase == "expand":
            kids = [c for _, cs in results for c in cs]
            self.remaining -= sum(c.finished for c in kids)
            self.frontier = [c for c in kids if not c.finished]
            self.rollouts = {c.id: c for c in self.frontier}
            self.depth_left = self.k
        else:
            for e, cs in results:
                start = next(fid for fid, end in self.rollouts.items() if end is e.node)
                self.rollouts[start] = cs[0]
                self.n_rollouts += 1
            self.depth_left -= 1
        self._plan()

    def _plan(self) -> None:
        self._next = []
        if self.remaining <= 0 or not self.frontier:
            return
        open_ends = [end for end in self.rollouts.values() if not end.finished
                     and end.depth < self.budget.max_depth and end.cum_tokens < self.budget.max_tokens]
        # Rollouts only while they leave room for the expansion that follows them.
        room = self.budget.max_nodes - self.generated - self.remaining
        if self.depth_left > 0 and open_ends and len(open_ends) <= room:
            self.phase = "rollout"
            self._next = [Expansion(end, 1, rollout=True) for end in open_ends]
            return
        self.phase = "expand"
        def key(node: Node) -> float:
            end = self.rollouts[node.id]
            return end.score if end.score is not None else -1.0
        best = max(key(n) for n in self.frontier)
        tied = [n for n in self.frontier if key(n) == best]
        pick = self.rng.choice(tied) if self.random_ties else tied[0]
        n = min(self.remaining, self.budget.max_nodes - self.generated)  # never over budget
        self._next = [Expansion(pick, n)] if n > 0 else []

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        return self.tree.finished()

    def kv_nodes(self) -> list[Node]:
        return list(self.frontier)

    def stats(self) -> dict[str, float]:
        return {"rollouts": float(self.n_rollouts)}


class LookaheadStrategies:
    def __init__(self, k: int = 1, random_ties: bool = False) -> None:
        self.k, self.random_ties = k, random_ties

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> LookaheadStrategy:
        return LookaheadStrategy(tree, budget, rng, self.k, self.random_ties)

    def stats(self) -> dict[str, Any]:
        return {}


class Keep:
    """Wraps a strategy factory and keeps every strategy it makes (to inspect after a
    run); any other attribute (``stats``, ``node_budget``, ...) is the inner factory's."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.made = inner, []

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> Any:
        self.made.append(self.inner(problem, tree, rng, budget))
        return self.made[-1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
