"""Beam search, in the search-and-learn and the ETS-reference variants (ALGORITHMS.md §4)."""

from __future__ import annotations

import math
from enum import Enum

from ets.schema import Component, num, schema
from ets.tree import Node, Tree


class BeamSelector:
    """Keep the best candidates and expand each a fixed number of ways.

    ``search_and_learn``: keep the top ``ceil(W_rem / M)`` candidates (N/M beams while
    the whole width is live) and give each ``M`` children, the last one what is left,
    so the counts sum to the remaining width (less when fewer candidates are live).
    ``ets_reference``: keep ``ceil(sqrt(W_rem))`` and give each ``ceil(W_rem / keep)``;
    as in the reference the counts may exceed the remaining width.

    Args:
        beam_width: M, children per kept candidate (search-and-learn variant).
        variant: ``search_and_learn`` or ``ets_reference``.
    """

    def __init__(self, beam_width: int = 4, variant: str = "search_and_learn") -> None:
        self.beam_width = beam_width
        self.variant = str(getattr(variant, "value", variant))

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]:
        order = sorted(range(len(candidates)), key=lambda i: -(candidates[i].score or 0.0))
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
