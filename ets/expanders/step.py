"""A step ends at the policy's step delimiter (e.g. ``"\\n\\n"`` or a PRM step tag)."""

from __future__ import annotations

from ets.schema import Component, num, schema


class StepExpander:
    """Stop each expansion at ``delimiter``, at most ``max_step_tokens`` tokens.

    Args:
        delimiter: Stop string (interpolated from ``policy.step_delimiter`` by default).
        max_step_tokens: Token cap per step (256 in the paper).
    """

    def __init__(self, delimiter: str = "\n\n", max_step_tokens: int = 256) -> None:
        if not delimiter:
            raise ValueError("expander.delimiter must be a non-empty string")
        self.delimiter = delimiter
        self.max_step_tokens = max_step_tokens

    def step_limits(self, remaining_tokens: int) -> tuple[list[str], int]:
        return [self.delimiter], min(self.max_step_tokens, remaining_tokens)


@schema("expander", "step", StepExpander)
class StepExpanderConf(Component):
    delimiter: str
    max_step_tokens: int = num(ge=1)
