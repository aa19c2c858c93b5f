"""The synthetic policy: seeded, paired, ~µs per step (model: :mod:`ets.synthetic.world`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ets.synthetic import world as W
from ets.synthetic.dynamics import Dynamics, ProblemSpec
from ets.synthetic.moves import MAX_PARAPHRASES
from ets.types import Generation, GenRequest, Problem, Prompt

_FULL_MAX_STEPS = 512  # guard for the "full" expander with an unbounded token budget
_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{q}\n\n### Response: Let's think step by step.\n"
)


class SyntheticPolicy:
    """A seeded Markov "LLM" over the moves of :mod:`ets.synthetic.moves`.

    A child's content depends only on (``seed``, problem id, parent state, child
    index ``j``); ``request.seed`` is ignored so that different algorithms are paired.

    Args:
        seed: World randomness of the trajectories (same seed = same children).
        step_delimiter: Ends every non-final step (the step expander's stop string).
        answer_markers: Answer markers the search loop should extract with.
        base_error: Per-step error probability at difficulty 0.
        error_slope: Added per unit difficulty (``p_err = base + slope * d``).
        loop_base: Per-step probability of entering a repetition loop at difficulty 0.
        loop_slope: Added per unit difficulty.
        detour_correct: Per-step probability that a correct path restates its move.
        detour_wrong: Same for a wrong path (wrong solutions run longer).
        n_paraphrases: Paraphrases used per move (1-4): fewer = more duplicate texts.
    """

    def __init__(
        self,
        seed: int = 0,
        step_delimiter: str = "\n\n",
        answer_markers: Sequence[str] = ("The answer is",),
        base_error: float = 0.10,
        error_slope: float = 0.30,
        loop_base: float = 0.005,
        loop_slope: float = 0.015,
        detour_correct: float = 0.05,
        detour_wrong: float = 0.25,
        n_paraphrases: int = MAX_PARAPHRASES,
    ) -> None:
        self.seed, self.step_delimiter, self.answer_markers = seed, step_delimiter, list(answer_markers)
        self.base_error, self.error_slope = base_error, error_slope
        self.loop_base, self.loop_slope = loop_base, loop_slope
        self.detour_correct, self.detour_wrong = detour_correct, detour_wrong
        self.n_paraphrases = n_paraphrases
        self._dyn = Dynamics(
            seed, step_delimiter, base_error, error_slope, loop_base, loop_slope,
            detour_correct, detour_wrong, n_paraphrases,
        )  # fmt: skip
        self._specs: dict[str, ProblemSpec] = {}

    def format_prompt(self, problem: Problem) -> Prompt:
        n = int(problem.meta.get("prompt_tokens", 64))
        return Prompt(_TEMPLATE.format(q=problem.question), W.token_ids(W.str_key(problem.id, 1), n))

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        out = []
        for req in requests:
            sp = self._spec(req.problem)
            parent = req.state or self._dyn.root_state(sp)
            one = self._one_step if req.stop else self._full
            out.append([one(sp, parent, j, req.max_tokens) for j in range(req.n)])
        return out

    def _spec(self, problem: Problem) -> ProblemSpec:
        sp = self._specs.get(problem.id)
        if sp is None or sp.meta is not problem.meta:
            sp = self._specs[problem.id] = ProblemSpec(problem, self._dyn)
        return sp

    def _one_step(self, sp: ProblemSpec, parent: dict[str, Any], j: int, max_tokens: int) -> Generation:
        text, tkey, length, cut, st = self._dyn.draw(sp, parent, j)
        if length > max_tokens:
            return self._truncated(text, tkey, length, cut, st, max_tokens)
        st["tokens"] = parent["tokens"] + length
        return Generation(text, W.token_ids(tkey, length), -0.3 * length, "eos" if st["done"] else "stop", st)

    def _truncated(
        self, text: str, tkey: int, length: int, cut: int, st: dict[str, Any], max_tokens: int
    ) -> Generation:
        """The first ``max_tokens`` tokens of a step; a cut answer step loses its answer."""
        keep = max(0, max_tokens)
        st["tokens"] += keep
        if st["done"]:
            st["done"], st["k"] = False, st["k"] - 1
            st.pop("answer", None)
        text = text[: min(cut, len(text) * keep // length)]
        return Generation(text, W.token_ids(tkey, length)[:keep], -0.3 * keep, "length", st)

    def _full(self, sp: ProblemSpec, parent: dict[str, Any], j: int, max_tokens: int) -> Generation:
        """Whole remainder of the trajectory (stop list empty): steps j, 0, 0, ... concatenated."""
        texts: list[str] = []
        ids: list[int] = []
        st, used = parent, 0
        for i in range(_FULL_MAX_STEPS):
            text, tkey, length, cut, st = self._dyn.draw(sp, st, j if i == 0 else 0)
            if used + length > max_tokens:
                st["tokens"] = parent["tokens"] + used
                g = self._truncated(text, tkey, length, cut, st, max_tokens - used)
                return Generation(
                    "".join(texts) + g.text,
                    tuple(ids) + g.token_ids,
                    -0.3 * (used + len(g.token_ids)),
                    "length",
                    g.state,
                )
            used += length
            st["tokens"] = parent["tokens"] + used
            texts.append(text)
            ids.extend(W.token_ids(tkey, length))
            if st["done"]:
                return Generation("".join(texts), tuple(ids), -0.3 * used, "eos", st)
        return Generation("".join(texts), tuple(ids), -0.3 * used, "length", st)
