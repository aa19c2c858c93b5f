"""Ctrl-C and SIGTERM: stop a run cleanly (records kept, tracker finished as failed).

``scancel`` and ``timeout`` send SIGTERM, a terminal sends SIGINT. Both are turned into
:class:`Interrupted` in the main thread, which unwinds through :func:`ets.rundir.run.run`'s
``finally`` (the tracker is finished with a failed exit code, components are closed);
the entry point then prints one line saying how to resume and exits 128 + signal.

Records already written stay: each is appended whole (``ets.rundir.results``). CP-SAT would
otherwise take SIGINT over during a solve and leave it at the default action
(``catch_sigint_signal``, switched off in :mod:`ets.selectors.ets_ilp`).
"""

from __future__ import annotations

import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):  # noqa: N818 - a KeyboardInterrupt: `except Exception` lets it through
    """The run was stopped by a signal (``signum``)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


_armed = False  # inside stop_on_signals()
_pending: int | None = None  # the signal received, until the run has stopped


def _raise(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = signum
    raise Interrupted(signum)


def checkpoint() -> None:
    """Called after start-up and at every depth and record: raise :class:`Interrupted` if
    a signal came but its exception was lost (a handler runs between any two bytecodes,
    also inside a ``__del__`` or a GC callback, where Python prints "Exception ignored"
    and goes on; seen once in CI: a SIGTERM that a run outlived by 40 s), and put the
    handlers back if a library replaced them during the run."""
    if not _armed or threading.current_thread() is not threading.main_thread():
        return
    if _pending is not None:
        raise Interrupted(_pending)
    for s in STOP_SIGNALS:
        if signal.getsignal(s) is not _raise:
            signal.signal(s, _raise)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise :class:`Interrupted` (previous handlers
    are restored afterwards). Outside the main thread (where handlers cannot be set) it
    does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _armed, _pending
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    _armed, _pending = True, None
    try:
        yield
    finally:
        _armed, _pending = False, None
        for s, handler in previous.items():
            signal.signal(s, handler)


def resume_hint(exc: KeyboardInterrupt, run_dir: Path, argv: list[str] | None = None) -> str:
    """The one line printed when a run is stopped: what stopped it, what is kept, how to resume."""
    name = exc.name if isinstance(exc, Interrupted) else "SIGINT"
    path = Path(run_dir) / "problems.jsonl"
    done = sum(1 for line in path.read_bytes().splitlines() if line.strip()) if path.exists() else 0
    command = " ".join(shlex.quote(a) for a in ["python", "-m", "ets", *(sys.argv[1:] if argv is None else argv)])
    return (f"ets: stopped by {name}; {done} finished problem(s) kept in {run_dir}; "
            f"resume with the same command: {command}")


def exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM), as a shell reports it."""
    return 128 + (exc.signum if isinstance(exc, Interrupted) else int(signal.SIGINT))
