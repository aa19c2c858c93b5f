"""Particle filtering (``selector=pf``) and particle Gibbs (``selector=pgibbs``)
(ALGORITHMS.md §7; Puri et al., arXiv 2502.01618).

References read (read, not copied):

- PIS: probabilistic-inference-scaling, commit f75d461, ``src/sal/search/particle_gibbs.py``
  (``particle_gibbs_kernel``, ``particle_gibbs``, ``Particle.add_step``,
  ``temperature_linear_annealing``) and ``scripts/pg.py`` (its CLI defaults);
- its_hub: Red-Hat-AI-Innovation-Team/its_hub, commit e4d00d1,
  ``its_hub/algorithms/particle_gibbs.py`` (``ParticleGibbs.infer``, ``_propagate``,
  ``_inv_sigmoid``, ``ParticleFiltering``) and ``docs/algorithms.md``.

Where each rule comes from:

- N particles = ``search.width`` (its_hub ``infer(budget)``: ``num_particles = budget //
  num_iterations``; PF has one iteration). Every round, every active particle takes one
  step (one child; PIS ``take_a_step``, its_hub ``_propagate``). Sampling temperature:
  the policy's (``Expansion.temperature=None``); the references sample at 0.8 (PIS
  ``llm_sampling_temp``, its_hub ``StepGeneration.temperature``) - set the policy's
  temperature to 0.8 to match them.
- Weight: ``softmax(logit(r) / tau)`` over the particles (PIS ``inverse_sigmoid`` +
  ``softmax(logits / softmax_temp)``; its_hub ``_inv_sigmoid`` + ``_softmax``, i.e.
  tau = 1). ``r`` = the particle's step scores aggregated by ``aggregation``: its_hub's
  PRM aggregates (``aggregation_method="prod"`` in its docs) -> default ``prod``; PIS
  uses the last step's score (``aggregation=last``). ``r`` is clipped to
  ``[1e-7, 1 - 1e-7]`` before the logit (its_hub; PIS clips at machine epsilon); a PRM
  score outside [0, 1] is an error (its_hub asserts it). ``softmax_temperature``
  default 1.0 (PIS ``particle_gibbs`` and ``scripts/pg.py``; its_hub has none).
- Resampling: after each round in which some particle is still active, N particles are
  drawn with replacement by weight (``rng.choices``, the per-problem RNG; the references
  use ``np.random.choice`` / ``random.choices``) over all particles
  (``resample_inactive=True``, the PIS function default, used by every sweep command,
  and the only mode of its_hub): a finished particle keeps its final weight, and a
  finished particle drawn stays finished and occupies its particle slot (PIS
  ``deepcopy(numSteps=step)`` caps at its length and keeps ``active``; its_hub keeps
  ``is_stopped``). ``resample_inactive=False`` is PIS's other branch: only the active
  particles are resampled (as many as are active) and the finished ones keep their slots.
- A particle stops at an answer (``\\boxed``)/EOS (PIS ``add_step``; here the loop's finish
  classifier, which also stops at the token cap) or after ``max_steps`` steps (PIS: 40;
  bounded by ``search.max_depth``, where the classifier marks the node ``depth``; when
  ``max_steps < max_depth`` this strategy marks the node finished with reason ``depth``
  itself). The search of a sweep ends when no particle is active.
- Optional linear annealing of tau (PIS ``temperature_linear_annealing(start, end,
  total_steps, current_step)``, ``current_step`` = steps taken, 1 at the first
  resampling): on when ``anneal_steps > 0``.
- Final pick over the last set of particles (its_hub): ``argmax`` of the log weight (its
  default; the first maximum, as ``np.argmax``) -> one finalist; ``sample``: one particle
  drawn by weight (its_hub ``SelectionMethod.SAMPLE``) -> one finalist; ``vote``: every
  particle is a finalist, with multiplicity (duplicates vote once per particle), and the
  loop's vote (``search.aggregation`` weights) picks the answer - a weighted vote as in
  the paper's evaluation; set ``search.aggregation=prod`` to weight by the PF's score.
- Particle Gibbs (its_hub ``ParticleGibbs.infer``): ``num_iterations`` sweeps, each with
  ``N = search.width / num_iterations`` particles (its_hub asserts divisibility; so do
  we). After a sweep, ``num_ref_particles`` reference particles are drawn with
  replacement by ``softmax(logit(r)/tau)`` from the sweep's final particles (reference
  particles included). The next sweep has ``N - num_ref_particles`` free particles
  starting at the root; the references are not stepped (they are finished) but take
  part in every resampling: the N - num_ref free slots are drawn over free + reference
  particles, each reference weighted by its final weight (its_hub: stopped particles use
  their final weight; ``ref_weight=prefix`` uses the weight of its prefix of the current
  length instead, what its_hub's comment "partial log weights at the current step"
  describes). A reference drawn into a free slot after ``t`` steps continues from its
  own prefix of ``t`` steps (its_hub truncates ``steps`` to ``current_step`` and sets
  ``is_stopped=False``): in the tree that is the reference's ancestor at depth ``t``, an
  existing node - its steps are re-used, never generated again; a reference no longer
  than ``t`` steps stays finished in that slot.
- ``final_resample``: its_hub resamples after every propagation, also after the one in
  which the last particle stopped (and then loops on if a reference prefix was drawn
  back to life); PIS resamples only while some particle is active. Default: PIS for
  ``pf`` (False), its_hub for ``pgibbs`` (True).

Our choices: tree semantics (several particles on one node -> one ``Expansion(node, k)``
with k = the particles on it, children handed to them in slot order); particle order
is slot order with the references last (its_hub ``resampled + ref_particles``);
``num_iterations`` defaults to the references' 1 for ``pgibbs`` (one sweep: particle
filtering with nothing carried over; set 2 or more for Gibbs sweeps); ancestor sampling (its_hub ``NotImplementedError``) is not
offered. Node budget: at most ``width * min(max_steps, max_depth)`` generated nodes, within
the loop's default ``max_nodes = 2 * width * max_depth``.

KV (``kv_nodes`` and ``counts``, :class:`~ets.protocols.HasSelectionCounts`): per round
with a resampling, the distinct open nodes of the particles before it (the new steps
that hold KV while they are weighed; the before-pruning view, like the candidates of the
width methods) plus any reference prefix it drew in; ``counts`` = the particles on each
after it (the after-pruning view: what the particles keep). No sample for a round that
ends the search or a sweep.

Per-problem stats: ``rounds``, ``resamples`` (resampling events), ``ess_mean`` and
``ess_min`` (effective sample size ``1 / sum(p_i^2)`` of each resampling's
probabilities), ``final_distinct`` (distinct nodes in the final set), ``sweeps``,
``ref_prefix_draws`` (reference prefixes drawn into a free slot, pgibbs).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from ets.core.answers import AGGREGATIONS, aggregate
from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion
from ets.schema import Aggregation, Component, num, schema
from ets.types import Problem

SELECTIONS = ("argmax", "sample", "vote")
REF_WEIGHTS = ("final", "prefix")
LOGIT_EPS = 1e-7  # its_hub ``_inv_sigmoid`` clip


def logit(r: float) -> float:
    """``log(r / (1 - r))`` with ``r`` clipped to ``[1e-7, 1 - 1e-7]`` (its_hub)."""
    if not 0.0 <= r <= 1.0:
        raise ValueError(f"particle filtering needs PRM scores in [0, 1] (their logit is the "
                         f"log weight), got {r}")
    r = min(max(r, LOGIT_EPS), 1.0 - LOGIT_EPS)
    return math.log(r / (1.0 - r))


def softmax(xs: list[float], tau: float) -> list[float]:
    """``softmax(xs / tau)``, shifted by the maximum for stability."""
    top = max(xs)
    exps = [math.exp((x - top) / tau) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def annealed_tau(start: float, end: float, total_steps: int, step: int) -> float:
    """PIS ``temperature_linear_annealing``: linear from ``start`` (step 0) to ``end``
    (step ``total_steps - 1``), ``end`` from then on (and when ``total_steps <= 1``)."""
    if step < 0:
        raise ValueError("step must be >= 0")
    if step >= total_steps or total_steps <= 1:
        return end
    return start - (start - end) * step / (total_steps - 1)


def ess(probs: list[float]) -> float:
    """Effective sample size ``1 / sum(p^2)`` of normalised weights."""
    return 1.0 / sum(p * p for p in probs)


def ancestor_at(node: Node, depth: int) -> Node:
    """``node``'s ancestor (or itself) at ``depth`` (``node`` itself when not deeper)."""
    while node.depth > depth and node.parent is not None:
        node = node.parent
    return node


