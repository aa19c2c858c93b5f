"""Analysis and plots over finished runs (they read run dirs; nothing here runs a search).

- :mod:`ets.analysis.report`: ``python -m ets.report``, tables and plots over runs and sweeps.
- :mod:`ets.analysis.budget`: budget curves (accuracy at N finished trajectories) subsampled
  from one run's stored trees.
- :mod:`ets.analysis.compute`: policy and PRM forward FLOPs from the dumped trees.
- :mod:`ets.analysis.plots`: the report's PNG plots and the Pareto front.
- :mod:`ets.analysis.treeview`: self-contained HTML tree viewers (``python -m ets.report RUN --trees``).
- :mod:`ets.analysis.cluster_calibration`: ``python -m ets.cluster_calibration``, the
  calibration of the ETS embedder's distance cut from labelled step pairs.
"""
