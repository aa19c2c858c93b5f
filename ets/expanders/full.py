"""The whole trajectory in one step (best-of-N, First Finish Search)."""

from __future__ import annotations

from ets.schema import Component, schema


class FullExpander:
    """No stop string; one expansion runs to EOS or the trajectory token cap."""

    def step_limits(self, remaining_tokens: int) -> tuple[list[str], int]:
        return [], remaining_tokens


@schema("expander", "full", FullExpander)
class FullExpanderConf(Component):
    pass