@dataclass(frozen=True)
class ParticleConfig:
    """The hyperparameters (module docstring); validated by :meth:`check`."""

    aggregation: str = "prod"
    softmax_temperature: float = 1.0
    resample_inactive: bool = True
    max_steps: int = 40
    selection: str = "argmax"
    anneal_start: float = 1.0
    anneal_end: float = 1.0
    anneal_steps: int = 0
    final_resample: bool = False
    num_iterations: int = 1
    num_ref_particles: int = 0
    ref_weight: str = "final"

    def check(self) -> None:
        def bad(key: str, value: Any, allowed: str) -> ValueError:
            return ValueError(f"selector.{key}={value!r} is invalid; allowed: {allowed}")

        if self.aggregation not in AGGREGATIONS:
            raise bad("aggregation", self.aggregation, ", ".join(AGGREGATIONS))
        if self.selection not in SELECTIONS:
            raise bad("selection", self.selection, ", ".join(SELECTIONS))
        if self.ref_weight not in REF_WEIGHTS:
            raise bad("ref_weight", self.ref_weight, ", ".join(REF_WEIGHTS))
        for key in ("softmax_temperature", "anneal_start", "anneal_end"):
            if not getattr(self, key) > 0:
                raise bad(key, getattr(self, key), "> 0")
        if self.max_steps < 1:
            raise bad("max_steps", self.max_steps, ">= 1")
        if self.anneal_steps < 0:
            raise bad("anneal_steps", self.anneal_steps, ">= 0 (0 = no annealing)")
        if self.num_iterations < 1:
            raise bad("num_iterations", self.num_iterations, ">= 1")
        if self.num_ref_particles < 0:
            raise bad("num_ref_particles", self.num_ref_particles, ">= 0")

    def tau(self, step: int) -> float:
        if self.anneal_steps > 0:
            return annealed_tau(self.anneal_start, self.anneal_end, self.anneal_steps, step)
        return self.softmax_temperature


