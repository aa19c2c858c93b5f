"""The Markov step dynamics of the synthetic world (see :mod:`ets.synthetic.world`).

Two kinds of randomness, so that a path's state is a function of its text:

- *what* child ``j`` of a node writes (move, paraphrase, wording, answer) comes from
  a hash of (parent key, ``j``);
- everything *about* what was written (the child's key, its token count, the wrong
  answer an erring step commits to) comes from a hash of (parent key, text), and the
  child's correctness follows from the text by :func:`decode`.

Hence two siblings that write the same text are the same step: same length, token
ids, state and PRM score, as with a real LLM (a step is its tokens). The same
:func:`decode` lets the synthetic PRM read correctness off the texts of a path.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from ets.synthetic import world as W
from ets.synthetic.moves import (
    ANSWER_PREFIXES,
    HESITATE,
    MAX_PARAPHRASES,
    MAX_VARIANTS,
    MOVES,
    N_VALUES,
    PLAN_MOVES,
    VALUE_MIN,
    all_step_texts,
    answer_text,
    step_text,
)
from ets.types import Problem

_GOLDEN, _M64, _C1, _C2 = W.GOLDEN, W.M64, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_NO_CUT = 1 << 30
_INV16 = 1.0 / 65536
_N_PLAN = len(PLAN_MOVES)
_PARAGRAPH = re.compile(r"\n\s*\n")
assert PLAN_MOVES == tuple(range(_N_PLAN)), "plan moves are numbered 0..n-1"

State = dict[str, Any]


class ProblemSpec:
    """Per-problem constants of the dynamics, built once per problem object."""

    __slots__ = ("meta", "root_key", "plan", "values", "n_plan", "p_err", "p_loop", "cum_w", "answers",
                 "answer_of", "err_moves", "other_moves")  # fmt: skip

    def __init__(self, problem: Problem, dyn: Dynamics | None = None) -> None:
        m = problem.meta
        if "plan" not in m:
            raise ValueError(f"problem {problem.id!r} is not from SyntheticDataset (no meta['plan'])")
        self.meta, self.plan = m, tuple(m["plan"])
        self.values = tuple(v - VALUE_MIN for v in m["values"])
        self.n_plan = len(self.plan)
        seed = dyn.seed if dyn is not None else 0
        self.root_key = W.mix64(W.str_key(problem.id) ^ W.mix64(seed))
        d = float(m["difficulty"])
        self.p_err = min(1.0, dyn.base_error + dyn.error_slope * d) if dyn else 0.0
        self.p_loop = min(1.0, dyn.loop_base + dyn.loop_slope * d) if dyn else 0.0
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
        self.answer_of = {t: i for i, row in enumerate(self.answers) for _, t, _, _ in row}
        # an erring step writes neither the current plan move nor the previous one (which
        # would read as progress or as a correct restatement); a wrong path's detour
        # writes anything but the current plan move (which would read as progress)
        self.err_moves = [
            tuple(x for x in PLAN_MOVES if x != mv and (k == 0 or x != self.plan[k - 1]))
            for k, mv in enumerate(self.plan)
        ]
        self.other_moves = [tuple(x for x in PLAN_MOVES if x != mv) for mv in self.plan]

    def pick_wrong(self, u: float) -> int:
        """Distractor index (1-based into ``answers``) drawn by weight."""
        for i, c in enumerate(self.cum_w):
            if u < c:
                return i + 1
        return len(self.cum_w)


def root_state(sp: ProblemSpec) -> State:
    """The state of the root (the prompt): nothing written yet."""
    return {"key": sp.root_key, "k": 0, "ok": True, "loop": False, "wrong": 0, "depth": 0,
            "tokens": 0, "done": False}  # fmt: skip


def decode(sp: ProblemSpec, parent: State, move: int, value: int, child_key: int) -> State:
    """The state after ``parent`` writes the step (``move``, ``value``): read off the text.

    - a loop, or a ``hesitate`` step, is (or starts) a repetition loop: wrong for good;
    - a correct path that writes the current plan move with its value advances, one
      that restates the previous plan move with its value stays correct without
      progress (a detour), anything else is an error: the path turns wrong and
      commits to a distractor drawn from ``child_key``;
    - a wrong path advances when it writes the current plan move, else detours.
    """
    st = parent.copy()
    st["key"], st["depth"] = child_key, parent["depth"] + 1
    k = parent["k"]
    if parent["loop"] or move == HESITATE:
        st["loop"], st["ok"] = True, False
    elif parent["ok"]:
        if move == sp.plan[k] and value == sp.values[k]:
            st["k"] = k + 1
        elif not (k >= 1 and move == sp.plan[k - 1] and value == sp.values[k - 1]):
            st["ok"], st["k"] = False, k + 1
            st["wrong"] = sp.pick_wrong((child_key >> 48) * _INV16)
    elif move == sp.plan[k]:
        st["k"] = k + 1
    return st


def decode_answer(sp: ProblemSpec, parent: State, a: int, child_key: int) -> State:
    """The state after ``parent`` writes the answer step with answer index ``a`` (0 = gold)."""
    st = parent.copy()
    st["key"], st["depth"], st["k"], st["done"] = child_key, parent["depth"] + 1, parent["k"] + 1, True
    st["answer"] = sp.answers[a][0][0]
    if a != 0 and parent["ok"]:
        st["ok"], st["wrong"] = False, a
    return st


@cache
def _meanings() -> dict[str, tuple[int, int]]:
    """Stripped step text (any wording variant) -> (move, value index)."""
    out = {}
    for m in range(len(MOVES)):
        for p in range(MAX_PARAPHRASES):
            for v in range(N_VALUES):
                for w in range(MAX_VARIANTS):
                    out[step_text(m, p, VALUE_MIN + v, w)] = (m, v)
    return out


def read_path(sp: ProblemSpec, texts: list[str], parent: State | None = None) -> State:
    """Replay the texts of a path (as a reader: the PRM) and return the final state.

    Each text is split at blank lines into steps (the ``full`` expander writes several
    per node). A piece that is not a whole step of the world (a truncated step) leaves
    the state unchanged: nobody can tell yet what it will turn into. Keys are not the
    policy's (the reader never sees step lengths), only ``ok``/``k``/``loop`` matter.
    """
    meanings = _meanings()
    st = parent if parent is not None else root_state(sp)
    for text in texts:
        for piece in _PARAGRAPH.split(text):
            piece = piece.strip()
            if not piece or st["done"]:
                continue
            if not st["loop"] and st["k"] >= sp.n_plan:
                a = sp.answer_of.get(piece)
                if a is not None:
                    st = decode_answer(sp, st, a, st["key"])
                continue
            mv = meanings.get(piece)
            if mv is not None:
                st = decode(sp, st, mv[0], mv[1], W.mix64(st["key"] ^ W.str_key(piece)))
    return st


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
        n_variants: int = 1,
        length_per_text: bool = True,
        step_lengths: tuple[int, ...] = W.STEP_LENGTHS,
        answer_lengths: tuple[int, ...] = W.ANSWER_LENGTHS,
    ) -> None:
        if not 1 <= n_paraphrases <= MAX_PARAPHRASES:
            raise ValueError(f"n_paraphrases must be in 1..{MAX_PARAPHRASES}, got {n_paraphrases}")
        if not 1 <= n_variants <= MAX_VARIANTS:
            raise ValueError(f"n_variants must be in 1..{MAX_VARIANTS}, got {n_variants}")
        self.seed, self.base_error, self.error_slope = seed, base_error, error_slope
        self.loop_base, self.loop_slope = loop_base, loop_slope
        self.detour_correct, self.detour_wrong, self.n_paraphrases = (
            detour_correct,
            detour_wrong,
            n_paraphrases,
        )
        self.n_variants, self.length_per_text = n_variants, length_per_text
        self.step_lengths, self.answer_lengths = step_lengths, answer_lengths
        self._texts = [t + delimiter for t in all_step_texts(n_variants)]  # indexed by text id
        self._text_keys = [W.str_key(t) for t in self._texts]

    def draw(self, sp: ProblemSpec, parent: State, j: int) -> tuple[str, int, int, int, State]:
        """Child ``j`` of ``parent``.

        Returns:
            (text, text key, token count, answer cut point, child state). The cut point
            is where a truncated text must end at the latest (before the answer
            sentence); the state's ``tokens`` is still the parent's.
        """
        x = (parent["key"] + (j + 1) * _GOLDEN) & _M64  # SplitMix64, inlined: this is the hot path
        x = ((x ^ (x >> 30)) * _C1) & _M64
        x = ((x ^ (x >> 27)) * _C2) & _M64
        r = x ^ (x >> 31)
        x = ((r ^ (r >> 29) ^ 0xD1B54A32D192ED03) * _C1) & _M64
        h = x ^ (x >> 32)
        k, ok = parent["k"], parent["ok"]
        if not parent["loop"] and k >= sp.n_plan:
            return self._answer(sp, parent, r, h)
        para = ((h >> 10) & 0xFF) % self.n_paraphrases
        variant = ((h >> 50) & 0xFF) % self.n_variants
        r_move, r_val = (h >> 18) & 0xFFFF, (h >> 34) & 0xFFFF
        if parent["loop"] or (r & 0xFFFF) * _INV16 < sp.p_loop:
            move, value = HESITATE, r_val % N_VALUES
        elif ((r >> 16) & 0xFFFF) * _INV16 < (self.detour_correct if ok else self.detour_wrong) and (
            k >= 1 or not ok
        ):
            if ok:  # restate the previous plan move (nothing to restate before the first)
                move, value = sp.plan[k - 1], sp.values[k - 1]
            else:
                others = sp.other_moves[k]
                move, value = others[r_move % len(others)], r_val % N_VALUES
        else:
            move, value = sp.plan[k], sp.values[k]
            if ok and ((r >> 32) & 0xFFFF) * _INV16 < sp.p_err:
                errs = sp.err_moves[k]
                move = errs[r_move % len(errs)]
            if not (ok and move == sp.plan[k]):
                value = (value + 1 + r_val % (N_VALUES - 1)) % N_VALUES
        tid = ((move * MAX_PARAPHRASES + para) * N_VALUES + value) * self.n_variants + variant
        tkey = self._text_keys[tid]
        ck, length = self._key_length(parent["key"], tkey, h, self.step_lengths)
        st = decode(sp, parent, move, value, ck)
        return self._texts[tid], tkey, length, _NO_CUT, st

    def _key_length(self, pkey: int, tkey: int, h: int, table: tuple[int, ...]) -> tuple[int, int]:
        """(child key, token count): both from (parent, text), or the length per sample."""
        if self.length_per_text:
            ck = W.mix64(pkey ^ tkey)
            return ck, table[(ck >> 20) & 0x3FF]
        length = table[h & 0x3FF]
        return W.mix64(pkey ^ tkey ^ ((length * _GOLDEN) & _M64)), length

    def _answer(self, sp: ProblemSpec, parent: State, r: int, h: int) -> tuple[str, int, int, int, State]:
        a = parent["wrong"]
        if parent["ok"]:
            a = sp.pick_wrong((r >> 48) * _INV16) if ((r >> 32) & 0xFFFF) * _INV16 < sp.p_err else 0
        _, text, cut, tkey = sp.answers[a][((h >> 10) & 0xFF) % len(ANSWER_PREFIXES)]
        ck, length = self._key_length(parent["key"], tkey, h, self.answer_lengths)
        st = decode_answer(sp, parent, a, ck)
        return text, tkey, length, cut, st
