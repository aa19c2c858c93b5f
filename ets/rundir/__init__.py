"""The run and its directory: composing and executing a run, and every operation on run dirs.

- :mod:`ets.rundir.run`: compose → instantiate → search → write (``python -m ets``).
- :mod:`ets.rundir.integrity`: the run-dir lock, resume checks, per-attempt counters (``run.json``).
- :mod:`ets.rundir.results`: ``problems.jsonl`` / ``summary.json`` / ``run.json``, read and written atomically.
- :mod:`ets.rundir.runs`: finding and loading run dirs (for reports and merges).
- :mod:`ets.rundir.preflight`: start-up checks of a run against the model.
- :mod:`ets.rundir.signals`: Ctrl-C and SIGTERM stop a run cleanly.
- :mod:`ets.rundir.merge`: ``python -m ets.merge``, the shard runs of one experiment merged.
- :mod:`ets.rundir.rerun`: ``python -m ets.rerun``, a saved run re-executed and compared.
- :mod:`ets.rundir.replay`: ``python -m ets.replay``, a run's workload re-sent as one plain batch.
"""
