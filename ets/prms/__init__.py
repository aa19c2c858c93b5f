"""Process reward models: a score for the last step of each path."""

from ets.schema import Component, schema


@schema("prm", "base")
class PRMConf(Component):
    """Any PRM whose constructor takes no settings (the YAML sets ``_target_`` only)."""
