"""A synthetic PRM: a noisy, seeded reader of whether a path's text is still correct.

It reads the texts of the path root..node (no simulator state: nodes carry none) and
decodes correctness with the world's own rules (:func:`ets.synthetic.dynamics.read_path`).
The latent logit of a node is ``bias + scale * (w_s * s + w_n * g + 0.02 * (u - 0.5))``
with ``s = +0.5`` for a still-correct path and ``-0.5`` once it has erred (or entered a
loop), ``u ~ U(0, 1)`` and ``g = sqrt(rho) * e_parent + sqrt(1 - rho) * e_node`` with
one independent N(0, 1) draw ``e`` per node: a node's noise is shared with its
siblings in proportion ``rho`` (they are read in the same context), not with cousins
or other problems, and every node's ``g`` stays N(0, 1). This matches real frontiers,
where siblings agree (sd 0.07) but a frontier is about as spread as the pooled scores
(sd 0.13: :mod:`ets.synthetic.fit`); an AR(1) along the path would instead give every
problem its own level (measured: pooled scores 0.03-0.97 at a frontier sd of 0.10).
``e`` and ``u`` are hashed from (PRM seed,
problem id, texts and token counts of the path), so **two siblings with the same text
and tokens get the same score**, whatever the batch. The score is the sigmoid.

The weights ``w_s / w_n = sqrt(2) * Phi^-1((1 + quality) / 2)`` (with ``w_s^2 + w_n^2 =
1``) are chosen so that ``quality`` has a direct meaning: **the step-level AUC (a
correct path outscoring a wrong one) is (1 + quality) / 2** (``g`` is N(0, 1) at every
node, so this holds for any ``rho``). Consequences:

- ``quality = 1``: every correct path outscores every wrong one (the jitter, at most
  ``0.01 * scale``, only breaks ties); ``quality = 0``: scores ignore correctness.
- Default 0.3 (AUC 0.65): a mediocre verifier, like the 7B PRMs of the paper's era on
  hard steps. At 0.7 (AUC 0.85) every method scored ~1.000 at width 64 on the
  ``math_reference`` world (no headroom to compare methods); 0.3 was fixed from that
  observation with REBASE alone, before any ETS-vs-baseline comparison.
- ``scale``, ``rho`` and ``bias`` set how spread out, how sibling-alike and how centred
  the scores are; ``None`` takes the calibration profile's values
  (:mod:`ets.synthetic.profiles`: fitted to real SmolLM2 search frontiers by default).
  They change no ranking between a correct and a wrong *fresh* node, only how peaked
  REBASE's softmax (T = 0.2) is and how much siblings agree.
- It reads only the *prefix* correctness: like a real PRM it cannot know whether a
  correct prefix will go on to the right answer.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

from ets.core.tree import Node
from ets.schema import Component, num, schema
from ets.synthetic import profiles
from ets.synthetic.dynamics import ProblemSpec, read_path
from ets.synthetic.world import GOLDEN, M64, mix64, str_key
from ets.types import Problem

_TWO_PI = 2 * math.pi
_INV32 = 1.0 / (1 << 32)


def _gauss(x: int) -> float:
    u1, u2 = ((x & 0xFFFFFFFF) + 0.5) * _INV32, ((x >> 32) + 0.5) * _INV32
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(_TWO_PI * u2)


class SyntheticPRM:
    """Scores nodes produced by :class:`ets.policies.synthetic.SyntheticPolicy`.

    Args:
        quality: In [0, 1]; step-level AUC = (1 + quality) / 2 (0 = pure noise, 1 = perfect).
        seed: PRM noise seed (independent of the policy seed).
        profile: Calibration profile supplying ``scale``/``rho``/``bias`` left ``None``.
        scale: Logit scale (spread of the scores).
        rho: In [0, 1): share of a node's noise variance shared with its siblings.
        bias: Logit offset (centre of the scores).
    """

    def __init__(
        self,
        quality: float = 0.3,
        seed: int = 0,
        profile: str | None = None,
        scale: float | None = None,
        rho: float | None = None,
        bias: float | None = None,
    ) -> None:
        prof = profiles.get(profile)
        self.profile = prof.name
        scale = prof.prm_scale if scale is None else scale
        rho = prof.prm_rho if rho is None else rho
        bias = prof.prm_bias if bias is None else bias
        if not 0.0 <= quality <= 1.0:
            raise ValueError(f"quality must be in [0, 1], got {quality}")
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if not 0.0 <= rho < 1.0:
            raise ValueError(f"rho must be in [0, 1), got {rho}")
        self.quality, self.seed, self.scale, self.rho, self.bias = quality, seed, scale, rho, bias
        self._a, self._b = math.sqrt(rho), math.sqrt(1 - rho)
        self._salt = mix64((seed * GOLDEN + 0x5EED) & M64)
        if quality >= 1.0:
            self._w_signal, self._w_noise = 1.0, 0.0
        else:
            ratio = math.sqrt(2) * NormalDist().inv_cdf((1 + quality) / 2)
            self._w_signal, self._w_noise = ratio / math.hypot(1, ratio), 1 / math.hypot(1, ratio)
        self._specs: dict[str, ProblemSpec] = {}
        # per node: (noise key, g, decoded state); a cache only (all of it is recomputed
        # from the texts when a node is gone), keyed weakly so trees are freed
        self._memo: weakref.WeakKeyDictionary[Node, tuple[int, float, dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        return [self._score(problem, node) for problem, node in items]

    def _spec(self, problem: Problem) -> ProblemSpec:
        sp = self._specs.get(problem.id)
        if sp is None or sp.meta is not problem.meta:
            sp = self._specs[problem.id] = ProblemSpec(problem)
        return sp

    def _walk(self, sp: ProblemSpec, problem: Problem, node: Node) -> tuple[int, float, dict[str, Any]]:
        """(noise key, g, decoded state) of ``node``; memoised, so a search pays one step."""
        if node.parent is None:
            key = mix64(str_key(problem.id) ^ self._salt)
            return key, _gauss(key), read_path(sp, [])
        try:
            memo = self._memo.get(node)
        except TypeError:  # a Node type without weak references: no memo, same result
            memo = None
        if memo is not None:
            return memo
        pkey, _, pst = self._walk(sp, problem, node.parent)
        key = mix64(pkey ^ str_key(node.text, node.n_tokens))
        out = key, self._a * _gauss(pkey) + self._b * _gauss(key), read_path(sp, [node.text], pst)
        try:
            self._memo[node] = out
        except TypeError:
            pass
        return out

    def _score(self, problem: Problem, node: Node) -> float:
        if node.parent is None:
            raise ValueError(f"node {node.id} is the root: there is no step to score")
        key, g, st = self._walk(self._spec(problem), problem, node)
        u = (mix64(key ^ 0x9E37) >> 11) * (1.0 / (1 << 53))
        signal = self._w_signal * (0.5 if st["ok"] else -0.5)
        z = self.bias + self.scale * (signal + self._w_noise * g + 0.02 * (u - 0.5))
        return 1.0 / (1.0 + math.exp(-z))


@schema("prm", "synthetic", SyntheticPRM)
class SyntheticPRMConf(Component):
    quality: float = num(ge=0)
    seed: int
    profile: str | None
    scale: float | None = num(gt=0)
    rho: float | None = num(ge=0)
    bias: float | None
