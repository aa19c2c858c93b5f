"""Answer equivalence: math-verify for LaTeX answers, exact numbers for numeric ones."""

from __future__ import annotations

import concurrent.futures as cf
import logging
import re
from concurrent.futures.process import BrokenProcessPool
from fractions import Fraction

log = logging.getLogger("ets.datasets.grading")
_NUM = re.compile(r"^[-+]?\d*\.?\d+(?:/\d+)?$")


def parse_number(text: str) -> Fraction | None:
    """``"1,234"``, ``"$12.50"``, ``"3/4"`` → an exact number; anything else → None."""
    s = text.strip().strip("$").replace(",", "").replace("\\!", "").rstrip(".")
    s = re.sub(r"\\(?:text|mathrm)\{[^}]*\}|%|\\%", "", s).strip()
    if not _NUM.match(s):
        return None
    try:
        return Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None


class NumericGrader:
    """Exact numeric comparison after stripping commas, dollars and units (GSM8K, synthetic)."""

    def equivalent(self, gold: str, pred: str) -> bool:
        g, p = parse_number(gold), parse_number(pred)
        if g is None or p is None:
            return gold.strip() == pred.strip()
        return g == p


_LATEX_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mathbf|boxed)\s*\{([^{}]*)\}")
_LEAD_LETTER = re.compile(r"^[\s(\[]*([A-J])(?:[\s)\].:,]|$)")
_SAID_LETTER = re.compile(r"(?:answer|option|choice)\s*(?:is|:)?\s*[(\[]?([A-J])\b[)\]]?", re.IGNORECASE)


def answer_letter(text: str) -> str | None:
    """The choice letter an answer names: ``"B"``, ``"(B)"``, ``"B) 42"``, ``"\\text{B}"``,
    ``"$\\textbf{(B)}$"``, ``"Answer: B"``; None when it names none (a bare ``"A"``-less text).

    Letters are A-J, upper case only (a lower-case ``"a"`` is more often an article or a
    variable than a choice).
    """
    s = text.strip().replace("$", "")
    for _ in range(3):  # unwrap nested \text{\textbf{(B)}}
        s = _LATEX_WRAP.sub(r"\1", s)
    m = _LEAD_LETTER.match(s)
    if m:
        return m.group(1)
    m = _SAID_LETTER.search(s)
    return m.group(1).upper() if m and m.group(1).isupper() else None


class LetterGrader:
    """Multiple choice (GPQA): equivalent when the prediction names the gold's letter
    (:func:`answer_letter` on both sides)."""

    def equivalent(self, gold: str, pred: str) -> bool:
        g, p = answer_letter(gold), answer_letter(pred)
        return g is not None and g == p


def _verify(gold: str, pred: str) -> bool:
    from math_verify import parse, verify

    def wrap(s: str) -> str:
        return s if "$" in s or "\\boxed" in s else f"${s}$"

    g = parse(wrap(gold), parsing_timeout=None)
    p = parse(wrap(pred), parsing_timeout=None)
    return bool(g and p and verify(g, p, timeout_seconds=None))


class MathVerifyGrader:
    """math-verify (gold first) with a per-answer timeout.

    math-verify's own timeout uses ``signal.alarm``, which fails off the main thread,
    so its timeouts are switched off and each comparison runs in a worker process
    instead; a comparison that exceeds ``timeout_s`` counts as not equivalent and the
    worker is replaced. Exact numeric matches short-circuit without a worker call.

    If the worker process dies (``BrokenProcessPool``: killed, out of memory) the pool is
    recreated and the comparison retried once. Only verdicts math-verify actually gave are
    cached; a comparison that failed (timeout, dead worker twice, an error) counts as not
    equivalent, is counted in :attr:`failures` (``grading_failures`` in the run summary)
    and is tried again the next time it is asked.

    Args:
        timeout_s: Seconds per comparison.
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._pool: cf.ProcessPoolExecutor | None = None
        self._cache: dict[tuple[str, str], bool] = {}
        self.timeouts = 0
        self.failures = 0

    def __getstate__(self) -> dict:
        return {"timeout_s": self.timeout_s, "_pool": None, "_cache": {}, "timeouts": 0, "failures": 0}

    def equivalent(self, gold: str, pred: str) -> bool:
        if gold.strip() == pred.strip():
            return True
        g, p = parse_number(gold), parse_number(pred)
        if g is not None and p is not None:
            return g == p
        key = (gold, pred)
        if key not in self._cache:
            verdict = self._verify(gold, pred)
            if verdict is None:
                self.failures += 1
                return False
            self._cache[key] = verdict
        return self._cache[key]

    def _verify(self, gold: str, pred: str) -> bool | None:
        """math-verify's verdict in the worker, or None when none could be had."""
        for attempt in range(2):
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(max_workers=1)
            try:
                return self._pool.submit(_verify, gold, pred).result(timeout=self.timeout_s)
            except cf.TimeoutError:
                self.timeouts += 1
                self._discard_pool()
                return None
            except BrokenProcessPool:  # the worker died: a new one, and one more try
                log.warning("math-verify worker died (attempt %d of 2); starting a new one", attempt + 1)
                self._discard_pool()
            except Exception as exc:  # noqa: BLE001 - math-verify raising counts as a failure
                log.warning("math-verify failed on %r vs %r: %s: %s", gold, pred, type(exc).__name__, exc)
                return None
        return None

    def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in list((getattr(pool, "_processes", None) or {}).values()):
            proc.kill()

    def close(self) -> None:
        """Stop the worker process."""
        self._discard_pool()
