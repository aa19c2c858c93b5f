"""PRMs that read a causal LM at a step tag written after every step (Math-Shepherd, Llemma).

The input is ``prompt_template.format(question=...)`` followed by each step (stripped)
plus ``step_tag``, joined by ``step_join``; the score is read at the last tag. A step that
already ends with the tag (policies trained on this format stop at ``ки``) is not tagged
twice. The tag position is found from character offsets, so it does not depend on how a
tokenizer spells the tag (``▁ки``, ``<0x0A><0x0A>``, ``ĊĊ``): ``score_at: first`` takes the token
that holds the tag's first character, ``last`` the tag's last token.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

from ets.core.tree import Node
from ets.prms.hf_base import HFPRM, HFPRMConf, as_str, steps_of
from ets.types import Problem


def tagged_steps(steps: Sequence[str], tag: str, join: str) -> tuple[str, int]:
    """``steps[0] + tag + join + steps[1] + tag + ...`` and the offset of the last tag in it."""
    text = join.join(step + tag for step in steps)
    return text, len(text) - len(tag)


class TaggedPRM(HFPRM):
    """Base of the step-tag PRMs.

    Args:
        prompt_template: Text before the first step, with a ``{question}`` field.
        step_tag: Appended to every (stripped) step.
        step_join: Between one tagged step and the next.
        score_at: ``first`` or ``last`` token of the final tag.
        **hf: :class:`~ets.prms.hf_base.HFPRM` arguments (model, tokenizer, device, ...).
    """

    def __init__(
        self, prompt_template: str, step_tag: str, step_join: str = "", score_at: str = "last", **hf: Any
    ) -> None:
        super().__init__(**hf)
        if not step_tag:
            raise ValueError("step_tag must not be empty")
        self.score_at = as_str(score_at)
        if self.score_at not in ("first", "last"):
            raise ValueError(f"score_at must be 'first' or 'last', got {score_at!r}")
        self.prompt_template, self.step_tag, self.step_join = prompt_template, step_tag, step_join

    def render(self, problem: Problem, node: Node) -> tuple[str, int]:
        """The PRM input text and the character offset of its last step tag."""
        prefix = self.prompt_template.format(question=problem.question)
        core = self.step_tag.strip()  # a policy that ends steps with the tag itself ("... ки")
        steps = [s.removesuffix(core).rstrip() if core else s for s in steps_of(node)]
        steps, tag_at = tagged_steps(steps, self.step_tag, self.step_join)
        return prefix + steps, len(prefix) + tag_at

    def _encode(self, problem: Problem, node: Node) -> list[int]:
        text, tag_at = self.render(problem, node)
        return self._tokens_to_char(text, tag_at, first=self.score_at == "first")


class TagPosition(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    first = "first"
    last = "last"


class TaggedPRMConf(HFPRMConf):
    """Keys of the step-tag PRMs (:class:`TaggedPRM`)."""

    prompt_template: str = "{question}"  # __init__ requires it; the config has a default
    step_tag: str
    step_join: str
    score_at: TagPosition
