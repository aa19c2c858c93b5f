"""The synthetic policy: seeded, paired, ~µs per step (model: :mod:`ets.synthetic.world`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from ets.policies import PolicyConf
from ets.schema import num, schema
from ets.synthetic import profiles
from ets.synthetic import world as W
from ets.synthetic.dynamics import Dynamics, ProblemSpec, root_state
from ets.synthetic.moves import MAX_PARAPHRASES
from ets.types import Generation, GenRequest, Problem, Prompt

_FULL_MAX_STEPS = 512  # guard for the "full" expander with an unbounded token budget
_MAX_PROBLEMS = 4096  # problems whose node table is kept (least recently used dropped)
_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{q}\n\n### Response: Let's think step by step.\n"
)

_Key = tuple[int, int, int, int]


class SyntheticPolicy:
    """A seeded Markov "LLM" over the moves of :mod:`ets.synthetic.moves`.

    A child's content depends only on (``seed``, problem id, parent context, child
    index ``j``); ``request.seed`` is ignored so that different algorithms are paired.
    The policy keeps its own table of path states keyed by context token ids (nodes
    and requests carry no simulator state): a request's context is split at the start
    of its last step (every step's first token id is >= ``world.HEAD_MIN``, every
    other id below), and ``(hash(context before it), its offset, first id, length)``
    finds the state this policy recorded when it generated that step.

    Args:
        seed: World randomness of the trajectories (same seed = same children).
        step_delimiter: Ends every non-final step (the step expander's stop string).
        answer_markers: Answer markers the search loop should extract with.
        profile: Calibration profile (:mod:`ets.synthetic.profiles`) giving every
            argument left ``None`` below, plus step lengths and wording variants.
        base_error: Per-step error probability at difficulty 0.
        error_slope: Added per unit difficulty (``p_err = base + slope * d``).
        loop_base: Per-step probability of entering a repetition loop at difficulty 0.
        loop_slope: Added per unit difficulty.
        detour_correct: Per-step probability that a correct path restates its previous move.
        detour_wrong: Same for a wrong path (wrong solutions run longer).
        n_paraphrases: Paraphrases used per move (1-4): fewer = more duplicate texts.
        n_variants: Wordings per step (1-8): fewer = more duplicate texts.
    """

    def __init__(
        self,
        seed: int = 0,
        step_delimiter: str = "\n\n",
        answer_markers: Sequence[str] = ("The answer is",),
        profile: str | None = None,
        base_error: float = 0.10,
        error_slope: float = 0.30,
        loop_base: float | None = None,
        loop_slope: float | None = None,
        detour_correct: float = 0.05,
        detour_wrong: float = 0.25,
        n_paraphrases: int = MAX_PARAPHRASES,
        n_variants: int | None = None,
    ) -> None:
        prof = profiles.get(profile)
        self.profile = prof.name
        self.seed, self.step_delimiter, self.answer_markers = seed, step_delimiter, list(answer_markers)
        self.base_error, self.error_slope = base_error, error_slope
        self.loop_base = prof.loop_base if loop_base is None else loop_base
        self.loop_slope = prof.loop_slope if loop_slope is None else loop_slope
        self.detour_correct, self.detour_wrong = detour_correct, detour_wrong
        self.n_paraphrases = n_paraphrases
        self.n_variants = prof.n_variants if n_variants is None else n_variants
        self._dyn = Dynamics(
            seed, step_delimiter, base_error, error_slope, self.loop_base, self.loop_slope,
            detour_correct, detour_wrong, n_paraphrases, self.n_variants, prof.length_per_text,
            W.length_table(prof.step_log_mu, prof.step_log_sigma),
            W.length_table(prof.answer_log_mu, prof.answer_log_sigma),
        )  # fmt: skip
        self._specs: dict[str, ProblemSpec] = {}
        self._table: OrderedDict[str, dict[_Key, dict[str, Any]]] = OrderedDict()

    def format_prompt(self, problem: Problem) -> Prompt:
        n = int(problem.meta.get("prompt_tokens", 64))
        return Prompt(_TEMPLATE.format(q=problem.question), W.token_ids(W.str_key(problem.id, 1), n))

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        out = []
        for req in requests:
            sp = self._spec(req.problem)
            ctx = tuple(req.context_ids)
            parent = self.state_of(req.problem, ctx)
            one = self._one_step if req.stop else self._full
            # The world has no temperature: a greedy request (temperature 0) gets the
            # parent's first draw for every child (one deterministic continuation).
            gens = [one(sp, parent, 0 if req.temperature == 0 else j, req.max_tokens) for j in range(req.n)]
            self._remember(req.problem.id, ctx, gens)
            out.append([g for g, _ in gens])
        return out

    def state_of(self, problem: Problem, context_ids: Sequence[int]) -> dict[str, Any]:
        """The simulator state of the path whose context (prompt + steps) is ``context_ids``.

        Raises:
            KeyError: The context's last step was not generated by this policy.
        """
        ctx = tuple(context_ids)
        n_prompt = int(problem.meta.get("prompt_tokens", 64))
        i = len(ctx) - 1
        while i >= n_prompt and ctx[i] < W.HEAD_MIN:
            i -= 1
        if i < n_prompt:
            return root_state(self._spec(problem))
        table = self._table.get(problem.id, {})
        key = (hash(ctx[:i]), i, ctx[i], len(ctx) - i)
        if key not in table:
            raise KeyError(
                f"problem {problem.id!r}: the context's last step was not generated by this "
                "SyntheticPolicy (same seed and profile required)"
            )
        self._table.move_to_end(problem.id)
        return table[key]

    def _remember(self, pid: str, ctx: tuple[int, ...], gens: list[tuple[Generation, dict[str, Any]]]) -> None:
        table = self._table.get(pid)
        if table is None:
            table = self._table[pid] = {}
            if len(self._table) > _MAX_PROBLEMS:
                self._table.popitem(last=False)
        h = None
        for g, st in gens:
            ids = g.token_ids
            t = len(ids) - 1
            while t >= 0 and ids[t] < W.HEAD_MIN:
                t -= 1
            if t < 0:
                continue  # nothing written: the context (and its state) is the parent's
            if t == 0:
                h = hash(ctx) if h is None else h
                table[(h, len(ctx), ids[0], len(ids))] = st
            else:  # several steps in one generation (the full expander)
                table[(hash(ctx + ids[:t]), len(ctx) + t, ids[t], len(ids) - t)] = st

    def _spec(self, problem: Problem) -> ProblemSpec:
        sp = self._specs.get(problem.id)
        if sp is None or sp.meta is not problem.meta:
            sp = self._specs[problem.id] = ProblemSpec(problem, self._dyn)
        return sp

    def _one_step(
        self, sp: ProblemSpec, parent: dict[str, Any], j: int, max_tokens: int
    ) -> tuple[Generation, dict[str, Any]]:
        text, tkey, length, cut, st = self._dyn.draw(sp, parent, j)
        if length > max_tokens:
            return self._truncated(text, length, cut, parent, max_tokens)
        st["tokens"] = parent["tokens"] + length
        return Generation(text, W.token_ids(tkey, length), -0.3 * length, "eos" if st["done"] else "stop"), st

    def _truncated(
        self, text: str, length: int, cut: int, before: dict[str, Any], max_tokens: int
    ) -> tuple[Generation, dict[str, Any]]:
        """The first ``max_tokens`` tokens of a ``length``-token step drawn from ``before``.

        A cut step decides nothing: the path keeps the correctness and progress it had
        before it (what the PRM, which reads whole steps only, sees too); a cut answer
        step loses its answer. Only its key is new, so what follows is a fresh draw.

        A cut generation is one step by its text, as a tokenizer would make it: its
        token ids and its key depend only on (the cut text, its token count) and on
        the parent's key, not on which full step was cut. Two different sibling steps
        cut to the same text are the same step (same ids, same state, same PRM score,
        same continuations), as issue #8 §3 asks of identical sibling texts. So the
        ids of a cut step are not the first ``max_tokens`` ids of its full step.
        """
        keep = max(0, max_tokens)
        # never the whole sentence (a reader would take it for the finished step)
        text = text[: min(cut, len(text) * keep // length, len(text.rstrip()) - 1)]
        ckey = W.str_key(text, keep)
        out = dict(before, key=W.mix64((before["key"] + ckey) & W.M64), depth=before["depth"] + 1,
                   tokens=before["tokens"] + keep)
        return Generation(text, W.token_ids(ckey, keep), -0.3 * keep, "length"), out

    def _full(
        self, sp: ProblemSpec, parent: dict[str, Any], j: int, max_tokens: int
    ) -> tuple[Generation, dict[str, Any]]:
        """Whole remainder of the trajectory (stop list empty): child j of child j of ... concatenated.

        One sample keeps its own stream ``j`` all the way: samples whose first steps are
        the same text still go on independently (with ``0, 0, ...`` they would merge).
        """
        texts: list[str] = []
        ids: list[int] = []
        st, used = parent, 0
        for _ in range(_FULL_MAX_STEPS):
            before = st
            text, tkey, length, cut, st = self._dyn.draw(sp, before, j)
            if used + length > max_tokens:
                g, st = self._truncated(text, length, cut, before, max_tokens - used)
                return Generation(
                    "".join(texts) + g.text,
                    tuple(ids) + g.token_ids,
                    -0.3 * (used + len(g.token_ids)),
                    "length",
                ), st
            used += length
            st["tokens"] = parent["tokens"] + used
            texts.append(text)
            ids.extend(W.token_ids(tkey, length))
            if st["done"]:
                return Generation("".join(texts), tuple(ids), -0.3 * used, "eos"), st
        return Generation("".join(texts), tuple(ids), -0.3 * used, "length"), st


@schema("policy", "synthetic", SyntheticPolicy)
class SyntheticPolicyConf(PolicyConf):
    seed: int
    profile: str | None  # ets.synthetic.profiles; None values below come from it
    base_error: float = num(ge=0, le=1)
    error_slope: float = num(ge=0)
    loop_base: float | None = num(ge=0, le=1)
    loop_slope: float | None = num(ge=0)
    detour_correct: float = num(ge=0, le=1)
    detour_wrong: float = num(ge=0, le=1)
    n_paraphrases: int = num(ge=1)
    n_variants: int | None = num(ge=1)
