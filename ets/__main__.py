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
    from ets.run import format_summary, run
    from ets.rundir import RunDirError

    try:
        summary = run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as exc:
        print(f"ets: invalid config: {exc}", file=sys.stderr)
        sys.exit(2)
    except RunDirError as exc:  # the run dir is locked, or holds another config
        print(f"ets: {exc}", file=sys.stderr)
        sys.exit(2)
    print(format_summary(summary))
    return float(summary["accuracy"]["weighted_majority"])


if __name__ == "__main__":
    main()
