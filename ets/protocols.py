"""Interfaces between the search loop and its components.

The search loop only talks to these protocols; it knows nothing about vLLM,
transformers, W&B or SLURM. Each component kind is a Hydra config group
(``conf/<group>/<name>.yaml`` with a ``_target_``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from ets.tree import Node, Tree
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
