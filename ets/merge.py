"""``python -m ets.merge``: command entry point; the code is in :mod:`ets.rundir.merge`."""

import sys

from ets.rundir.merge import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
