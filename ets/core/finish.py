"""Finish classification and answer extraction for new children (ALGORITHMS.md §1).

The loop does not read policy attributes: :func:`from_policy` reads the policy's
``answer_markers`` and ``step_delimiter`` once and builds the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

from ets.core.answers import extract_answer
from ets.core.tree import Node, Tree

DEFAULT_MARKERS = ("boxed", "The answer is")


class AnswerFinisher:
    """Marks a child finished with reason ``answer``, ``eos``, ``length`` or ``depth``.

    Order of the rules (the first that applies wins): an answer in the parent's and
    the child's text (a marker split over two steps still counts); at EOS, an answer
    anywhere in the trajectory (the EOS fallback); EOS without an answer; the token
    cap; the depth cap.

    Args:
        markers: Answer markers in :data:`ets.core.answers.MARKERS`, in priority order.
        step_tag: A step tag used as delimiter (e.g. ``"ки"``); it is replaced by a
            newline before extraction so it does not stick to the answer ("18 ки").
        max_tokens: Per-trajectory generated-token cap.
        max_depth: Depth cap.
    """

    def __init__(self, markers: Sequence[str], step_tag: str, max_tokens: int, max_depth: int) -> None:
        self.markers, self.step_tag = list(markers), step_tag
        self.max_tokens, self.max_depth = max_tokens, max_depth

    def extract(self, text: str) -> str | None:
        if self.step_tag:
            text = text.replace(self.step_tag, "\n")
        return extract_answer(text, self.markers)

    def classify(self, tree: Tree, child: Node, finish_reason: str) -> None:
        parent_text = child.parent.text if child.parent is not None and child.depth > 1 else ""
        answer = self.extract(parent_text + child.text)
        if answer is None and finish_reason == "eos":
            answer = self.extract(tree.context(child)[0][len(tree.root.text):])
        if answer is not None:
            child.finished, child.finish_reason, child.answer = True, "answer", answer
        elif finish_reason == "eos":
            child.finished, child.finish_reason = True, "eos"
        elif finish_reason == "context":  # the model's context is full: nothing more fits
            child.finished, child.finish_reason = True, "context"
        elif child.cum_tokens >= self.max_tokens:
            child.finished, child.finish_reason = True, "length"
        elif child.depth >= self.max_depth:
            child.finished, child.finish_reason = True, "depth"


def from_policy(policy: object, max_tokens: int, max_depth: int) -> AnswerFinisher:
    """The classifier configured with the policy's markers and step tag.

    A whitespace delimiter ("\\n\\n") is not a tag; a visible one ("ки") is.
    """
    markers = list(getattr(policy, "answer_markers", DEFAULT_MARKERS))
    delim = getattr(policy, "step_delimiter", "")
    return AnswerFinisher(markers, delim if delim and delim.strip() else "", max_tokens, max_depth)
