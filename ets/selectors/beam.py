"""Beam search, in the search-and-learn and the ETS-reference variants (ALGORITHMS.md §4),
optionally with look-ahead (``lookahead=k``: candidates ranked by the PRM score of k
further greedy steps; :mod:`ets.core.lookahead` runs them)."""

from __future__ import annotations

import math
from enum import Enum

from ets.core.tree import Node, Tree
from ets.schema import Component, num, schema


class BeamSelector:
    """Keep the best candidates and expand each a fixed number of ways.

    ``search_and_learn``: keep the top ``ceil(W_rem / M)`` candidates (N/M beams while
    the whole width is live) and give each ``M`` children, the last one what is left,
    so the counts sum to the remaining width (less when fewer candidates are live).
    ``ets_reference``: keep ``ceil(sqrt(W_rem))`` and give each ``ceil(W_rem / keep)``;
    as in the reference the counts may exceed the remaining width.

    With ``lookahead=k > 0`` the candidates are ranked by the score of their look-ahead
    path instead of their own (:class:`ets.core.lookahead.LookaheadWidthStrategy` calls
    :meth:`select_scored`). search-and-learn's ``beam_search.py`` computes the look-ahead
    text but scores only the beam's current text, so there ``lookahead`` changes nothing
    but the cost; we implement what the option means (rank by the look-ahead score), as
    its ``diverse_verifier_tree_search.py`` does.

    Args:
        beam_width: M, children per kept candidate (search-and-learn variant).
        variant: ``search_and_learn`` or ``ets_reference``.
        lookahead: k, greedy look-ahead steps per candidate (0: none, the classic method).
    """

    def __init__(self, beam_width: int = 4, variant: str = "search_and_learn",
                 lookahead: int = 0) -> None:
        if lookahead < 0:
            raise ValueError(f"lookahead={lookahead} is invalid: must be >= 0")
        self.beam_width = beam_width
        self.variant = str(getattr(variant, "value", variant))
        self.lookahead = lookahead

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        return self.select_scored(candidates, [c.score or 0.0 for c in candidates], width, tree)

    def select_scored(self, candidates: list[Node], scores: list[float], width: int,
                      tree: Tree) -> list[int]:
        """:meth:`select` with ``scores[i]`` ranking ``candidates[i]`` (look-ahead scores)."""
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        counts = [0] * len(candidates)
        if width <= 0 or not candidates:
            return counts
        if self.variant == "ets_reference":
            keep = min(len(candidates), math.ceil(math.sqrt(width)))
            for i in order[:keep]:
                counts[i] = math.ceil(width / keep)
            return counts
        keep = min(len(candidates), math.ceil(width / self.beam_width))
        left = width
        for i in order[:keep]:
            counts[i] = min(self.beam_width, left)
            left -= counts[i]
        return counts


class BeamVariant(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    search_and_learn = "search_and_learn"
    ets_reference = "ets_reference"


@schema("selector", "beam", BeamSelector)
class BeamConf(Component):
    beam_width: int = num(ge=1)
    variant: BeamVariant
    lookahead: int = num(ge=0)  # greedy look-ahead steps ranking each candidate (ets.core.lookahead)
