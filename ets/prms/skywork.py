"""Skywork-o1-Open-PRM-Qwen-2.5 (1.5B and 7B): a value head on a Qwen2.5 backbone.

Format and scoring follow search-and-learn's ``SkyworkO1`` PRM and the Skywork inference
code it vendors (``sal/models/skywork_o1_prm``: ``prepare_input``, ``SkyworkPRMModel``,
``derive_step_rewards``):

* input ids = ``encode(bos_token + question + "\\n")``, then the response (the path's
  steps concatenated as generated) split on the step token ``"\\n"``; every piece is
  encoded on its own and followed by the step token's id (an empty piece, from a blank
  line, contributes the step token alone); a reward flag marks each appended step token;
* the model is the causal LM's backbone plus ``v_head.summary = Linear(hidden, 1)`` on
  the last hidden state; ``return_probs=True`` applies a sigmoid;
* the step rewards are the values at the flagged positions. The response always ends
  with a flagged step token, so the score of the path's last step is the value at the
  last token of the input, which is where :class:`~ets.prms.hf_base.HFPRM` reads.

The checkpoints' ``Qwen2ForPrmModel`` wrapper is trl-style remote code; like
:mod:`ets.prms.qwen_math_prm` we re-implement the head on transformers' ``Qwen2Model``
(weights ``model.*`` and ``v_head.summary.*``, the keys the wrapper's ``state_dict``
saves) and refuse to run with missing weights. Not checked against the hub files
(unreachable here): the key names of the published safetensors.
"""

from __future__ import annotations

import functools
from typing import Any

from ets.core.tree import Node
from ets.prms.hf_base import HFPRM, HFPRMConf, steps_of
from ets.schema import Component, schema
from ets.types import Problem


@functools.cache
def _model_class() -> type:
    """:class:`SkyworkValueModel`, defined on first use: torch and transformers are imported here, not
    at module level (``ets.config.register_configs`` imports this module for its
    schema, and start-up must stay cheap)."""
    import torch
    from transformers.modeling_outputs import TokenClassifierOutput
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel

    class _ValueHead(torch.nn.Module):
        def __init__(self, hidden: int) -> None:
            super().__init__()
            self.summary = torch.nn.Linear(hidden, 1)

        def forward(self, hidden: Any) -> Any:
            # the reference upcasts to the head's dtype before the projection
            return self.summary(hidden.to(self.summary.weight.dtype))


    class SkyworkValueModel(Qwen2PreTrainedModel):
        """``Qwen2Model`` + Skywork's value head (the logit of the step being right)."""

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.model = Qwen2Model(config)
            self.v_head = _ValueHead(config.hidden_size)
            self.post_init()

        def forward(self, input_ids: Any = None, attention_mask: Any = None, position_ids: Any = None,
                    logits_to_keep: Any = 0, **kwargs: Any) -> TokenClassifierOutput:
            kwargs.pop("use_cache", None)
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask,
                                position_ids=position_ids, use_cache=False, **kwargs).last_hidden_state
            keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
            return TokenClassifierOutput(logits=self.v_head(hidden[:, keep, :]))

    return SkyworkValueModel


def __getattr__(name: str) -> Any:
    if name == "SkyworkValueModel":  # the model class, built on first use
        return _model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class SkyworkPRM(HFPRM):
    """Skywork-o1-Open-PRM: sigmoid of the value head at the step token after the last step.

    Args:
        step_token: The step delimiter the response is split on (``"\\n"`` in
            search-and-learn); its last token id is appended after every piece.
        **hf: :class:`~ets.prms.hf_base.HFPRM` arguments.
    """

    def __init__(self, step_token: str = "\n", **hf: Any) -> None:
        super().__init__(**hf)
        if not step_token:
            raise ValueError("prm.step_token must be a non-empty string")
        self.step_token = step_token
        self.step_token_id = -1

    def _setup(self, tokenizer: Any) -> None:
        self.step_token_id = tokenizer.encode(self.step_token)[-1]

    def _load_model(self, where: str, dtype: Any) -> Any:
        model, info = _model_class().from_pretrained(where, dtype=dtype, output_loading_info=True)
        if info["missing_keys"]:
            raise ValueError(f"{where} lacks weights of the Skywork PRM (backbone/value head): "
                             f"{sorted(info['missing_keys'])[:8]}")
        return model

    def _encode(self, problem: Problem, node: Node) -> list[int]:
        tok = self.tokenizer
        ids = list(tok.encode((tok.bos_token or "") + problem.question + "\n"))
        response = "".join(steps_of(node, strip=False))
        for piece in response.split(self.step_token):
            ids += (list(tok.encode(piece)) if piece else []) + [self.step_token_id]
        return ids

    def _reduce(self, outputs: Any) -> Any:
        import torch

        return torch.sigmoid(outputs[:, 0])


@schema("prm", "skywork", SkyworkPRM)
class SkyworkPRMConf(HFPRMConf, Component):
    step_token: str
