"""Plain data passed between the search loop and its components."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One dataset item.

    Args:
        id: Stable identifier (used for resume and for seeding).
        question: The question text shown to the policy.
        gold: The reference final answer (a string, LaTeX or number).
        meta: Anything else the dataset carries (difficulty, subject, ...).
    """

    id: str
    question: str
    gold: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prompt:
    """The formatted root of a search tree."""

    text: str
    token_ids: tuple[int, ...]


@dataclass
class GenRequest:
    """Ask the policy for ``n`` continuations of one context.

    ``context_ids`` is the prompt followed by every step's tokens on the path,
    so engines never re-tokenise a path (no drift at step boundaries). Requests carry no
    policy state: a policy that needs some (the synthetic world) keeps its own table.
    ``temperature``: this request's sampling temperature (0 = greedy); ``None`` = the
    policy's configured one (methods such as lookahead rollouts ask for greedy steps).
    """

    problem: Problem
    context_text: str
    context_ids: tuple[int, ...]
    n: int
    max_tokens: int
    stop: list[str]
    seed: int
    temperature: float | None = None


@dataclass
class Generation:
    """One continuation. ``finish_reason`` is ``stop`` (a stop string), ``eos``, ``length``
    (the request's ``max_tokens``) or ``context`` (the model's context is full: nothing
    more can follow this path)."""

    text: str
    token_ids: tuple[int, ...]
    logprob: float
    finish_reason: str
