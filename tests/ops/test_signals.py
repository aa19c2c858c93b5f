"""Ctrl-C and SIGTERM sent to a real ``python -m ets`` process while it searches (ETS on the
synthetic world, so CP-SAT has solved many programs by then): the records written so far
stay, the W&B run (offline) is finished as failed, a one-line message says how to resume,
and the exit status is 128 + the signal. Before the fix, CP-SAT's ``catch_sigint_signal``
left SIGINT at its default action after the first solve (the process died silently) and
SIGTERM ended it with no message and an unfinished W&B run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.ops.wandb_log import offline_runs, read_offline_run

ARGS = ["+experiment=synthetic", "selector=ets", "search.width=8", "search.concurrency=1",
        "dataset.n=400", "tracker=wandb", "tracker.mode=offline"]


def _records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_cleanly_keeps_records_and_finishes_wandb(tmp_path, sig):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true",
           "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"), "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config")}
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "ets", *ARGS, f"hydra.run.dir={run_dir}"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(_records(run_dir / "problems.jsonl")) < 3:  # several problems: many CP-SAT solves
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the run wrote no records in time"
            time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err[-3000:]
    last = err.strip().splitlines()[-1]
    kept = _records(run_dir / "problems.jsonl")
    assert last.startswith(f"ets: stopped by {signal.Signals(sig).name}; {len(kept)} finished problem(s) kept")
    assert "resume with the same command: python -m ets +experiment=synthetic" in last
    raw = (run_dir / "problems.jsonl").read_bytes()
    assert raw.endswith(b"\n") and len(kept) >= 3 and len({r["id"] for r in kept}) == len(kept)
    assert not (run_dir / "summary.json").exists()
    (wandb_run,) = offline_runs(tmp_path / "wandb")
    logged = read_offline_run(wandb_run)
    assert logged.exit_code == 1  # finished, as failed



def test_a_lost_interrupt_is_raised_at_the_next_checkpoint():
    """A handler's exception raised inside a ``__del__`` is printed and dropped by Python;
    the run must still stop at its next checkpoint (every depth and record)."""
    import gc

    from ets.rundir.signals import Interrupted, checkpoint, stop_on_signals

    class Dropper:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs here: its raise is lost

    with stop_on_signals():
        Dropper()
        gc.collect()
        with pytest.raises(Interrupted) as caught:
            checkpoint()
        assert caught.value.signum == signal.SIGTERM
    checkpoint()  # outside a run: nothing pending, nothing raised
