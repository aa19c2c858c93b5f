"""Policies: the LLMs (or the synthetic world) that write reasoning steps."""

from ets.schema import Component


class PolicyConf(Component):
    """Keys of every policy; each policy's schema extends this."""

    step_delimiter: str  # a step ends here (the stop string)
    answer_markers: list[str]  # texts that introduce the final answer
