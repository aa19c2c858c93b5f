"""Expanders: what one step of the tree is (a delimited step, k tokens, or everything)."""
