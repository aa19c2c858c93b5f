"""Synthetic problems with MATH500's level mix (generative model: :mod:`ets.synthetic.world`)."""

from __future__ import annotations

import math
import random
from typing import Any

from ets.datasets import DatasetConf, check_selection, select
from ets.schema import num, schema
from ets.synthetic import profiles
from ets.synthetic import world as W
from ets.synthetic.moves import N_VALUES, PLAN_MOVES, VALUE_MIN
from ets.types import Problem


class SyntheticDataset:
    """``n`` seeded synthetic problems; problem ``i`` depends only on ``(seed, i)``.

    Args:
        n: Problems in the world (500 mirrors MATH500).
        seed: World seed.
        limit: Keep at most this many problems (after ``offset``).
        offset: Skip this many problems first (after sharding).
        shard: ``"i/n"`` keeps every n-th problem starting at i (for SLURM arrays).
        grader: Answer-equivalence component (answers are integers: a numeric grader).
        profile: Calibration profile (:mod:`ets.synthetic.profiles`) giving the step counts.
    """

    def __init__(
        self,
        n: int = 500,
        seed: int = 0,
        limit: int | None = None,
        offset: int = 0,
        shard: str | None = None,
        grader: Any = None,
        profile: str | None = None,
    ) -> None:
        if n < 0 or offset < 0 or (limit is not None and limit < 0):
            raise ValueError("n, offset and limit must be non-negative")
        self.n, self.seed, self.limit, self.offset, self.shard = n, seed, limit, offset, shard
        self.grader = grader
        self.profile = profiles.get(profile)

    def load(self) -> list[Problem]:
        indices = select(range(self.n), self.shard, self.offset, self.limit)
        check_selection(len(indices), self.n, f"the synthetic world (dataset.n={self.n})", self.shard,
                        self.offset, self.limit)
        return [make_problem(self.seed, i, self.profile) for i in indices]


def make_problem(seed: int, i: int, profile: profiles.Profile | None = None) -> Problem:
    """Problem ``i`` of the world with ``seed`` (independent of every other problem)."""
    profile = profile or profiles.get()
    rng = random.Random(f"syn:{seed}:{i}")
    level = rng.choices(range(1, 6), weights=W.LEVEL_COUNTS)[0]
    difficulty = (level - 1 + rng.random()) / 5
    n_steps = _draw_steps(rng, level, profile)
    plan = _draw_plan(rng, n_steps - 1)
    gold = rng.randint(*W.GOLD_RANGE)
    distractors = _draw_distractors(rng, gold)
    zipf = [1 / (r + 1) ** W.ZIPF_EXPONENT for r in range(len(distractors))]
    question_tokens = round(math.exp(rng.gauss(W.QUESTION_LOG_MU, W.QUESTION_LOG_SIGMA)))
    meta: dict[str, Any] = {
        "subject": "synthetic",
        "level": level,
        "difficulty": difficulty,
        "n_steps": n_steps,
        "plan": plan,
        "values": [rng.randrange(N_VALUES) + VALUE_MIN for _ in plan],
        "distractors": [str(d) for d in distractors],
        "distractor_weights": [w / sum(zipf) for w in zipf],
        "prompt_tokens": W.PROMPT_OVERHEAD_TOKENS + max(1, question_tokens),
    }
    question = (
        f"Synthetic problem {i} (level {level}): follow the {n_steps - 1}-step plan "
        f"and report the hidden integer."
    )
    return Problem(id=f"syn-{i:05d}", question=question, gold=str(gold), meta=meta)


def _draw_steps(rng: random.Random, level: int, profile: profiles.Profile) -> int:
    """Steps (answer included): 1 + Gamma moment-matched to the profile's level stats."""
    mean, sd = profile.steps_mean[level - 1] - 1, profile.steps_sd[level - 1]
    extra = rng.gammavariate(mean**2 / sd**2, sd**2 / mean)
    return min(W.MAX_STEPS, max(W.MIN_STEPS, 1 + round(extra)))


def _draw_plan(rng: random.Random, n: int) -> list[int]:
    plan: list[int] = []
    for _ in range(n):
        plan.append(rng.choice([m for m in PLAN_MOVES if not plan or m != plan[-1]]))
    return plan


def _draw_distractors(rng: random.Random, gold: int) -> list[int]:
    """``N_DISTRACTORS`` distinct typical slips of ``gold`` (random order = weight rank)."""
    slips = {gold + 1, gold - 1, gold + 10, gold - 10, 2 * gold, gold // 2, -gold}
    slips.discard(gold)
    return rng.sample(sorted(slips), W.N_DISTRACTORS)


@schema("dataset", "synthetic", SyntheticDataset)
class SyntheticDatasetConf(DatasetConf):
    n: int = num(ge=1)
    seed: int
    profile: str | None
