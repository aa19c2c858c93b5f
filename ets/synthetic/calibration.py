"""Recompute the synthetic world's calibration constants from MATH500.

The rules (documented in :mod:`ets.synthetic.world`):

- ``[asy]...[/asy]`` diagram code is removed (a policy does not write it).
- A solution is split into paragraphs on blank lines, then into sentences at
  ``. ! ?`` followed by whitespace and a capital letter, ``\\`` or ``$``.
  One sentence = one reasoning step: MATH paragraphs are too coarse (1.2-1.9
  per solution, which would make every tree one or two levels deep), whereas
  step-by-step policies (MetaMath / PRM800K style) write roughly one sentence
  or equation per step.
- The last step of a solution (the one holding ``\\boxed``) is the answer step
  and gets its own length statistics.
- Tokens are approximated as ``chars / CHARS_PER_TOKEN``.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

# Llama-family BPE averages ~4 chars/token on English prose but LaTeX is denser
# (``\frac{1}{2}`` is ~7 tokens); BERT WordPiece measures 2.33 chars/token on these
# solutions, an upper bound on density since it splits LaTeX almost per character.
# 3.0 sits between the two and is what we use throughout.
CHARS_PER_TOKEN = 3.0

_ASY = re.compile(r"\[asy\].*?(?:\[/asy\]|$)", re.S)
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\$])")


def split_steps(solution: str) -> list[str]:
    """Split a worked solution into steps (sentences of paragraphs, diagrams dropped)."""
    text = _ASY.sub("", solution)
    steps: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        steps += [s.strip() for s in _SENTENCE.split(paragraph.strip()) if s.strip()]
    return steps


def approx_tokens(text: str) -> float:
    """Approximate token count of ``text`` (at least one token)."""
    return max(1.0, len(text) / CHARS_PER_TOKEN)


def _log_stats(values: list[float]) -> tuple[float, float]:
    logs = [math.log(v) for v in values]
    return round(statistics.fmean(logs), 3), round(statistics.pstdev(logs), 3)


def calibrate(path: str | Path) -> dict[str, Any]:
    """Recompute every calibration constant from a MATH500 jsonl file.

    Args:
        path: ``math500.jsonl`` with fields ``problem``, ``solution``, ``level``.

    Returns:
        ``level_counts`` (levels 1-5), ``steps_mean`` / ``steps_sd`` (steps per
        solution, answer step included, per level), ``step_log_mu`` /
        ``step_log_sigma`` (log tokens of non-final steps), ``answer_log_mu`` /
        ``answer_log_sigma`` (final steps), ``question_log_mu`` /
        ``question_log_sigma`` (log tokens of the question). Floats rounded to 3
        decimals, exactly as stored in :mod:`ets.synthetic.world`.
    """
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    counts = [0] * 5
    n_steps: list[list[int]] = [[] for _ in range(5)]
    body: list[float] = []
    final: list[float] = []
    for row in rows:
        level = int(str(row["level"]).split()[-1]) - 1
        steps = split_steps(row["solution"]) or [row["solution"]]
        counts[level] += 1
        n_steps[level].append(len(steps))
        body += [approx_tokens(s) for s in steps[:-1]]
        final.append(approx_tokens(steps[-1]))
    step_mu, step_sigma = _log_stats(body)
    ans_mu, ans_sigma = _log_stats(final)
    q_mu, q_sigma = _log_stats([approx_tokens(r["problem"]) for r in rows])
    return {
        "level_counts": counts,
        "steps_mean": [round(statistics.fmean(s), 3) for s in n_steps],
        "steps_sd": [round(statistics.pstdev(s), 3) for s in n_steps],
        "step_log_mu": step_mu,
        "step_log_sigma": step_sigma,
        "answer_log_mu": ans_mu,
        "answer_log_sigma": ans_sigma,
        "question_log_mu": q_mu,
        "question_log_sigma": q_sigma,
    }
