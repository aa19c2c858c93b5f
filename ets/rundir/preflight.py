"""Start-up checks of a run against the model: does each prompt + ``search.max_tokens`` fit
the policy's context?

A path whose context fills the model ends with finish reason ``context`` (the policies
report it, the loop finishes the child); this check says so before minutes are spent,
per problem, naming both keys. It warns rather than fails: the problems that fit are
searched as usual, and the ones that do not end early without an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ets.types import Problem

log = logging.getLogger("ets.rundir.preflight")
_SHOW = 5  # problems named in a warning


@dataclass
class ContextReport:
    """Problems whose prompt + ``max_tokens`` exceeds the context (``overflow``) and, among
    them, those whose prompt alone fills it (``no_room``), each as (id, prompt tokens)."""

    limit: int
    source: str
    max_tokens: int
    overflow: list[tuple[str, int]]
    no_room: list[tuple[str, int]]

    def messages(self) -> list[str]:
        """One warning line per kind of problem found (none when everything fits)."""
        out = []

        def names(items: list[tuple[str, int]]) -> str:
            head = ", ".join(f"{pid} ({n} prompt tokens)" for pid, n in items[:_SHOW])
            return head + (", ..." if len(items) > _SHOW else "")

        if self.no_room:
            out.append(f"{len(self.no_room)} problem(s) have prompts that alone fill the model context of "
                       f"{self.limit} tokens ({self.source}): they end at once with finish reason 'context' "
                       f"and no answer: {names(self.no_room)}")
        fit = [p for p in self.overflow if p not in self.no_room]
        if fit:
            out.append(f"{len(fit)} problem(s) cannot fit prompt + search.max_tokens={self.max_tokens} in the "
                       f"model context of {self.limit} tokens ({self.source}): their paths stop with finish "
                       f"reason 'context' when it fills; lower search.max_tokens or raise the context: "
                       f"{names(fit)}")
        return out


def check_context(policy: Any, problems: Sequence[Problem], max_tokens: int) -> ContextReport | None:
    """Tokenize every problem's prompt and compare prompt + ``max_tokens`` with the policy's
    context (``policy.context_limit()``); logs a warning per kind of misfit.

    Returns:
        The report, or None when the policy has no context limit (the synthetic world).
    """
    context_limit = getattr(policy, "context_limit", None)
    if not callable(context_limit):
        return None
    limit, source = context_limit()
    if not limit:
        return None
    overflow, no_room = [], []
    for problem in problems:
        n = len(policy.format_prompt(problem).token_ids)
        if n + max_tokens > limit:
            overflow.append((problem.id, n))
            if n >= limit:
                no_room.append((problem.id, n))
    report = ContextReport(limit, source, max_tokens, overflow, no_room)
    for line in report.messages():
        log.warning(line)
    return report
