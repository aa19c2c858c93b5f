"""The Llemma PRM of Easy-to-Hard / REBASE / ETS: sigmoid of the mean logit at the step tag.

Checked against the reference code (Edward-Sun/easy-to-hard ``inference_reward.py`` and
``data_utils/data_utils_rm_pointwise.py`` ``extract_prm_v4_dataset``; the transformers
ports of ``ScalableMath/llemma-7b-prm-prm800k-level-1to3-hf`` in PRMBench's
``Llemma7bPRM`` and the ``prm_interface`` Llemma7bPRM):

- input ``"# Question\\n\\n{question}\\n\\n# Solution\\n\\n"`` then every step stripped and
  followed by ``"\\n\\n"`` (the step tag), with BOS;
- the score of a step is read at the FIRST of the two newline tokens of its ``"\\n\\n"``
  (Llama ids ``13, 13``; easy-to-hard takes ``scores[pos - 2]``, the ports take the start
  of the ``[13, 13]`` match);
- the checkpoint is a reward model exported as ``LlamaForCausalLM``; the ports score
  ``sigmoid(logits.mean(dim=-1))`` at that position — the mean over the whole vocabulary
  of the LM-head logits — which we reproduce exactly.

REBASE/ETS serve a Llemma PRM through a patched sglang that reads the logits at token id
8094 (``logits_require_id=8094`` in ETS ``rebase.py``); that patched logits processor is
not published with the code we could check, so the "ки" variant is a YAML override
(``step_tag``, ``prompt_template``) rather than a separate class.
"""

from __future__ import annotations

from typing import Any

from ets.prms.tagged import TaggedPRM, TaggedPRMConf
from ets.schema import Component, schema


class LlemmaPRM(TaggedPRM):
    """Step-tag PRM scored as ``sigmoid(mean over the vocabulary of the logits)``."""

    def _reduce(self, outputs: Any) -> Any:
        import torch

        return torch.sigmoid(outputs.mean(-1))


@schema("prm", "llemma", LlemmaPRM)
class LlemmaPRMConf(TaggedPRMConf, Component):
    pass
