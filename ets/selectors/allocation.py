"""The REBASE allocation rule (ALGORITHMS.md §2), shared by REBASE and ETS."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Ceil of a ratio that is an exact integer in real arithmetic but lands a hair above it
# in floating point (e.g. 6 * w / (3 w) = 2.0000000000000004) would hand out one child
# too many; the reference's result there depends on rounding noise, so we snap it.
_CEIL_EPS = 1e-9


def softmax_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """``exp(s_i / T)`` shifted by the max score (same ratios, no overflow)."""
    if not scores:
        return []
    top = max(scores)
    return [math.exp((s - top) / temperature) for s in scores]


def rebase_allocation(scores: Sequence[float], width: int, temperature: float) -> list[int]:
    """Children per candidate, in the order of ``scores``.

    Candidates are visited by score, highest first (ties keep input order);
    ``n_i = ceil(W_rem * w_i / S_rem)`` capped at ``W_rem``, then ``W_rem -= n_i`` and
    ``S_rem -= w_i`` with ``w_i = exp(s_i / T)``. ``S_rem`` is a suffix sum, recomputed
    rather than decremented, so the last candidates do not inherit cancellation error.

    Args:
        scores: PRM scores of the candidates.
        width: Children to hand out (the remaining width).
        temperature: Softmax temperature ``T`` (0.2 in the paper).

    Returns:
        Non-negative counts summing to ``width`` (when there is any candidate).
    """
    weights = softmax_weights(scores, temperature)
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    suffix = [0.0] * (len(order) + 1)
    for pos in range(len(order) - 1, -1, -1):
        suffix[pos] = suffix[pos + 1] + weights[order[pos]]
    counts = [0] * len(scores)
    remaining = width
    for pos, i in enumerate(order):
        if remaining <= 0:
            break
        share = remaining * weights[i] / suffix[pos] if suffix[pos] > 0 else remaining
        n = min(remaining, max(0, math.ceil(share - _CEIL_EPS)))
        counts[i] = n
        remaining -= n
    return counts
