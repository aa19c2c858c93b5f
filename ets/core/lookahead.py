"""Look-ahead for the width selectors (beam search, DVTS): ``selector.lookahead=k``.

Where each rule comes from (huggingface/search-and-learn, commit 6f81cac,
``src/sal/search/utils.py`` ``generate_k_steps``, used by ``beam_search.py`` and
``diverse_verifier_tree_search.py`` with ``config.lookahead``, default 0):

- every new candidate step is continued by ``k`` further steps, the first step sampled
  at the configured temperature and the ``k`` look-ahead steps **greedy**
  (``temperature = 0.0`` from the second generation on), each with the same step stop;
- a continuation that ends (EOS) is not extended further: a look-ahead chain that
  finishes early stops there;
- the PRM scores ``current_text + lookahead_text`` and the candidate is ranked by
  ``aggregate_scores(step scores, agg_strategy)``; the default ``agg_strategy`` is
  ``last``, i.e. the PRM score of the **last step of the look-ahead path**. That is the
  score we rank by (``end.score`` of the chain's last rollout; the classic selectors rank
  by the candidate's own last-step score too, whatever ``search.aggregation`` is);
- only the candidate's first step enters the beam (``next_texts``): the look-ahead
  steps are discarded.

DVTS there ranks by the look-ahead score (the argmax per subtree); ``beam_search.py``
computes the look-ahead text but scores only the beam's ``current_text``, so its
``lookahead`` costs tokens and changes nothing. We implement what the option means for
both: beams are ranked by the look-ahead score.

Our realisation on the strategy protocol: after a tree round, each open candidate gets a
chain of up to ``k`` rollouts (``Expansion(end, 1, rollout=True, temperature=0.0)``, one
link per round, all candidates' links batched together); rollouts are scored by the PRM
but are not tree nodes, do not use the width, are not in the KV or the vote, and their
tokens are the record's ``rollout_tokens``. When every chain is done the selector gets the
chain ends' scores (``select_scored``) in place of the candidates' own. KV is measured
once per tree round, at that selection (the rollouts' transient KV is not counted).

Our choices:

- ``max_nodes``: rollouts are generated only while the nodes spent so far, this round's
  rollouts, and a worst case for every remaining tree round (``remaining +
  ceil(sqrt(remaining))`` children per round, the most any of beam/beam_ets/DVTS hands
  out, down to ``max_depth``) fit in ``budget.max_nodes``; otherwise the look-ahead of
  that round stops where it is (all chains at the same length) and the round is counted
  in the per-problem stat ``lookahead_cut``. A default run (W = 64, depth 40) has room
  for k in the dozens before this applies.
- search-and-learn drops the look-ahead in its last iteration; we have no fixed
  iteration count, the depth and token caps end chains instead.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

from ets.core.tree import Node, Tree
from ets.core.width import WidthStrategy
from ets.protocols import Budget, Expansion


@runtime_checkable
class ScoredSelector(Protocol):
    """A width selector that ranks by given scores (beam search, DVTS)."""

    lookahead: int

    def select(self, candidates: list[Node], width: int, tree: Tree) -> list[int]: ...

    def select_scored(self, candidates: list[Node], scores: list[float], width: int,
                      tree: Tree) -> list[int]: ...


class LookaheadWidthStrategy(WidthStrategy):
    """:class:`~ets.core.width.WidthStrategy` with ``k`` greedy look-ahead rollouts per
    candidate before each selection (module docstring).

    Args:
        selector: A :class:`ScoredSelector` with ``lookahead >= 1``.
        tree: This problem's tree.
        budget: ``budget.width`` is W.
        name: The name used in error messages.
    """

    def __init__(self, selector: ScoredSelector, tree: Tree, budget: Budget, name: str) -> None:
        if not isinstance(selector, ScoredSelector):
            raise TypeError(f"selector {name!r} has lookahead but no select_scored()")
        super().__init__(selector, tree, budget, name)
        self.scored: ScoredSelector = selector
        self.k = int(selector.lookahead)
        self._ends: list[Node] = []  # each candidate's look-ahead end (itself at first)
        self._rolling: list[int] = []  # candidates whose chains this round's rollouts extend
        self._left = 0  # look-ahead rounds left before the selection
        self.generated = 0  # tree nodes and rollouts so far (budget.max_nodes)
        self.n_rollouts = 0
        self.cut = 0

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        self.generated += sum(len(kids) for _, kids in results)
        if self._rolling:  # a look-ahead round: extend each chain by its new rollout
            for i, (e, kids) in zip(self._rolling, results, strict=True):
                assert e.rollout and e.node is self._ends[i] and len(kids) == 1
                self._ends[i] = kids[0]
            self.n_rollouts += len(self._rolling)
            self._rolling = []
            self._left -= 1
            self._next, self.counts = [], []
        else:  # a tree round: new candidates, as WidthStrategy
            self._take(results)
            self._ends, self._left = list(self._candidates), self.k
        if not self._stops():
            self._plan()

    def _open(self, end: Node) -> bool:
        return (not end.finished and end.depth < self.budget.max_depth
                and end.cum_tokens < self.budget.max_tokens)

    def _plan(self) -> None:
        rolling = [i for i, end in enumerate(self._ends) if self._open(end)]
        if self._left > 0 and rolling:
            if self.generated + len(rolling) + self._reserve() <= self.budget.max_nodes:
                self._rolling = rolling
                self._next = [Expansion(self._ends[i], 1, rollout=True, temperature=0.0)
                              for i in rolling]
                return
            self.cut += 1
        scores = [end.score if end.score is not None else 0.0 for end in self._ends]
        self._allocate(self.scored.select_scored(self._candidates, scores, self.remaining, self.tree))

    def _reserve(self) -> int:
        """Nodes every tree round left may still need (worst case, see the module)."""
        rounds = self.budget.max_depth - self._candidates[0].depth
        per_round = self.remaining + math.isqrt(max(self.remaining - 1, 0)) + 1
        return rounds * per_round

    def stats(self) -> dict[str, float]:
        return {"lookahead_rollouts": float(self.n_rollouts), "lookahead_cut": float(self.cut)}
