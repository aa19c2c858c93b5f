"""ets: experiment framework for inference-time tree search (ETS, REBASE, beam, DVTS, ...)."""

import os

# Idle OpenMP threads spin by default; on a busy 2-core machine that made CPU runs 5-12x
# slower. It only takes effect before torch is imported, so it is set where every entry
# point (CLI, tests, benches, library use) passes first; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["__version__"]
