"""The Markov step dynamics of the synthetic world (see :mod:`ets.synthetic.world`)."""

from __future__ import annotations

from typing import Any

from ets.synthetic import world as W
from ets.synthetic.moves import (
    ANSWER_PREFIXES,
    HESITATE,
    MAX_PARAPHRASES,
    N_VALUES,
    PLAN_MOVES,
    VALUE_MIN,
    all_step_texts,
    answer_text,
)
from ets.types import Problem

_SALT = 0xD1B54A32D192ED03
_GOLDEN, _M64, _C1, _C2 = W.GOLDEN, W.M64, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_STEP_LENGTHS, _ANSWER_LENGTHS = W.STEP_LENGTHS, W.ANSWER_LENGTHS
_NO_CUT = 1 << 30
_INV16 = 1.0 / 65536
_N_PLAN = len(PLAN_MOVES)
assert PLAN_MOVES == tuple(range(_N_PLAN)), "plan moves are numbered 0..n-1"


class ProblemSpec:
    """Per-problem constants of the dynamics, built once per problem object."""

    __slots__ = ("meta", "root_key", "plan", "values", "n_plan", "p_err", "p_loop", "cum_w", "answers")

    def __init__(self, problem: Problem, dyn: Dynamics) -> None:
        m = problem.meta
        if "plan" not in m:
            raise ValueError(f"problem {problem.id!r} is not from SyntheticDataset (no meta['plan'])")
        d = float(m["difficulty"])
        self.meta, self.plan, self.values = m, tuple(m["plan"]), tuple(m["values"])
        self.root_key = W.mix64(W.str_key(problem.id) ^ W.mix64(dyn.seed))
        self.n_plan = len(self.plan)
        self.p_err = min(1.0, dyn.base_error + dyn.error_slope * d)
        self.p_loop = min(1.0, dyn.loop_base + dyn.loop_slope * d)
        acc, self.cum_w = 0.0, []
        for w in m["distractor_weights"]:
            acc += w
            self.cum_w.append(acc)
        # answers[a][prefix] = (answer, text, lead-in length, text key); a = 0 gold, 1.. distractors
        self.answers = [
            [
                (a, t := answer_text(p, a), len(ANSWER_PREFIXES[p]), W.str_key(t))
                for p in range(len(ANSWER_PREFIXES))
            ]
            for a in [problem.gold, *m["distractors"]]
        ]

    def pick_wrong(self, u: float) -> int:
        """Distractor index (1-based into ``answers``) drawn by weight."""
        for i, c in enumerate(self.cum_w):
            if u < c:
                return i + 1
        return len(self.cum_w)


class Dynamics:
    """Per-step transition of a path state; parameters as in :class:`ets.policies.synthetic.SyntheticPolicy`."""

    def __init__(
        self,
        seed: int,
        delimiter: str,
        base_error: float,
        error_slope: float,
        loop_base: float,
        loop_slope: float,
        detour_correct: float,
        detour_wrong: float,
        n_paraphrases: int,
    ) -> None:
        if not 1 <= n_paraphrases <= MAX_PARAPHRASES:
            raise ValueError(f"n_paraphrases must be in 1..{MAX_PARAPHRASES}, got {n_paraphrases}")
        self.seed, self.base_error, self.error_slope = seed, base_error, error_slope
        self.loop_base, self.loop_slope = loop_base, loop_slope
        self.detour_correct, self.detour_wrong, self.n_paraphrases = (
            detour_correct,
            detour_wrong,
            n_paraphrases,
        )
        self._texts = [t + delimiter for t in all_step_texts()]  # indexed by text id
        self._text_keys = [W.str_key(t) for t in self._texts]

    @staticmethod
    def root_state(sp: ProblemSpec) -> dict[str, Any]:
        """The state of the root (the prompt): nothing written yet."""
        return {
            "key": sp.root_key,
            "k": 0,
            "ok": True,
            "loop": False,
            "wrong": 0,
            "depth": 0,
            "tokens": 0,
            "done": False,
        }

    def draw(
        self, sp: ProblemSpec, parent: dict[str, Any], j: int
    ) -> tuple[str, int, int, int, dict[str, Any]]:
        """Child ``j`` of ``parent``.

        Returns:
            (text, text key, token count, answer cut point, child state). The cut point
            is where a truncated text must end at the latest (before the answer
            sentence); the state's ``tokens`` is still the parent's.
        """
        x = (parent["key"] + (j + 1) * _GOLDEN) & _M64  # SplitMix64, inlined: this is the hot path
        x = ((x ^ (x >> 30)) * _C1) & _M64
        x = ((x ^ (x >> 27)) * _C2) & _M64
        key = x ^ (x >> 31)
        x = ((key ^ (key >> 29) ^ _SALT) * _C1) & _M64
        h = x ^ (x >> 32)
        st = parent.copy()
        st["key"], st["depth"] = key, parent["depth"] + 1
        k, ok = parent["k"], parent["ok"]
        if not parent["loop"] and k >= sp.n_plan:
            return self._answer(sp, st, key, h)
        para, r_move, r_val = ((h >> 10) & 0xFF) % self.n_paraphrases, (h >> 18) & 0xFFFF, (h >> 34) & 0xFFFF
        if parent["loop"] or (key & 0xFFFF) * _INV16 < sp.p_loop:
            st["loop"], st["ok"] = True, False
            move, value = HESITATE, r_val % N_VALUES
        elif ((key >> 16) & 0xFFFF) * _INV16 < (self.detour_correct if ok else self.detour_wrong):
            move = sp.plan[k] if ok else r_move % _N_PLAN
            value = sp.values[k] - VALUE_MIN if ok else r_val % N_VALUES
        else:
            move, value = sp.plan[k], sp.values[k] - VALUE_MIN
            if ok and ((key >> 32) & 0xFFFF) * _INV16 < sp.p_err:
                ok = st["ok"] = False
                st["wrong"] = sp.pick_wrong((key >> 48) * _INV16)
                move = (move + 1 + r_move % (_N_PLAN - 1)) % _N_PLAN
            if not ok:
                value = (value + 1 + r_val % (N_VALUES - 1)) % N_VALUES
            st["k"] = k + 1
        tid = (move * MAX_PARAPHRASES + para) * N_VALUES + value
        return self._texts[tid], self._text_keys[tid], _STEP_LENGTHS[h & 0x3FF], _NO_CUT, st

    @staticmethod
    def _answer(
        sp: ProblemSpec, st: dict[str, Any], key: int, h: int
    ) -> tuple[str, int, int, int, dict[str, Any]]:
        if st["ok"] and ((key >> 32) & 0xFFFF) * _INV16 < sp.p_err:
            st["ok"], st["wrong"] = False, sp.pick_wrong((key >> 48) * _INV16)
        a = 0 if st["ok"] else st["wrong"]
        answer, text, cut, tkey = sp.answers[a][((h >> 10) & 0xFF) % len(ANSWER_PREFIXES)]
        st["done"], st["k"], st["answer"] = True, st["k"] + 1, answer
        return text, tkey, _ANSWER_LENGTHS[h & 0x3FF], cut, st
