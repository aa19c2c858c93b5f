"""``python -m ets``: the Hydra entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ets.config import ConfigError, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Run one experiment; returns weighted-majority accuracy (for sweepers)."""
    from ets.rundir.integrity import RunDirError
    from ets.rundir.run import format_summary, run
    from ets.rundir.signals import exit_code, resume_hint, stop_on_signals

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        with stop_on_signals():
            summary = run(cfg, run_dir)
    except ConfigError as exc:
        print(f"ets: invalid config: {exc}", file=sys.stderr)
        _remove_if_unused(run_dir)
        sys.exit(2)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM: run() has finished the tracker
        print(resume_hint(exc, run_dir), file=sys.stderr)
        sys.exit(exit_code(exc))
    except RunDirError as exc:  # the run dir is locked, or holds another config
        print(f"ets: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))
    return float(summary["accuracy"]["weighted_majority"])


def _remove_if_unused(run_dir: Path) -> None:
    """Remove the run dir Hydra made for a run that failed its config check, only when it
    holds nothing but Hydra's ``.hydra`` folder and log files (never a dir with results, a
    saved config or a lock of a process that may be using it)."""
    import shutil

    if not run_dir.is_dir():
        return
    entries = list(run_dir.iterdir())
    if all(p.name == ".hydra" or p.suffix == ".log" or (p.name == ".lock" and _unheld(p))
           for p in entries):
        for p in entries:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        run_dir.rmdir()


def _unheld(lock: Path) -> bool:
    """Whether no process holds the run-dir lock file (ets.rundir.integrity.RunLock) right now."""
    import fcntl

    try:
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released when fh closes
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
