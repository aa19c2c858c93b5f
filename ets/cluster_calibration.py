"""``python -m ets.cluster_calibration``: command entry point; the code is in
:mod:`ets.analysis.cluster_calibration`."""

from ets.analysis.cluster_calibration import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
