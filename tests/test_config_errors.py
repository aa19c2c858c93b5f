"""Config errors (issue 12.17): probabilities out of range, bad shards, exit code 2 with no
run directory left behind, and an atomic config.yaml under a full disk (a real EFBIG from a
file-size limit)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ets.config import ConfigError, validate
from tests.conftest import ROOT

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}


@pytest.mark.parametrize(("overrides", "message"), [
    (["+experiment=synthetic", "policy.base_error=5"], r"policy\.base_error=5.* must be <= 1"),
    (["+experiment=synthetic", "policy.detour_wrong=1.5"], r"policy\.detour_wrong=1\.5.* must be <= 1"),
    (["policy.top_p=5"], r"policy\.top_p=5.* must be <= 1"),
    (["policy=vllm", "policy.model=x", "policy.gpu_memory_utilization=1.2"],
     r"policy\.gpu_memory_utilization=1\.2.* must be <= 1"),
    (["+experiment=synthetic", "dataset.shard=4/4"], r"dataset\.shard=4/4: need 0 <= i < n"),
    (["+experiment=synthetic", "dataset.shard=half"], r"dataset\.shard=half: expected 'i/n'"),
    (["selector=ets", "selector.embedder.dtype=float64"], r"selector\.embedder\.dtype.*float64.*float16"),
])
def test_out_of_range_values_fail_at_validation(compose_cfg, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose_cfg(*overrides))


def test_edges_of_the_ranges_are_accepted(compose_cfg):
    validate(compose_cfg("+experiment=synthetic", "policy.base_error=1", "dataset.shard=3/4"))
    validate(compose_cfg("policy.top_p=1"))


@pytest.mark.parametrize(("override", "message"), [
    ("dataset.shard=4/4", "dataset.shard=4/4: need 0 <= i < n"),
    ("policy.base_error=5", "policy.base_error=5.0 is invalid: must be <= 1"),
    ("dataset.limit=0", "dataset.limit=0 selects no problems"),
    ("dataset.offset=900", "dataset.offset=900 is past the end"),
])
def test_cli_config_error_exits_2_and_leaves_no_run_dir(tmp_path, override, message):
    run_dir = tmp_path / "runs" / "x"
    proc = subprocess.run([sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.n=20", override,
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and message in proc.stderr
    assert not run_dir.exists()


def test_config_error_never_removes_a_dir_with_results(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "problems.jsonl").write_text('{"id": "a"}\n')
    proc = subprocess.run([sys.executable, "-m", "ets", "+experiment=synthetic", "dataset.shard=9/2",
                           f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 2
    assert (run_dir / "problems.jsonl").read_text() == '{"id": "a"}\n'


def _save_under_file_size_limit(tmp_path, limit: int) -> subprocess.CompletedProcess:
    """``save_config`` in a process whose files may not grow past ``limit`` bytes: writes
    beyond it fail with EFBIG, as on a full disk."""
    code = textwrap.dedent(f"""
        import resource, signal
        from omegaconf import OmegaConf
        from ets.config import save_config
        cfg = OmegaConf.create({{"search": {{"width": 4, "note": "x" * 4000}}}})
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
        save_config(cfg, {str(tmp_path / "config.yaml")!r})
    """)
    return subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)


def test_full_disk_leaves_no_truncated_config(tmp_path):
    proc = _save_under_file_size_limit(tmp_path, 1024)
    assert proc.returncode != 0 and "File too large" in proc.stderr
    assert list(tmp_path.iterdir()) == []  # no config.yaml, no temp file
    (tmp_path / "config.yaml").write_text("search: {width: 2}\n")  # a resume: the old file stays whole
    proc = _save_under_file_size_limit(tmp_path, 1024)
    assert proc.returncode != 0
    assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]
    assert (tmp_path / "config.yaml").read_text() == "search: {width: 2}\n"
    assert _save_under_file_size_limit(tmp_path, 1 << 20).returncode == 0
    assert "x" * 4000 in (tmp_path / "config.yaml").read_text()
