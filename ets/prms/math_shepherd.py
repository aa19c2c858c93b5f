"""Math-Shepherd PRM (``peiyi9979/math-shepherd-mistral-7b-prm``): P("+") vs "-" at the step tag.

Format and scoring follow the model card (checked against it and the search-and-learn /
ETS code): input ``f"{question} {output}"`` where every step ends with ``" ки"`` and steps
are separated by ``"\\n"``; at the tag the LM predicts ``+`` (good) or ``-`` (bad);
score = softmax over the logits of those two tokens, probability of ``+``. The card takes
the ids from ``tokenizer.encode("+ -")[1:]`` (Mistral's ``▁+``/``▁-``, ids 648/387), which
is what encoding ``"+"`` and ``"-"`` one by one gives with that tokenizer.
"""

from __future__ import annotations

from typing import Any

from ets.prms.hf_base import pair_probability, token_id
from ets.prms.tagged import TaggedPRM, TaggedPRMConf
from ets.schema import Component, schema


class MathShepherdPRM(TaggedPRM):
    """Step-tag PRM scored as P(good token) against the bad token.

    Args:
        good_token: Token string for a correct step (one token).
        bad_token: Token string for a wrong step (one token).
        **tagged: :class:`~ets.prms.tagged.TaggedPRM` arguments.
    """

    def __init__(self, good_token: str = "+", bad_token: str = "-", **tagged: Any) -> None:
        super().__init__(**tagged)
        self.good_token, self.bad_token = good_token, bad_token
        self.good_id = self.bad_id = -1

    def _setup(self, tokenizer: Any) -> None:
        self.good_id = token_id(tokenizer, self.good_token, "good_token")
        self.bad_id = token_id(tokenizer, self.bad_token, "bad_token")

    def _reduce(self, outputs: Any) -> Any:
        return pair_probability(outputs, [self.good_id], [self.bad_id])


@schema("prm", "math_shepherd", MathShepherdPRM)
class MathShepherdPRMConf(TaggedPRMConf, Component):
    good_token: str
    bad_token: str
