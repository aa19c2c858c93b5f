"""A free PRM: the policy's own confidence in the step, no second model.

Score = ``exp(node.logprob / node.n_tokens)``, the geometric mean of the
per-token probabilities the policy gave the step (its mean token log-probability,
exponentiated). Why this mapping:

- it is monotone in the mean log-probability, so every ranking-based selector (beam,
  DVTS, best-of-N) behaves exactly as with the raw mean;
- it lies in (0, 1] like the P(correct) of trained PRMs, so REBASE/ETS softmax
  temperatures (0.2 in the papers) and the ``prod``/``min``/``mean`` path aggregations
  keep the meaning they have with real PRMs; the raw mean (in (-inf, 0], unbounded
  below) would make ``prod`` meaningless and the softmax arbitrarily peaked;
- the per-token mean (not the sum) keeps long steps from being penalised for length.

A step of zero tokens (nothing was generated, e.g. the context was full) scores 0.0, the
minimum: there is no evidence for it, and its empty log-probability sum (0) must not read
as certainty (it scored 1.0, the maximum, which kept empty paths alive to the depth cap).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ets.core.tree import Node
from ets.schema import Component, schema
from ets.types import Problem

EMPTY_STEP_SCORE = 0.0


class LogprobPRM:
    """Scores a step by ``exp(mean token log-probability)`` under the policy."""

    uses_step_logprobs = True  # :class:`ets.protocols.UsesStepLogprobs`

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        return [self.node_score(node) for _, node in items]

    @staticmethod
    def node_score(node: Node) -> float:
        if node.parent is None:
            raise ValueError(f"node {node.id} is the root: there is no step to score")
        if node.n_tokens == 0:
            return EMPTY_STEP_SCORE
        return math.exp(min(0.0, node.logprob) / node.n_tokens)


@schema("prm", "logprob", LogprobPRM)
class LogprobPRMConf(Component):
    pass
