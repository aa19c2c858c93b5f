"""ruff (configured in pyproject.toml) runs as part of the test suite, so CI lints too."""

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def test_ruff_check_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (it is in the `test` extra)")
    proc = subprocess.run([ruff, "check", "ets", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:]