class ParticleStrategy:
    """One problem's particle filter / particle Gibbs sampler (module docstring).

    State: ``particles`` (the free slots, each a tree node: the particle's last step, the
    root before its first) and ``refs`` (the reference particles' finished nodes). A
    particle is active while its node is open.
    """

    def __init__(self, tree: Tree, budget: Budget, rng: random.Random, cfg: ParticleConfig,
                 name: str) -> None:
        self.tree, self.budget, self.rng, self.cfg, self.name = tree, budget, rng, cfg, name
        if budget.width % cfg.num_iterations:
            raise ValueError(f"search.width={budget.width} must be divisible by "
                             f"selector.num_iterations={cfg.num_iterations} (each sweep has "
                             "width / num_iterations particles)")
        self.n = budget.width // cfg.num_iterations
        if cfg.num_iterations > 1 and cfg.num_ref_particles >= self.n:
            raise ValueError(f"selector.num_ref_particles={cfg.num_ref_particles} must be below the "
                             f"particles per sweep, search.width / selector.num_iterations = {self.n}")
        self.max_steps = min(cfg.max_steps, budget.max_depth)
        self.refs: list[Node] = []
        self.particles: list[Node] = []
        self.sweep = 0
        self.step = 0
        self._next: list[Expansion] = []
        self._slots: list[list[int]] = []  # particle slots per expansion of ``_next``
        self.final: list[Node] = []  # the last sweep's final particles (free, then refs)
        self._finalists: list[Node] | None = None
        self.rounds = self.resamples = self.ref_prefix_draws = 0
        self.ess: list[float] = []
        self.last_probs: list[float] = []  # the last resampling's probabilities (pool order)
        # KV view of the last round (HasSelectionCounts): the open particle nodes at the
        # resampling, and how many particles each holds after it ([]: no resampling).
        self._kv: list[Node] = []
        self.counts: list[int] = []
        self._start_sweep()

    # -- protocol ----------------------------------------------------------------------
    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        self.rounds += 1
        for (_, kids), slots in zip(results, self._slots, strict=True):
            if len(kids) != len(slots):
                raise RuntimeError(f"{self.name}: expected {len(slots)} children, got {len(kids)}")
            for i, kid in zip(slots, kids):
                self.particles[i] = kid
        self.step += 1
        for node in self.particles:  # PIS ``add_step``: stop after max_steps steps
            if not node.finished and node.depth >= self.max_steps:
                node.finished, node.finish_reason = True, "depth"
        self._kv, self.counts = [], []
        if self._any_active() or self.cfg.final_resample:
            before = self._open_nodes()
            self._resample()
            after = self._open_nodes()
            self._kv = list({n.id: n for n in before + after}.values())
            if self._kv:
                held = [n.id for n in self.particles if not n.finished]
                self.counts = [held.count(n.id) for n in self._kv]
        if self._any_active():
            self._plan()
        else:
            self._end_sweep()

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        if self._finalists is None:
            self._finalists = self._pick()
        return list(self._finalists)

    def kv_nodes(self) -> list[Node]:
        """The open particle nodes at the last resampling: the active particles' nodes
        before it, then any reference prefix it drew in (``counts``: the particles each
        holds after it; the KV backends' after-pruning view)."""
        return list(self._kv)

    def stats(self) -> dict[str, float]:
        out = {"rounds": float(self.rounds), "resamples": float(self.resamples),
               "final_distinct": float(len({n.id for n in self.final}))}
        if self.ess:
            out["ess_mean"] = sum(self.ess) / len(self.ess)
            out["ess_min"] = min(self.ess)
        if self.cfg.num_iterations > 1:
            out["sweeps"] = float(self.sweep)
            out["ref_prefix_draws"] = float(self.ref_prefix_draws)
        return out

    # -- weights -----------------------------------------------------------------------
    def log_weight(self, node: Node) -> float:
        """``logit`` of the node's aggregated step scores (its_hub ``log_weight``)."""
        return logit(aggregate(node.step_scores(), self.cfg.aggregation))

    def _ref_log_weight(self, ref: Node) -> float:
        if self.cfg.ref_weight == "prefix":
            return self.log_weight(ancestor_at(ref, self.step))
        return self.log_weight(ref)

    # -- the sweep ---------------------------------------------------------------------
    def _open_nodes(self) -> list[Node]:
        return list({n.id: n for n in self.particles if not n.finished}.values())

    def _any_active(self) -> bool:
        return any(not n.finished for n in self.particles)

    def _start_sweep(self) -> None:
        self.sweep += 1
        self.step = 0
        self.particles = [self.tree.root] * (self.n - len(self.refs))
        self._plan()

    def _plan(self) -> None:
        """One expansion per distinct active node, k = the particles on it (slot order)."""
        groups: dict[int, tuple[Node, list[int]]] = {}
        for i, node in enumerate(self.particles):
            if not node.finished:
                groups.setdefault(node.id, (node, []))[1].append(i)
        self._next = [Expansion(node, len(slots)) for node, slots in groups.values()]
        self._slots = [slots for _, slots in groups.values()]

    def _resample(self) -> None:
        """Draw the free slots by weight over free + reference particles."""
        if self.cfg.resample_inactive:
            slots = list(range(len(self.particles)))
        else:  # PIS: only the active ones are resampled; finished ones keep their slots
            slots = [i for i, n in enumerate(self.particles) if not n.finished]
        if not slots:
            return
        pool = [self.particles[i] for i in slots] + self.refs
        logw = [self.log_weight(n) for n in pool[:len(slots)]]
        logw += [self._ref_log_weight(r) for r in self.refs]
        probs = softmax(logw, self.cfg.tau(self.step))
        draws = self.rng.choices(range(len(pool)), weights=probs, k=len(slots))
        self.resamples += 1
        self.last_probs = probs
        self.ess.append(ess(probs))
        for slot, j in zip(slots, draws):
            node = pool[j]
            if j >= len(slots):  # a reference: its own prefix of the current length
                node = ancestor_at(node, self.step)
                self.ref_prefix_draws += node is not pool[j]
            self.particles[slot] = node

    def _end_sweep(self) -> None:
        self._next, self._slots = [], []
        self.final = list(self.particles) + self.refs
        if self.sweep >= self.cfg.num_iterations:
            return
        # its_hub: references drawn by weight from the final particles (PIS: with tau)
        probs = softmax([self.log_weight(n) for n in self.final], self.cfg.tau(self.sweep))
        picks = self.rng.choices(range(len(self.final)), weights=probs,
                                 k=self.cfg.num_ref_particles)
        self.refs = [self.final[i] for i in picks]
        self._start_sweep()

    def _pick(self) -> list[Node]:
        if not self.final:
            return []
        if self.cfg.selection == "vote":
            return list(self.final)
        logw = [self.log_weight(n) for n in self.final]
        if self.cfg.selection == "argmax":
            return [self.final[logw.index(max(logw))]]
        probs = softmax(logw, self.cfg.tau(self.sweep))
        return [self.final[self.rng.choices(range(len(self.final)), weights=probs, k=1)[0]]]


