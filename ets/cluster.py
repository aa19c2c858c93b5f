"""Old import path of the ETS embedder, kept for saved run configs: a ``config.yaml``
written before the regroup names ``selector.embedder._target_: ets.cluster.SentenceEmbedder``,
and ``python -m ets.rerun`` and resume instantiate it as saved (and compare it as the new path:
:data:`ets.rundir.runs.MOVED_MODULES`).
The code is in :mod:`ets.selectors.cluster`; import from there."""

from ets.selectors.cluster import SentenceEmbedder

__all__ = ["SentenceEmbedder"]
