"""The seeded synthetic world (generative model in :mod:`ets.synthetic.world`)."""

from ets.synthetic.world import calibrate, expected_accuracy

__all__ = ["calibrate", "expected_accuracy"]
