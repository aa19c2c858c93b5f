"""ets: experiment framework for inference-time tree search (ETS, REBASE, beam, DVTS, ...)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
