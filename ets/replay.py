"""``python -m ets.replay``: command entry point; the code is in :mod:`ets.rundir.replay`."""

import sys

from ets.rundir.replay import main

__all__ = ["main"]

if __name__ == "__main__":  # vLLM may start its engine processes with spawn
    main(sys.argv[1:])
