"""Interfaces between the search loop and its components.

The search loop only talks to these protocols; it knows nothing about vLLM,
transformers, W&B or SLURM. Each component kind is a Hydra config group
(``conf/<group>/<name>.yaml`` with a ``_target_``).

The loop's own contract with a search method is :class:`SearchStrategy` (one instance
per problem, made by a :class:`StrategyFactory`); the classic ``Selector`` methods run
through one adapter strategy (:mod:`ets.core.width`). Optional capabilities are declared
here too and checked with ``isinstance``: :class:`EngineTelemetry` (a policy that reports
engine numbers), :class:`StreamingPolicy` (a policy that takes requests and returns them
as they finish, for the asynchronous scheduler), :class:`BatchPreparer` (a selector that
wants every problem's new children in one batch before selecting).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ets.core.tree import Node, Tree
from ets.types import Generation, GenRequest, Problem, Prompt


@runtime_checkable
class Policy(Protocol):
    """The LLM that writes reasoning steps."""

    step_delimiter: str

    def format_prompt(self, problem: Problem) -> Prompt:
        """The root of the tree: the question in the policy's prompt format."""
        ...

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """One batched call: ``requests[i].n`` continuations for each request."""
        ...


@runtime_checkable
class PRM(Protocol):
    """Process reward model: a score for the last step of each path."""

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        """One batched call; ``items[i][1].path()`` is the path to score."""
        ...


@runtime_checkable
class Expander(Protocol):
    """Decides what one step is (stop strings and token limit per expansion)."""

    def step_limits(self, remaining_tokens: int) -> tuple[list[str], int]:
        """Stop strings and max new tokens for the next step."""
        ...


@runtime_checkable
class Selector(Protocol):
    """Maps scored candidates to a child count each."""

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        """Children per candidate given ``width`` remaining trajectories."""
        ...


@runtime_checkable
class BatchPreparer(Protocol):
    """A selector that wants every problem's new open children in one batch per round
    (ETS embeds all step texts at once; its per-problem selection then hits the cache)."""

    def prepare(self, candidates: list[Node]) -> None: ...


@runtime_checkable
class HasFinalists(Protocol):
    """A selector that names the trajectories to vote over (FFS: its first finishers)."""

    def finalists(self, tree: Tree) -> list[Node]: ...


@runtime_checkable
class HasSelectionCounts(Protocol):
    """A strategy that allocates children over its ``kv_nodes()`` (the width adapter):
    ``counts`` are the last round's children per KV node, aligned with ``kv_nodes()``, and
    ``[]`` when that round made no selection (the search stops). The KV backends measure
    the paths of the nodes with a count > 0 as the after-pruning view."""

    counts: list[int]


@runtime_checkable
class HasStats(Protocol):
    """A selector that keeps run-level numbers (ETS: solves, presolved, solver time)."""

    stats: dict[str, Any]


@runtime_checkable
class EngineTelemetry(Protocol):
    """A policy whose engine reports its own numbers (vLLM, an OpenAI-compatible server);
    the loop reads them after every policy call."""

    def engine_metrics(self) -> dict[str, float]: ...


@runtime_checkable
class StreamingPolicy(Protocol):
    """A policy that accepts requests at any time and hands back each group of requests
    as soon as all of it has finished (continuous batching; the asynchronous scheduler).

    ``submit`` returns a ticket; ``wait`` blocks until at least one submitted group is
    done and returns ``(ticket, generations)`` for every group done by then, each with
    ``requests[i].n`` generations per request, as ``Policy.generate`` would.
    """

    def submit(self, requests: Sequence[GenRequest]) -> int: ...

    def wait(self) -> list[tuple[int, list[list[Generation]]]]: ...


