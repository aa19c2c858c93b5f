"""A step every ``tokens`` tokens, for models without step structure."""

from __future__ import annotations

from ets.schema import Component, num, schema


class FixedTokensExpander:
    """No stop string; each expansion generates ``tokens`` tokens (or until EOS)."""

    def __init__(self, tokens: int = 64) -> None:
        self.tokens = tokens

    def step_limits(self, remaining_tokens: int) -> tuple[list[str], int]:
        return [], min(self.tokens, remaining_tokens)


@schema("expander", "fixed_tokens", FixedTokensExpander)
class FixedTokensExpanderConf(Component):
    tokens: int = num(ge=1)
