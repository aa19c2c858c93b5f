"""``python -m ets.report``: command entry point; the code is in :mod:`ets.analysis.report`."""

from ets.analysis.report import main

__all__ = ["main"]

if __name__ == "__main__":
    raise SystemExit(main())
