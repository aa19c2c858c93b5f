"""``python -m ets.rerun``: command entry point; the code is in :mod:`ets.rundir.rerun`."""

from ets.rundir.rerun import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
