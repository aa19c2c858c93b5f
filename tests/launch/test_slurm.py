"""A real single-node SLURM (``slurm_cluster.sh``): the smoke sweep as a job array through
``+launcher=slurm``, and a 2-shard run whose jobs are interrupted mid-run (one through
submitit's checkpoint on USR2, one by ``scontrol requeue``), resumed by SLURM without
duplicates, then merged and compared with the same run unsharded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ets.rundir.merge import find_run_dirs, merge
from ets.rundir.results import read_records
from tests.launch.common import SMOKE, check_run, check_smoke_sweep, ets, load_config

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("slurm_cluster.sh")
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd",
           "sbatch", "sacct", "scontrol")
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# Small jobs on the test node (its CPU count is the machine's).
SLURM = ["+launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20"]
# Slow enough to be caught mid-run: one problem in flight at a time, width 64.
SHARDED = ["+experiment=synthetic", "dataset.n=200", "search.width=64", "search.concurrency=1",
           "selector.coverage_weight=0"]


@dataclass
class Cluster:
    """A running test cluster: its state dir and the environment its clients need."""

    dir: Path
    env: dict[str, str]

    def cmd(self, *args: str) -> str:
        """Run a SLURM client command against this cluster; returns its stdout."""
        return subprocess.run(list(args), env=self.env, text=True, capture_output=True,
                              check=True, timeout=60).stdout

    def states(self, job: str, tasks: int) -> dict[str, list[str]]:
        """Every accounting record of array ``job`` (requeued attempts included), task ->
        states, once all ``tasks`` have ended (sacct lags the jobs by a second or two)."""
        out: dict[str, list[str]] = {}
        for _ in range(100):
            out = {}
            for line in self.cmd("sacct", "-D", "-X", "-n", "-P", "-o", "JobID,State", "-j",
                                 job).splitlines():
                task, state = line.split("|")
                out.setdefault(task, []).append(state.split()[0])
            if len(out) == tasks and all(s[-1] in ENDED for s in out.values()):
                break
            time.sleep(0.2)
        return out


@pytest.fixture(scope="session")
def slurm() -> Iterator[Cluster]:
    """Start munge, MariaDB, slurmdbd, slurmctld and slurmd on 127.0.0.1; stop them after."""
    missing = [b for b in DAEMONS if shutil.which(b, path=SEARCH_PATH) is None]
    if missing:
        pytest.skip(f"no SLURM here (missing {', '.join(missing)}); "
                    "apt-get install slurm-wlm munge slurmdbd mariadb-server")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster needs root")
    state = Path(tempfile.mkdtemp(prefix="ets-slurm-"))
    state.chmod(0o755)  # munged and mariadbd run as their own users
    env = {**os.environ, "PATH": SEARCH_PATH, "SLURM_CONF": str(state / "etc" / "slurm.conf")}
    try:
        up = subprocess.run(["bash", str(SCRIPT), "start", str(state)], env=env, text=True,
                            capture_output=True, timeout=240)
        if up.returncode:
            pytest.fail(f"SLURM bring-up failed ({up.returncode}):\n{up.stderr[-4000:]}")
        yield Cluster(state, env)
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", str(state)], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def test_smoke_sweep_on_slurm(slurm, tmp_path):
    sweep_dir = tmp_path / "sweep"
    out = ets("-m", *SMOKE, *SLURM, f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path, env=slurm.env)
    check_smoke_sweep(sweep_dir)
    array = _array_id(sweep_dir)
    states = slurm.states(array, 4)
    assert sorted(states) == [f"{array}_{i}" for i in range(4)], out[-2000:]
    assert all(s == ["COMPLETED"] for s in states.values()), states


def test_interrupted_shards_resume_and_merge(slurm, tmp_path):
    sweep_dir, whole = tmp_path / "sweep", tmp_path / "whole"
    launch = _popen(["-m", *SHARDED, "+sweep=shards2", *SLURM, f"hydra.sweep.dir={sweep_dir}"],
                    tmp_path / "sweep.out", slurm.env)
    unsharded = _popen([*SHARDED, f"hydra.run.dir={whole}"], tmp_path / "whole.out", slurm.env)
    try:
        array = _wait_for(lambda: _array_id(sweep_dir), 60, "the array to be submitted")
        interrupted: dict[int, str] = {}
        deadline = time.monotonic() + 120
        while len(interrupted) < 2 and time.monotonic() < deadline:
            for run in find_run_dirs(sweep_dir):
                shard = int(load_config(run)["dataset"]["shard"].split("/")[0])
                if shard not in interrupted and read_records(run / "problems.jsonl"):
                    task = f"{array}_{shard}"
                    if shard == 0:  # preemption: submitit checkpoints on USR2 and requeues
                        slurm.cmd("scancel", "--signal=USR2", task)
                    else:  # an admin requeue: SIGTERM (ignored by submitit), then SIGKILL
                        slurm.cmd("scontrol", "requeue", task)
                    interrupted[shard] = task
            time.sleep(0.1)
        assert len(interrupted) == 2, f"caught only {interrupted} mid-run"
        assert launch.wait(timeout=240) == 0, (tmp_path / "sweep.out").read_text()[-4000:]
        assert unsharded.wait(timeout=120) == 0, (tmp_path / "whole.out").read_text()[-4000:]
    finally:  # on failure: stop what is left (jobs of a finished launcher are left alone)
        if launch.poll() is None:
            launch.kill()
            subprocess.run(["scancel", "--name=ets-synthetic"], env=slurm.env, timeout=30)
        if unsharded.poll() is None:
            unsharded.kill()

    states = slurm.states(array, 2)
    for task in interrupted.values():
        assert "REQUEUED" in states[task] and states[task][-1] == "COMPLETED", states
    for run in find_run_dirs(sweep_dir):
        check_run(run, 100)
        log = (run / "__main__.log").read_text()
        done = [int(n) for n in re.findall(r"resuming: (\d+) of 100 problems already done", log)]
        assert done and done[0] > 0, f"{run} was not resumed:\n{log[-2000:]}"
        if load_config(run)["dataset"]["shard"] == "0/2":  # USR2 stops it at once
            assert done[0] < 100, f"{run} was not interrupted mid-run"

    merged = merge(sweep_dir, tmp_path / "merged")
    expected = json.loads((whole / "summary.json").read_text())
    for key in ("problems", "accuracy", "kv", "tokens_generated"):
        assert merged[key] == expected[key], key
    by_id = {r["id"]: r for r in read_records(whole / "problems.jsonl")}
    assert {r["id"] for r in read_records(tmp_path / "merged" / "problems.jsonl")} == set(by_id)


def _popen(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``python -m ets *args`` in the background, its output into ``log`` (cwd: its folder)."""
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, "-m", "ets", *args], cwd=log.parent, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def _array_id(sweep_dir: Path) -> str | None:
    """The SLURM array job id of a sweep: submitit's folder ``.submitit/<id>``."""
    folder = sweep_dir / ".submitit"
    ids = [p.name for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
    return ids[0] if len(ids) == 1 else None


def _wait_for(probe, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")
