"""Final answers: extraction from trajectory text and the votes of ALGORITHMS.md §5."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from ets.protocols import Grader
from ets.tree import Node

_ANSWER_IS = re.compile(r"[Tt]he (?:final )?answer is[:\s]*\$?(.+?)\$?\s*(?:\.\s*$|\n|$)")
_GSM8K = re.compile(r"####\s*([^\n]+)")


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j].strip()
    return None  # unbalanced: the box is not closed yet


def _answer_is(text: str) -> str | None:
    found = _ANSWER_IS.findall(text)
    return found[-1].strip().rstrip(".") if found else None


def _gsm8k(text: str) -> str | None:
    found = _GSM8K.findall(text)
    return found[-1].strip() if found else None


MARKERS: dict[str, Callable[[str], str | None]] = {
    "boxed": _last_boxed,
    "The answer is": _answer_is,
    "####": _gsm8k,
}


def extract_answer(text: str, markers: Sequence[str]) -> str | None:
    """The first marker (in the configured order) that yields an answer.

    Args:
        text: Step or trajectory text.
        markers: Names in :data:`MARKERS` (``boxed``, ``The answer is``, ``####``).
    """
    for name in markers:
        if name not in MARKERS:
            raise ValueError(f"unknown answer marker {name!r}; allowed: {sorted(MARKERS)}")
        found = MARKERS[name](text)
        if found:
            return found
    return None


AGGREGATIONS = ("last", "min", "prod", "mean")


def aggregate(scores: Sequence[float], how: str) -> float:
    """Aggregate the step scores of a path: ``last``, ``min``, ``prod`` or ``mean``."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; allowed: {', '.join(AGGREGATIONS)}")
    if not scores:
        return 0.0
    if how == "last":
        return scores[-1]
    if how == "min":
        return min(scores)
    if how == "prod":
        return math.prod(scores)
    return sum(scores) / len(scores)


def group_answers(answers: Sequence[str], grader: Grader) -> list[int]:
    """A group label per answer: equal strings share a group, and groups whose
    representatives the grader calls equivalent are merged (first one wins)."""
    reps: list[str] = []
    labels: list[int] = []
    by_text: dict[str, int] = {}
    for a in answers:
        if a not in by_text:
            match = next((g for g, r in enumerate(reps) if grader.equivalent(r, a)), None)
            if match is None:
                reps.append(a)
                match = len(reps) - 1
            by_text[a] = match
        labels.append(by_text[a])
    return labels


def vote(nodes: Sequence[Node], gold: str, grader: Grader, how: str = "last") -> dict:
    """Weighted majority, majority, best-of-N and coverage over finished trajectories.

    Ties go to the group seen first (trajectories in node-id order).
    """
    done = [n for n in nodes if n.answer is not None]
    empty = {"answer": None, "correct": False}
    if not done:
        return {"weighted_majority": dict(empty), "majority": dict(empty),
                "best_of_n": dict(empty), "coverage": {"correct": False}, "votes": []}
    labels = group_answers([n.answer for n in done], grader)
    weights = [aggregate(n.step_scores(), how) for n in done]
    n_groups = max(labels) + 1
    wsum, count = [0.0] * n_groups, [0] * n_groups
    for g, w in zip(labels, weights):
        wsum[g] += w
        count[g] += 1
    rep = {g: done[labels.index(g)].answer for g in range(n_groups)}
    correct = {g: grader.equivalent(gold, rep[g]) for g in range(n_groups)}

    def pick(g: int) -> dict:
        return {"answer": rep[g], "correct": correct[g]}

    best = max(range(len(done)), key=lambda i: (weights[i], -i))
    return {
        "weighted_majority": pick(max(range(n_groups), key=lambda g: (wsum[g], -g))),
        "majority": pick(max(range(n_groups), key=lambda g: (count[g], -g))),
        "best_of_n": pick(labels[best]),
        "coverage": {"correct": any(correct.values())},
        "votes": [{"answer": rep[g], "weight": wsum[g], "count": count[g],
                   "correct": correct[g]} for g in range(n_groups)],
    }
