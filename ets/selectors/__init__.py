"""Selectors: map scored candidates to a number of children each (one file per method)."""
