"""Calibration profiles of the synthetic world: one name picks every fitted number.

A profile holds the numbers that were measured somewhere (step counts, step lengths,
loop rate, sibling duplicate rate, PRM score spread); everything else (error model,
vocabulary, answers) is shared by all profiles.

- ``math_reference``: the original world. Step counts and lengths from MATH500
  *reference* solutions split into sentences (:mod:`ets.synthetic.calibration`),
  loop rate 0.5-2 % per step chosen by hand, PRM logit scale 3.0 with independent
  per-node noise (scores 0.01-0.99). Kept so that earlier runs and golden results
  can be pinned (``policy.profile=math_reference``).
- ``smollm2_math500`` / ``smollm2_gsm8k`` (default: ``smollm2_math500``): fitted to our
  own SmolLM2-135M-Instruct REBASE search traces with the logprob PRM by
  :mod:`ets.synthetic.fit`; the numbers and their sources are in
  ``ets/synthetic/fitted_profiles.json`` (recomputed by ``python -m ets.synthetic.fit``).

The earlier world cannot be reproduced bit for bit: nodes no longer carry simulator
state, so a child's state is a function of its context (parent path + text), and two
identical sibling texts are now one and the same step (same length, token ids, score).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any

FITTED_JSON = Path(__file__).with_name("fitted_profiles.json")
DEFAULT_PROFILE = "smollm2_math500"


@dataclass(frozen=True)
class Profile:
    """The fitted numbers of one world.

    Attributes:
        name: Profile name (the config value).
        steps_mean: Per MATH level 1-5, mean steps per solution (answer step included)
            that a problem's plan is drawn around.
        steps_sd: Per level, their standard deviation.
        step_log_mu: Mean log token count of a non-final step.
        step_log_sigma: Its standard deviation.
        answer_log_mu: Same for the final (answer) step.
        answer_log_sigma: Its standard deviation.
        loop_base: Per-step probability of entering a repetition loop at difficulty 0.
        loop_slope: Added per unit difficulty.
        n_variants: Wordings per (move, paraphrase, value); more = fewer exact duplicate
            siblings (1 = the original 264 texts).
        prm_scale: Logit scale of the synthetic PRM (spread of the scores).
        prm_rho: Share of a node's PRM noise variance inherited from its parent (0 =
            independent per node; higher = siblings score alike, as real PRMs do).
        prm_bias: Logit offset of the PRM scores (their centre).
        length_per_text: A step's token count is a function of (parent path, text), so
            identical sibling texts are one step (fitted profiles). ``False`` (the
            reference world) draws it per sample: one surrogate text then stands for
            steps of several lengths, which are distinct steps (tokens, score, state).
    """

    name: str
    steps_mean: tuple[float, ...]
    steps_sd: tuple[float, ...]
    step_log_mu: float
    step_log_sigma: float
    answer_log_mu: float
    answer_log_sigma: float
    loop_base: float
    loop_slope: float
    n_variants: int
    prm_scale: float
    prm_rho: float
    prm_bias: float
    length_per_text: bool = True


MATH_REFERENCE = Profile(
    name="math_reference",
    # ets.synthetic.calibration on MATH500 reference solutions (tests recompute them)
    steps_mean=(2.349, 3.0, 3.114, 3.68, 4.821),
    steps_sd=(1.553, 2.231, 2.139, 2.215, 2.909),
    step_log_mu=3.516,
    step_log_sigma=0.719,
    answer_log_mu=3.479,
    answer_log_sigma=0.856,
    loop_base=0.005,
    loop_slope=0.015,
    n_variants=1,
    prm_scale=3.0,
    prm_rho=0.0,
    prm_bias=0.0,
    length_per_text=False,
)


_REGISTERED: dict[str, Profile] = {}


def register(profile: Profile) -> None:
    """Make ``profile`` available by name in this process (the fitting loop's candidates)."""
    _REGISTERED[profile.name] = profile


@cache
def _fitted() -> dict[str, Any]:
    if not FITTED_JSON.exists():
        return {}
    return json.loads(FITTED_JSON.read_text())["profiles"]


def names() -> list[str]:
    """Every profile name, the reference first."""
    return [MATH_REFERENCE.name, *sorted(_fitted()), *sorted(_REGISTERED)]


def get(name: str | Profile | None = None) -> Profile:
    """The profile called ``name`` (``None``: the default; a ``Profile`` is returned as is).

    Raises:
        ValueError: Unknown name (the message lists the allowed ones).
    """
    if isinstance(name, Profile):
        return name
    name = name or DEFAULT_PROFILE
    if name == MATH_REFERENCE.name:
        return MATH_REFERENCE
    if name in _REGISTERED:
        return _REGISTERED[name]
    fitted = _fitted()
    if name not in fitted:
        raise ValueError(f"profile must be one of {names()}, got {name!r}")
    keys = {f.name for f in fields(Profile)}
    values = {k: v for k, v in fitted[name]["params"].items() if k in keys}
    values["steps_mean"], values["steps_sd"] = tuple(values["steps_mean"]), tuple(values["steps_sd"])
    return Profile(name=name, **values)