class ParticleFilter:
    """Factory of :class:`ParticleStrategy` for particle filtering (``selector=pf``).

    Args: the keys of :class:`ParticleConfig` (module docstring; defaults = the references').
    """

    name = "pf"

    def __init__(self, aggregation: str = "prod", softmax_temperature: float = 1.0,
                 resample_inactive: bool = True, max_steps: int = 40, selection: str = "argmax",
                 anneal_start: float = 1.0, anneal_end: float = 1.0, anneal_steps: int = 0,
                 final_resample: bool = False) -> None:
        self.cfg = ParticleConfig(
            aggregation=str(getattr(aggregation, "value", aggregation)),
            softmax_temperature=softmax_temperature, resample_inactive=resample_inactive,
            max_steps=max_steps, selection=str(getattr(selection, "value", selection)),
            anneal_start=anneal_start, anneal_end=anneal_end, anneal_steps=anneal_steps,
            final_resample=final_resample)
        self.cfg.check()

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random,
                 budget: Budget) -> ParticleStrategy:
        return ParticleStrategy(tree, budget, rng, self.cfg, self.name)


class ParticleGibbs(ParticleFilter):
    """Factory for particle Gibbs (``selector=pgibbs``): ``num_iterations`` sweeps of
    ``search.width / num_iterations`` particles with ``num_ref_particles`` references."""

    name = "pgibbs"

    def __init__(self, num_iterations: int = 1, num_ref_particles: int = 1,
                 ref_weight: str = "final", final_resample: bool = True, **kw: Any) -> None:
        super().__init__(final_resample=final_resample, **kw)
        self.cfg = replace(self.cfg, num_iterations=num_iterations,
                           num_ref_particles=num_ref_particles,
                           ref_weight=str(getattr(ref_weight, "value", ref_weight)))
        self.cfg.check()


class PFSelection(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum (SELECTIONS)
    argmax = "argmax"
    sample = "sample"
    vote = "vote"


class RefWeight(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum (REF_WEIGHTS)
    final = "final"
    prefix = "prefix"


@schema("selector", "pf", ParticleFilter)
class ParticleFilterConf(Component):
    """``selector=pf``: defaults (from ``ParticleFilter.__init__``) are the references'."""

    aggregation: Aggregation
    softmax_temperature: float = num(gt=0)
    resample_inactive: bool
    max_steps: int = num(ge=1)
    selection: PFSelection
    anneal_start: float = num(gt=0)
    anneal_end: float = num(gt=0)
    anneal_steps: int = num(ge=0)  # 0: no annealing
    final_resample: bool


@schema("selector", "pgibbs", ParticleGibbs)
class ParticleGibbsConf(ParticleFilterConf):
    """``selector=pgibbs``: its_hub's sweeps and reference particles."""

    num_iterations: int = num(ge=1)
    num_ref_particles: int = num(ge=1)
    ref_weight: RefWeight
