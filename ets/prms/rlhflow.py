"""RLHFlow PRM (``RLHFlow/Llama3.1-8B-PRM-Deepseek-Data``): P("+") vs "-" after the last step.

Format and scoring follow the reference (RLHFlow/RLHF-Reward-Modeling ``math-rm``
``prm_evaluate.py``, also used by search-and-learn): a conversation where the first user
turn is ``question + " " + step_1``, each later step is its own user turn, and every user
turn is answered by the assistant with ``"+"``; rendered with the tokenizer's chat
template. The score of step k is ``softmax(logits[[+, -]])[0]`` at the token that
*predicts* the k-th assistant answer. The reference hard-codes that position as ``-3``
(Llama 3.1: ``... \\n\\n`` ``+`` ``<|eot_id|>``); we locate the last ``+`` and read the
token before it, which is the same position with Llama 3.1's template and stays right
for templates that end turns differently.
"""

from __future__ import annotations

from typing import Any

from ets.core.tree import Node
from ets.prms.hf_base import HFPRM, HFPRMConf, last_index, pair_probability, steps_of, token_id
from ets.schema import Component, schema
from ets.types import Problem


class RLHFlowPRM(HFPRM):
    """Multi-turn chat PRM: each step a user turn, judged by the assistant's next token.

    Args:
        good_token: Assistant answer for a correct step (one token); also written as
            the answer to every earlier step, as in training.
        bad_token: Answer for a wrong step (one token).
        question_join: Between the question and the first step in the first user turn.
        **hf: :class:`~ets.prms.hf_base.HFPRM` arguments.
    """

    def __init__(
        self, good_token: str = "+", bad_token: str = "-", question_join: str = " ", **hf: Any
    ) -> None:
        super().__init__(**hf)
        self.good_token, self.bad_token, self.question_join = good_token, bad_token, question_join
        self.good_id = self.bad_id = -1

    def _setup(self, tokenizer: Any) -> None:
        self.good_id = token_id(tokenizer, self.good_token, "good_token")
        self.bad_id = token_id(tokenizer, self.bad_token, "bad_token")

    def render(self, problem: Problem, node: Node) -> str:
        steps = steps_of(node)
        steps[0] = problem.question + self.question_join + steps[0]
        messages: list[dict[str, str]] = []
        for step in steps:
            messages += [{"role": "user", "content": step}, {"role": "assistant", "content": self.good_token}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def _encode(self, problem: Problem, node: Node) -> list[int]:
        ids = self._tokens(self.render(problem, node))
        answer = last_index(ids, self.good_id, f"assistant answer {self.good_token!r}")
        if answer == 0:
            raise ValueError("the assistant answer is the first token: nothing predicts it")
        return ids[:answer]

    def _reduce(self, outputs: Any) -> Any:
        return pair_probability(outputs, [self.good_id], [self.bad_id])


@schema("prm", "rlhflow", RLHFlowPRM)
class RLHFlowPRMConf(HFPRMConf, Component):
    good_token: str
    bad_token: str
    question_join: str