# ---- search strategies ------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    """What one problem's search may spend.

    Attributes:
        width: W, the trajectories the method aims to finish (its width budget).
        max_depth: No node may be expanded at this depth or deeper.
        max_tokens: Generated tokens per trajectory; no node at the cap is expanded.
        max_nodes: Generated nodes (tree steps and rollouts) over the whole search; the
            loop refuses a proposal that would exceed it.
    """

    width: int
    max_depth: int
    max_tokens: int
    max_nodes: int


@dataclass(frozen=True)
class Expansion:
    """Ask for ``n`` children of ``node``.

    ``rollout=False``: the children are tree steps (``Tree.add_child``; they count
    against the width and appear in the record's tree). ``rollout=True``: they are
    look-ahead rollouts (``Tree.add_rollout``): scored and given back to the strategy,
    chainable (a rollout node may be expanded again), but not part of the tree, its
    width, its KV or its vote; their tokens are reported as ``rollout_tokens``.
    ``temperature``: sample these children at this temperature (0 = greedy); ``None``
    = the policy's configured temperature.
    """

    node: Node
    n: int
    rollout: bool = False
    temperature: float | None = None


@runtime_checkable
class SearchStrategy(Protocol):
    """One problem's search method, driven by :class:`ets.core.search.Search`.

    The loop repeats: ``propose`` → generate → classify (finished/answer) → PRM score
    → ``observe`` → KV of ``kv_nodes`` → ``done``? A strategy may propose any open
    node of its tree (or of its rollouts) each round; rounds of different problems
    are independent, so a strategy must not assume what other problems do.
    """

    name: str
    tree: Tree
    budget: Budget

    def propose(self) -> list[Expansion]:
        """This round's expansions (none: the search of this problem is over)."""
        ...

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        """The scored (and classified) children of every expansion of ``propose``, in order."""
        ...

    def done(self) -> bool:
        """No further expansions will be proposed."""
        ...

    def finalists(self) -> list[Node]:
        """The finished trajectories the final vote runs over."""
        ...

    def kv_nodes(self) -> list[Node]:
        """The tree nodes whose root paths hold KV after the last round (the KV backends
        measure the union of these paths)."""
        ...

    def stats(self) -> dict[str, float]:
        """Per-problem statistics (numbers), written into the problem's record when non-empty."""
        ...


@runtime_checkable
class StrategyFactory(Protocol):
    """Makes one :class:`SearchStrategy` per problem (run-level numbers: :class:`HasRunStats`)."""

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random,
                 budget: Budget) -> SearchStrategy: ...


@runtime_checkable
class HasRunStats(Protocol):
    """A factory that keeps run-level numbers (``summary.json``'s ``selector_stats``);
    a factory without them reports none."""

    def stats(self) -> dict[str, Any]: ...


@runtime_checkable
class HasNodeBudget(Protocol):
    """A factory whose method needs a node budget other than the loop's default
    ``2 * width * max_depth`` (step-level best-of-N: ``width * candidates * max_depth``)."""

    def node_budget(self, width: int, max_depth: int) -> int: ...


@runtime_checkable
class UsesStepLogprobs(Protocol):
    """A PRM or strategy factory that reads ``Node.logprob``, the policy's log-probability
    of each generated step (the logprob PRM; MCTS-PUCT's priors)."""

    uses_step_logprobs: bool


@runtime_checkable
class StepLogprobSwitch(Protocol):
    """A policy whose step log-probabilities can be switched off (``policy.step_logprobs``):
    then every ``Generation.logprob`` is 0.0. ``None`` (auto): the search says, through
    :meth:`need_step_logprobs`, whether its PRM or strategies read them."""

    step_logprobs: bool | None

    def need_step_logprobs(self, needed: bool) -> None: ...


@runtime_checkable
class FinishClassifier(Protocol):
    """Decides whether a new child ends its trajectory, why, and with which answer
    (sets ``finished``, ``finish_reason``, ``answer``); configured with the policy's
    answer markers and step tag, and the search's caps."""

    def classify(self, tree: Tree, child: Node, finish_reason: str) -> None: ...


@runtime_checkable
class KVBackend(Protocol):
    """One definition of the KV cache held by a frontier."""

    name: str

    def measure(self, tree: Tree, live: Sequence[Node]) -> int:
        """KV size (tokens) held by the root-to-node paths of ``live``."""
        ...


@runtime_checkable
class Grader(Protocol):
    def equivalent(self, gold: str, pred: str) -> bool: ...


@runtime_checkable
class Dataset(Protocol):
    def load(self) -> list[Problem]: ...


@runtime_checkable
class Tracker(Protocol):
    def start(self, config: dict[str, Any], run_dir: str) -> None: ...

    def log_depth(self, metrics: dict[str, float]) -> None: ...

    def log_problem(self, record: dict[str, Any]) -> None: ...

    def finish(self, summary: dict[str, Any] | None) -> None: ...
