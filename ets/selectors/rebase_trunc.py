"""REBASE with truncation (ALGORITHMS.md §7; Wu et al., arXiv 2408.00724).

Where each rule comes from (thu-wyz/inference_scaling, commit 0fe7da9, ``rebase.py``,
``Tree.select_softmax_with_truncation``, chosen there by ``select_method:
softmax_with_truncate``):

- candidates are sorted by PRM score, best first, and only the top
  ``ceil(len(candidates) * truncate_ratio)`` are kept (``keep_num``);
- the kept ones share the remaining width by the REBASE rule (same loop as its
  ``select_softmax``): ``n_i = ceil(W_rem * exp(s_i/T) / S_rem)``, then
  ``W_rem -= n_i`` and ``S_rem -= exp(s_i/T)``; the dropped ones get 0 children.
  We reuse :func:`ets.selectors.allocation.rebase_allocation` for this, so
  ``truncate_ratio=1`` is exactly :class:`ets.selectors.rebase.RebaseSelector`.
- ``temperature`` is the reference's ``softmax_temperature``; its default 0.2 is the
  value in ``hype-parameters/rebase.yaml``.

Our choices, where the reference leaves one open:

- ``truncate_ratio`` has no default in the reference (its shipped YAML selects plain
  ``softmax`` and never sets ``truncate_ratio``); 0.5 is our default.
- ``ceil(n * ratio)`` is snapped like the allocation's ceil (``10 * 0.3`` is
  ``3.0000000000000004`` in floating point and would keep 4), and at least one
  candidate is kept whenever there is any.
- Ties in score keep input order (as in ``rebase_allocation``); the reference's
  ascending sort followed by ``reverse()`` puts tied candidates in reverse input order.
"""

from __future__ import annotations

import math

from ets.core.tree import Node, Tree
from ets.schema import num, schema
from ets.selectors.allocation import _CEIL_EPS, rebase_allocation
from ets.selectors.rebase import RebaseConf


def kept_count(n: int, truncate_ratio: float) -> int:
    """How many of ``n`` candidates survive truncation: ``ceil(n * ratio)``, at least 1."""
    if n == 0:
        return 0
    return max(1, min(n, math.ceil(n * truncate_ratio - _CEIL_EPS)))


def truncated_rebase_allocation(scores: list[float], width: int, temperature: float,
                                truncate_ratio: float) -> list[int]:
    """Children per candidate (in the order of ``scores``); the truncated ones get 0.

    Args:
        scores: PRM scores of the candidates.
        width: Children to hand out (the remaining width).
        temperature: Softmax temperature ``T``.
        truncate_ratio: Fraction of candidates kept, best first, in ``(0, 1]``.

    Returns:
        Non-negative counts summing to ``width`` (when there is any candidate).
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    kept = order[:kept_count(len(scores), truncate_ratio)]
    counts = [0] * len(scores)
    for i, n in zip(kept, rebase_allocation([scores[i] for i in kept], width, temperature),
                    strict=True):
        counts[i] = n
    return counts


class RebaseTruncSelector:
    """REBASE over the top ``ceil(len * truncate_ratio)`` candidates only.

    Args:
        temperature: Softmax temperature over PRM scores (the reference's 0.2).
        truncate_ratio: Fraction of candidates kept, in ``(0, 1]`` (our default 0.5).
    """

    def __init__(self, temperature: float = 0.2, truncate_ratio: float = 0.5) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} is invalid: must be > 0")
        if not 0 < truncate_ratio <= 1:
            raise ValueError(f"truncate_ratio={truncate_ratio} is invalid: must be in (0, 1]")
        self.temperature = temperature
        self.truncate_ratio = truncate_ratio

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        return truncated_rebase_allocation([c.score or 0.0 for c in candidates], width,
                                           self.temperature, self.truncate_ratio)


@schema("selector", "rebase_trunc", RebaseTruncSelector)
class RebaseTruncConf(RebaseConf):
    truncate_ratio: float = num(gt=0, le=1)
