"""Trackers: where run metrics go (the run dir always; W&B optionally)."""
