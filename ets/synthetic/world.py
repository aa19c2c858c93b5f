"""The seeded synthetic world: a cheap, calibrated stand-in for policy + PRM + MATH500.

It lets every search algorithm run at paper scale (500 problems x width 256) on a
CPU in seconds, with paired randomness across algorithms.

Problems (:class:`ets.datasets.synthetic.SyntheticDataset`)
    Problem ``i`` is drawn from ``random.Random(f"syn:{seed}:{i}")`` only.
    - ``level`` 1-5 with MATH500's level mix (``LEVEL_COUNTS``);
      ``difficulty = (level - 1 + U(0,1)) / 5`` in [0, 1).
    - ``n_steps`` (answer step included) = ``1 + round(Gamma)`` moment-matched to
      MATH500's per-level steps per solution (``STEPS_MEAN``/``STEPS_SD``; the data
      are over-dispersed, so not Poisson), clipped to [``MIN_STEPS``, ``MAX_STEPS``]:
      at least one reasoning step before the answer, and no 40-step outliers.
    - ``plan``: ``n_steps - 1`` moves (:mod:`ets.synthetic.moves`, no immediate
      repeats) with a ``values`` number each, which a correct step writes.
    - ``gold``: an integer in ``GOLD_RANGE`` (numeric answers: grading is exact);
      ``distractors``: ``N_DISTRACTORS`` plausible slips (off by one or ten,
      doubled, halved, sign) with Zipf(``ZIPF_EXPONENT``) weights 0.48/0.24/0.16/0.12:
      wrong trajectories concentrate on a few wrong answers, as real ones do,
      so majority vote can be fooled.
    - ``prompt_tokens`` = ``PROMPT_OVERHEAD_TOKENS`` + a lognormal question length
      (``QUESTION_LOG_MU``/``_SIGMA``); 40 tokens is the Alpaca/MetaMath instruction
      template around the question used by the paper's Llemma-MetaMath policy.

Trajectories (:class:`ets.policies.synthetic.SyntheticPolicy`)
    A path's state is ``(key, k, ok, loop, wrong)``: a 64-bit key, plan steps done,
    still correct, stuck in a loop, chosen wrong answer. It is a function of the path's
    text (:mod:`ets.synthetic.dynamics`): *what* child ``j`` writes comes from
    ``mix64(parent_key + (j + 1) * GOLDEN)`` (root key from policy seed and problem
    id), while the child's key, token count and committed distractor come from a hash
    of (parent key, text) and its correctness is read off the text. So a child depends
    only on (policy seed, problem, parent path, j), never on batches or node ids, and
    two siblings that write the same text are the same step (same tokens and score).
    Nodes carry no simulator state: the policy keeps a table keyed by context token ids.
    Per step, with ``d`` the difficulty:
    - loop with ``p_loop = loop_base + loop_slope * d``: the path turns wrong and
      writes ``hesitate`` steps forever (repetition until the token cap, the
      failure mode of small models on hard problems);
    - else detour with ``detour_correct`` / ``detour_wrong``: a correct path restates
      the previous plan move (not possible before the first), a wrong one writes a
      random other move; no progress: wrong solutions run longer;
    - else error with ``p_err = base_error + error_slope * d`` (only if still
      correct; absorbing): a move other than the current and previous plan moves, and
      a distractor drawn by weight that the path will answer;
    - else the plan move (correct: its value; wrong: another value); ``k += 1``.
    When ``k`` reaches the plan length the step is the answer step (one more error
    draw): ``"<lead-in> The answer is <a>."``, ``finish_reason="eos"``.
    Step lengths are lognormal (``STEP_LOG_*``, answer steps ``ANSWER_LOG_*``, or the
    profile's), read from ``LENGTH_TABLE_SIZE`` quantiles, clipped to
    [``MIN_STEP_TOKENS``, ``MAX_STEP_TOKENS``]; token ids (``token_ids``) start with a
    hash of (text, length) and continue with a slice of a shared pool: identical steps
    share tokens, different ones never share a prefix. Step text is a short surrogate
    (264 distinct texts, times ``n_variants`` wording lead-ins); only its token count
    is realistic.

Calibration profiles (:mod:`ets.synthetic.profiles`, config key ``policy.profile``)
    ``math_reference`` holds the constants below (MATH500 reference solutions, PRM
    scale 3, independent PRM noise); the default ``smollm2_math500`` (and
    ``smollm2_gsm8k``) replaces step counts, step lengths, loop rate, wording variants
    and the PRM's spread with numbers fitted to real SmolLM2 search traces
    (:mod:`ets.synthetic.fit`).

Policy parameters (defaults; also the config schema's)
    - ``base_error=0.10``, ``error_slope=0.30``: ``p_err`` 0.10-0.40. With the
      calibrated step counts the closed form (``expected_accuracy``) gives pass@1
      ~0.69 / 0.54 / 0.44 / 0.30 / 0.16 on levels 1-5 (0.37 overall; 15 % of
      problems below 0.1): the range of the 7B-34B MetaMath-style SFT policies the
      paper searches with (roughly 0.3-0.4 pass@1 on MATH), near-solved on easy
      problems and rarely solved on the hardest, so search has headroom and some
      problems defeat any vote. Chosen from that pass@1 range before running any
      search, never tuned on search results. (An earlier default, 0.04/0.16, gave
      0.59 pass@1 and every method scored 1.000 at width 64: no headroom.)
    - ``loop_base=0.005``, ``loop_slope=0.015``: 0.5-2 % per step, so ~4 % of
      trajectories run into the 1024-token cap (mostly hard ones), the share of
      runaway generations typical of sampling small models at temperature 1.
    - ``detour_correct=0.05``, ``detour_wrong=0.25``: correct paths stay near the
      reference length; after an error a path takes ~1/3 more steps (wrong
      answers come with longer solutions in real samples).
    - ``n_paraphrases=4``: the measured embedding structure (:mod:`.moves`);
      fewer paraphrases means more exact-duplicate siblings.
    With seed 0 (``math_reference``): trajectories average ~210 tokens (p95 ~690); steps
    average 44.

PRM (:class:`ets.prms.synthetic.SyntheticPRM`): a noisy read-out of ``ok``
(``quality`` and ``scale`` are documented there).

Calibration (``calibrate``, rules in :mod:`ets.synthetic.calibration`): MATH500
worked solutions split into sentences, tokens ~ chars / 3.
"""

