"""Old import path of the graders, kept for saved run configs: a ``config.yaml`` written
before the regroup names ``dataset.grader._target_: ets.grading.<Grader>``, and
``python -m ets.rerun``, resume, ``ets.report`` and ``ets.merge`` instantiate it as saved (and compare it as the new path:
:data:`ets.rundir.runs.MOVED_MODULES`).
The code is in :mod:`ets.datasets.grading`; import from there."""

from ets.datasets.grading import LetterGrader, MathVerifyGrader, NumericGrader

__all__ = ["LetterGrader", "MathVerifyGrader", "NumericGrader"]
