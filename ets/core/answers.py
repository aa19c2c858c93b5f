"""Final answers: extraction from trajectory text and the votes of ALGORITHMS.md §5."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from ets.core.tree import Node
from ets.protocols import Grader

# "The answer is" counts only where a sentence states it: at the start of a line or of a
# sentence (after . ! ? or :), after Markdown emphasis or a bullet, optionally after a
# connective ("So", "Thus, the final answer is"). Only the first letter of the marker may
# differ in case (a sentence start). "... see what the answer is going to look like"
# is not a statement of the answer: it is mid-sentence and its tail is not answer-shaped.
_LEAD = r"(?:(?i:so|thus|therefore|hence|finally|in conclusion|in summary|overall)[,:]?\s+)?"
_ANSWER_IS = re.compile(
    r"(?:^|(?<=[.!?:])[ \t]+|(?<=,)[ \t]+(?=(?i:so|thus|therefore|hence)\s))"
    r"[ \t>*_#-]*" + _LEAD + r"[Tt]he[ \t]+(?:final[ \t]+)?answer[ \t]+is\b[ \t]*(?::|=)?[ \t]*"
    r"(?P<tail>[^\n]*)",
    re.M,
)
_MAX_ANSWER_CHARS = 80
_MATHY = re.compile(r"[\d\\=+*/^()\[\]{}<>|π∞√%-]")
_WORD = re.compile(r"[A-Za-z]{2,}")
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


def _clause(tail: str) -> str:
    """``tail`` up to the end of its sentence or clause: a period (not a decimal point) or a
    comma / semicolon outside brackets and ``$...$``."""
    depth, math = 0, False
    paired = tail.count("$") % 2 == 0  # an odd "$" is a currency sign, not LaTeX math
    for i, ch in enumerate(tail):
        if ch == "$" and paired:
            math = not math
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif not math and depth <= 0:
            if ch == "." and (i + 1 == len(tail) or tail[i + 1].isspace()):
                return tail[:i]
            if ch in ",;" and (i + 1 == len(tail) or tail[i + 1].isspace()):
                return tail[:i]
    return tail


def answer_shaped(text: str) -> bool:
    """Whether ``text`` reads as a final answer rather than the rest of a sentence.

    Answer-shaped: at most 80 characters, and either mathematical (a digit, a LaTeX
    command, an operator or bracket) with at most three words beside it ("18 dollars",
    "$12.50 per hour"), or a single word ("B", "yes", "infinity").
    """
    if not text or len(text) > _MAX_ANSWER_CHARS:
        return False
    words = _WORD.findall(re.sub(r"\\[A-Za-z]+", " ", text))  # LaTeX commands are not words
    if _MATHY.search(text):
        return len(words) <= 3
    return len(text.split()) == 1


def _answer_is(text: str) -> str | None:
    """The last answer-shaped statement "The answer is X" (see :data:`_ANSWER_IS`)."""
    for match in reversed(list(_ANSWER_IS.finditer(text))):
        tail = match.group("tail").strip().strip("*_").strip()
        boxed = _last_boxed(tail) if "\\boxed{" in tail else None
        answer = boxed if boxed else _clause(tail).strip().strip("*_").strip()
        if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
            answer = answer.strip("$").strip()
        answer = answer.rstrip(".").strip()
        if answer_shaped(answer):
            return answer
    return None


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