from __future__ import annotations

import math
import zlib
from functools import cache
from statistics import NormalDist

from ets.synthetic.calibration import calibrate

__all__ = [
    "calibrate",
    "mix64",
    "str_key",
    "length_table",
    "token_ids",
    "expected_accuracy",
]

# ---- calibration of math_reference (recomputed by calibrate(); tests compare) --------
LEVEL_COUNTS: tuple[int, ...] = (43, 90, 105, 128, 134)
STEPS_MEAN: tuple[float, ...] = (2.349, 3.0, 3.114, 3.68, 4.821)
STEPS_SD: tuple[float, ...] = (1.553, 2.231, 2.139, 2.215, 2.909)
STEP_LOG_MU, STEP_LOG_SIGMA = 3.516, 0.719  # median 34 tokens, mean 44
ANSWER_LOG_MU, ANSWER_LOG_SIGMA = 3.479, 0.856  # median 32, mean 47
QUESTION_LOG_MU, QUESTION_LOG_SIGMA = 3.901, 0.735  # median 49 tokens

# ---- world constants (rationale in the module docstring) -------------------------------
MIN_STEPS, MAX_STEPS = 2, 16
GOLD_RANGE = (10, 999)
N_DISTRACTORS = 4
ZIPF_EXPONENT = 1.0
PROMPT_OVERHEAD_TOKENS = 40
MIN_STEP_TOKENS, MAX_STEP_TOKENS = 3, 1024
LENGTH_TABLE_SIZE = 1024  # quantile resolution (10 bits of a hash)

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
_ID_SPACE = 1 << 31  # token ids stay int32-safe
HEAD_MIN = 1 << 17  # pool ids are below, first tokens above (a step starts with one)
_POOL_TAIL = 4096  # longest run served from the pool (longer ones are built)
_POOL = tuple(range(0x10000 + _POOL_TAIL))


def mix64(x: int) -> int:
    """SplitMix64 finaliser: a fast, well-mixed 64-bit hash of an integer."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def str_key(text: str, salt: int = 0) -> int:
    """A process-independent 64-bit key of a string (Python's ``hash`` is salted)."""
    return mix64((zlib.crc32(text.encode()) << 32 | zlib.adler32(text.encode())) ^ mix64(salt))


@cache
def length_table(mu: float, sigma: float) -> tuple[int, ...]:
    """``LENGTH_TABLE_SIZE`` equally likely lognormal(mu, sigma) token counts, clipped."""
    normal = NormalDist()
    out = []
    for i in range(LENGTH_TABLE_SIZE):
        z = normal.inv_cdf((i + 0.5) / LENGTH_TABLE_SIZE)
        out.append(min(MAX_STEP_TOKENS, max(MIN_STEP_TOKENS, round(math.exp(mu + sigma * z)))))
    return tuple(out)


STEP_LENGTHS = length_table(STEP_LOG_MU, STEP_LOG_SIGMA)
ANSWER_LENGTHS = length_table(ANSWER_LOG_MU, ANSWER_LOG_SIGMA)


def token_ids(text_key: int, length: int) -> tuple[int, ...]:
    """Token ids of a text of ``length`` tokens.

    The first id is a hash of (text, length) in [2^17, 2^31) so different steps never
    share a first token (hence no prefix); the rest is a slice of a shared pool of
    small ints, which is ~8x cheaper than allocating ``length`` fresh large ints.
    """
    if length <= 0:
        return ()
    head = HEAD_MIN + (text_key + length * GOLDEN) % (_ID_SPACE - HEAD_MIN)
    off = head & 0xFFFF
    if length > _POOL_TAIL:
        return (head, *range(off, off + length - 1))
    return (head,) + _POOL[off : off + length - 1]


def expected_accuracy(n_plan: int, p_err: float, p_loop: float, p_detour: float) -> float:
    """Probability that a trajectory ends with the gold answer (closed form).

    Per plan step a correct path either loops (fails), detours (retries), errs
    (fails) or advances; the answer step adds one more error draw. The first plan
    step cannot detour (a detour restates the previous plan move).

    Args:
        n_plan: Reasoning steps before the answer step (``n_steps - 1``).
        p_err: Per-step error probability.
        p_loop: Per-step probability of entering a repetition loop.
        p_detour: Detour probability of a correct path.
    """
    if n_plan <= 0:
        return 1 - p_err
    advance = (1 - p_loop) * (1 - p_detour) * (1 - p_err) / (1 - (1 - p_loop) * p_detour)
    first = (1 - p_loop) * (1 - p_err)
    return first * advance ** (n_plan - 1) * (1 - p_err)
