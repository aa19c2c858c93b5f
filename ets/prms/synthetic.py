"""A synthetic PRM: a noisy, seeded read-out of whether a path is still correct.

The latent logit of a node is ``scale * (w_s * s + w_n * g + 0.02 * (u - 0.5))`` with
``s = +0.5`` for a still-correct path and ``-0.5`` once it has erred (or entered a
loop), ``g ~ N(0, 1)`` and ``u ~ U(0, 1)`` drawn from a hash of (node state key, PRM
seed); the score is its sigmoid, in (0, 1). The weights ``w_s / w_n =
sqrt(2) * Phi^-1((1 + quality) / 2)`` (with ``w_s^2 + w_n^2 = 1``) are chosen so that
``quality`` has a direct meaning: **the step-level AUC (a correct path outscoring a
wrong one) is (1 + quality) / 2**. Consequences:

- ``quality = 1``: every correct path outscores every wrong one (the jitter, at most
  ``0.01 * scale``, only breaks ties); ``quality = 0``: scores ignore correctness.
- Default 0.3 (AUC 0.65): a mediocre verifier, like the 7B PRMs of the paper's
  era on hard steps. At 0.7 (AUC 0.85) every method scored ~1.000 at width 64 on
  this world (no headroom to compare methods); 0.3 was fixed from that observation
  with REBASE alone, before any ETS-vs-baseline comparison.
- The score is deterministic in the node's state (the same path always gets the
  same score, whatever the batch) and independent of the policy's own draws.
- It reads only the *prefix* correctness: like a real PRM it cannot know whether a
  correct prefix will go on to the right answer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

from ets.synthetic.world import GOLDEN, M64, mix64
from ets.tree import Node
from ets.types import Problem

_TWO_PI = 2 * math.pi
_INV32 = 1.0 / (1 << 32)


class SyntheticPRM:
    """Scores nodes produced by :class:`ets.policies.synthetic.SyntheticPolicy`.

    Args:
        quality: In [0, 1]; step-level AUC = (1 + quality) / 2 (0 = pure noise, 1 = perfect).
        seed: PRM noise seed (independent of the policy seed).
        scale: Logit scale; 3.0 spreads scores over most of (0, 1) (about 0.2-0.8 at
            quality 1), like real PRMs whose outputs are far from 0.5. It changes no
            ranking, only how peaked REBASE's softmax (T = 0.2) is.
    """

    def __init__(self, quality: float = 0.3, seed: int = 0, scale: float = 3.0) -> None:
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.quality, self.seed, self.scale = quality, seed, scale
        self._salt = mix64((seed * GOLDEN + 0x5EED) & M64)
        if quality >= 1.0:
            self._w_signal, self._w_noise = 1.0, 0.0
        else:
            ratio = math.sqrt(2) * NormalDist().inv_cdf((1 + quality) / 2)
            self._w_signal, self._w_noise = ratio / math.hypot(1, ratio), 1 / math.hypot(1, ratio)

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        return [self._score(node) for _, node in items]

    def _score(self, node: Node) -> float:
        st = node.state
        if "key" not in st or "ok" not in st:
            raise ValueError(
                f"node {node.id} has no synthetic state: SyntheticPRM needs SyntheticPolicy nodes"
            )
        x = mix64(st["key"] ^ self._salt)
        u1, u2 = ((x & 0xFFFFFFFF) + 0.5) * _INV32, ((x >> 32) + 0.5) * _INV32
        g = math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)
        u = (mix64(x) >> 11) * (1.0 / (1 << 53))
        signal = self._w_signal * (0.5 if st["ok"] else -0.5)
        z = self.scale * (signal + self._w_noise * g + 0.02 * (u - 0.5))
        return 1.0 / (1.0 + math.exp(-z))
