"""Sweep files and launcher presets: composition, and the smoke sweep run locally
(Hydra's basic launcher, and submitit's local executor through hydra-submitit-launcher)."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from tests.conftest import CONF, ROOT
from tests.launch.common import SMOKE, check_smoke_sweep, ets


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_groups_are_the_top_level_folders():
    assert (CONF / "sweep").resolve() == (ROOT / "sweeps").resolve()
    assert (CONF / "launcher").resolve() == (ROOT / "launchers").resolve()


@pytest.mark.parametrize(("sweep", "grid"), [
    ("smoke", {"selector.lambda": "0.5,1.0", "search.seed": "0,1"}),
    ("kv_tradeoff", {"selector.lambda": "0,0.5,1,2", "selector.coverage_weight": "0,0.7,1.4,2.8"}),
    ("paper_grid", {"search.width": "16,64,256", "selector": "ets,rebase"}),
    ("shards2", {"dataset.shard": "0/2,1/2"}),
    ("shards4", {"dataset.shard": "0/4,1/4,2/4,3/4"}),
])
def test_sweep_files_set_the_grid(sweep, grid):
    cfg = _hydra_cfg("+experiment=synthetic", f"+sweep={sweep}")
    assert {k: str(v) for k, v in cfg.hydra.sweeper.params.items()} == grid


def test_slurm_preset():
    cfg = _hydra_cfg("+experiment=synthetic", "+sweep=kv_tradeoff", "+launcher=slurm",
                     "hydra.launcher.partition=debug")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "debug" and launcher.max_num_timeout > 0
    assert launcher.additional_parameters.requeue is True
    assert launcher.signal_delay_s < launcher.timeout_min * 60
    assert launcher.name == "ets-synthetic"


@pytest.mark.parametrize(("preset", "target"), [
    ("local", "BasicLauncher"), ("submitit_local", "submitit_launcher.LocalLauncher")])
def test_local_presets(preset, target):
    cfg = _hydra_cfg("+experiment=synthetic", f"+launcher={preset}")
    assert cfg.hydra.launcher._target_.endswith(target)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["local", "submitit_local"])
def test_smoke_sweep_runs_locally(tmp_path, preset):
    sweep_dir = tmp_path / "sweep"
    ets("-m", *SMOKE, f"+launcher={preset}", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    check_smoke_sweep(sweep_dir)
    if preset == "submitit_local":
        assert (sweep_dir / ".submitit").is_dir()
