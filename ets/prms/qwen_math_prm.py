"""Qwen2.5-Math-PRM (``Qwen/Qwen2.5-Math-PRM-7B``): positive-class probability at ``<extra_0>``.

Format and scoring follow the model card (``make_step_rewards``): chat messages
``system`` (the card's system prompt), ``user`` (the question) and ``assistant`` =
``"<extra_0>".join(steps) + "<extra_0>"``, rendered by the tokenizer's chat template
without a generation prompt and tokenized as is (Qwen adds no BOS); the model emits
2-class logits per token; the score of a step is ``softmax(logits)[1]`` at its
``<extra_0>``.

The hub checkpoint's ``Qwen2ForProcessRewardModel`` is remote code (``trust_remote_code``).
We do not run it: :class:`Qwen2ProcessRewardModel` re-implements its (small) head on the
standard transformers ``Qwen2Model`` — ``score = Sequential(Linear(h, h), ReLU,
Linear(h, 2))`` on the final hidden states, weights ``score.0.*`` / ``score.2.*`` (the
layout vLLM's ``qwen2_rm.py`` loads from the same checkpoint) — and refuses to run with
missing weights instead of silently initialising them.
"""

from __future__ import annotations

import functools
from typing import Any

from ets.core.tree import Node
from ets.prms.hf_base import HFPRM, HFPRMConf, last_index, steps_of, token_id
from ets.schema import MISSING, Component, schema
from ets.types import Problem

NUM_LABELS = 2


@functools.cache
def _model_class() -> type:
    """:class:`Qwen2ProcessRewardModel`, defined on first use: torch and transformers are imported here, not
    at module level (``ets.config.register_configs`` imports this module for its
    schema, and start-up must stay cheap)."""
    import torch
    from transformers.modeling_outputs import TokenClassifierOutput
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

    class Qwen2ProcessRewardModel(Qwen2PreTrainedModel):
        """``Qwen2Model`` + the 2-class MLP head of Qwen2.5-Math-PRM (no remote code)."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            h = config.hidden_size
            self.score = torch.nn.Sequential(
                torch.nn.Linear(h, h), torch.nn.ReLU(), torch.nn.Linear(h, NUM_LABELS)
            )
            self.post_init()

        def forward(
            self,
            input_ids: Any = None,
            attention_mask: Any = None,
            position_ids: Any = None,
            logits_to_keep: Any = 0,
            **kwargs: Any,
        ) -> TokenClassifierOutput:
            kwargs.pop("use_cache", None)
            hidden = self.model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                **kwargs,
            ).last_hidden_state
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            return TokenClassifierOutput(logits=self.score(hidden[:, keep, :]))

    return Qwen2ProcessRewardModel


def __getattr__(name: str) -> Any:
    if name == "Qwen2ProcessRewardModel":  # the model class, built on first use
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class QwenMathPRM(HFPRM):
    """Chat-format PRM with a 2-class head read at the step separator.

    Args:
        system_prompt: System message of the PRM's chat format.
        step_separator: Token written after every step (one token, e.g. ``<extra_0>``).
        **hf: :class:`~ets.prms.hf_base.HFPRM` arguments.
    """

    def __init__(self, system_prompt: str, step_separator: str = "<extra_0>", **hf: Any) -> None:
        super().__init__(**hf)
        self.system_prompt, self.step_separator = system_prompt, step_separator
        self.separator_id = -1

    def _setup(self, tokenizer: Any) -> None:
        self.separator_id = token_id(tokenizer, self.step_separator, "step_separator")

    def _load_model(self, where: str, dtype: Any) -> Any:
        model, info = _model_class().from_pretrained(where, dtype=dtype, output_loading_info=True)
        if info["missing_keys"]:
            raise ValueError(
                f"{where} lacks weights of the PRM head/backbone: {sorted(info['missing_keys'])[:8]}"
            )
        return model

    def render(self, problem: Problem, node: Node) -> str:
        sep = self.step_separator
        messages = [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": problem.question},
            {"role": "assistant", "content": sep.join(steps_of(node)) + sep},
        ]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def _encode(self, problem: Problem, node: Node) -> list[int]:
        ids = self._tokens(self.render(problem, node))
        return ids[: last_index(ids, self.separator_id, f"step separator {self.step_separator!r}") + 1]

    def _reduce(self, outputs: Any) -> Any:
        return outputs.softmax(-1)[:, 1]


@schema("prm", "qwen_math_prm", QwenMathPRM)
class QwenMathPRMConf(HFPRMConf, Component):
    system_prompt: str = ""  # __init__ requires it; the config's default is no system prompt
    step_separator: str = MISSING  # the config must name it (__init__ defaults to "<extra_0>")
