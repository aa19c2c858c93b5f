"""Policies: the LLMs (or the synthetic world) that write reasoning steps."""
