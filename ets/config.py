"""Configuration: where component schemas come from, and the checks after composition.

The structured-config pattern (Hydra): every component declares its schema next to its
class, in its own module, with :func:`ets.schema.schema`::

    @schema("selector", "rebase", RebaseSelector)
    class RebaseConf(Component):
        temperature: float = num(gt=0)   # type and bounds; the default is __init__'s

and its YAML, ``conf/<group>/<name>.yaml``, names the schema and sets only what the preset
changes::

    defaults:
      - /schema/selector@_here_: rebase
      - _self_
    _target_: ets.selectors.rebase.RebaseSelector

Registration is discovered, not listed: :func:`register_configs` imports the module of
every ``_target_`` in the config dir's YAML files (component modules import nothing heavy
at module level, so this is cheap) and stores each declared schema in Hydra's ConfigStore
as ``schema/<group>/<name>``. Adding a method or a PRM is therefore one module plus one
YAML; nothing here changes. Defaults are written once, in the component's ``__init__``
(the schema reads them from its signature), and a YAML repeats none of them.

A misspelt key or a value of the wrong type fails at composition with the key named;
enum-typed keys list their allowed values. Numeric ranges (``num(ge=, gt=, le=)``) and
``choice`` values are checked by :func:`validate` right after composition. Only the
search settings (:class:`SearchConf`), which belong to the loop, are declared here.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from ets.schema import REGISTRY, Aggregation, Component, choice, num

#: The config dir ``python -m ets`` composes from.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

_TARGET = re.compile(r"(?:^|[\s{,-])_target_:\s*[\"']?([A-Za-z_][\w.]*)")


class ConfigError(ValueError):
    """An invalid configuration value (the message names the key and the allowed range)."""


_num = num  # the old name, for schemas not yet moved to their module (see SCHEMAS)


# ---- search (the loop's own settings) -------------------------------------------------------
@dataclass
class SearchConf:
    width: int = num(64, ge=1)
    max_depth: int = num(40, ge=1)
    max_step_tokens: int = num(256, ge=1)
    max_tokens: int = num(1024, ge=1)
    seed: int = 0
    concurrency: int = num(8, ge=1)
    aggregation: Aggregation = Aggregation.last
    # ``async`` is a Python keyword, so not an Enum member name: a str with choices.
    scheduler: str = choice("lockstep", "async", default="async")
    # async: groups back from one wait are scored/selected in chunks of >= this many children
    round_chunk: int = num(64, ge=0)
    # Python's GIL switch interval (ms) while the search runs; null: leave Python's (5 ms)
    switch_interval_ms: float | None = num(None, gt=0)


#: Transition only: schemas still declared the old way, ``{group: {name: dataclass}}``.
#: Move each to its component's module (see README, "Adding a method"); keep this empty.
SCHEMAS: dict[str, dict[str, type]] = {}


def discover(*conf_dirs: Path | str) -> list[str]:
    """Import the module of every ``_target_`` named in ``conf_dirs``' YAML files (default:
    :data:`CONF_DIR`), which registers the schemas they declare; returns the modules.

    Raises:
        ConfigError: naming the YAML file and the module that could not be imported.
    """
    modules: dict[str, Path] = {}
    for conf in conf_dirs or (CONF_DIR,):
        for path in sorted(Path(conf).rglob("*.yaml")):
            for target in _TARGET.findall(path.read_text(encoding="utf-8")):
                module = target.rpartition(".")[0]
                if module:
                    modules.setdefault(module, path)
    for module, path in modules.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"{path}: _target_ module {module} cannot be imported: {exc}") from exc
    return list(modules)


def register_configs(*conf_dirs: Path | str) -> None:
    """Discover the component schemas (:func:`discover`) and store each as
    ``schema/<group>/<name>`` in Hydra's ConfigStore, plus ``schema/search`` (idempotent)."""
    discover(*conf_dirs)
    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
        for name in schemas.keys() & REGISTRY.get(group, {}).keys():
            raise ConfigError(f"schema/{group}/{name} is declared in its module and in ets.config.SCHEMAS")
    for registry in (REGISTRY, SCHEMAS):
        for group, schemas in registry.items():
            for name, schema in schemas.items():
                cs.store(group=f"schema/{group}", name=name, node=schema)
    cs.store(group="schema", name="search", node=SearchConf)


def _check_bounds(node: Any, schema: type, path: str) -> None:
    for f in fields(schema):
        value = node.get(f.name) if isinstance(node, DictConfig) else None
        key = f"{path}.{f.name}" if path else f.name
        if value is None:
            continue
        if isinstance(value, DictConfig):
            sub = OmegaConf.get_type(value)
            if sub is not None and is_dataclass(sub):
                _check_bounds(value, sub, key)
            continue
        if "choices" in f.metadata and value not in f.metadata["choices"]:
            raise ConfigError(f"{key}={value} is invalid; allowed: {', '.join(f.metadata['choices'])}")
        if "ge" in f.metadata and value < f.metadata["ge"]:
            raise ConfigError(f"{key}={value} is invalid: must be >= {f.metadata['ge']}")
        if "gt" in f.metadata and value <= f.metadata["gt"]:
            raise ConfigError(f"{key}={value} is invalid: must be > {f.metadata['gt']}")
        if "le" in f.metadata and value > f.metadata["le"]:
            raise ConfigError(f"{key}={value} is invalid: must be <= {f.metadata['le']}")


def validate(cfg: DictConfig) -> None:
    """Check that every mandatory value (``???``) is set and range-check every
    schema-typed node of a composed config.

    Raises:
        ConfigError: naming the full key, the bad value and the allowed range.
    """
    missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra."))
    if missing:
        raise ConfigError(f"{', '.join(missing)} must be set (e.g. {missing[0]}=...)")
    for key in cfg:
        node = cfg[key]
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is not None and is_dataclass(schema):
            _check_bounds(node, schema, str(key))
    dataset = cfg.get("dataset")
    if isinstance(dataset, DictConfig) and dataset.get("shard") not in (None, ""):
        from ets.datasets import parse_shard

        try:
            parse_shard(dataset.shard)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    search = cfg.get("search")
    if search is not None and search.max_step_tokens > search.max_tokens:
        raise ConfigError(
            f"search.max_step_tokens={search.max_step_tokens} exceeds "
            f"search.max_tokens={search.max_tokens}"
        )


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the resolved ``cfg`` to ``path`` atomically: a unique temp file in the same
    folder, fsync'd, then renamed over ``path``. A full disk leaves the old file (or none),
    never a truncated one; the temp file is removed on failure."""
    import os
    import tempfile

    path = Path(path)
    text = OmegaConf.to_yaml(cfg, resolve=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["ConfigError", "CONF_DIR", "Component", "SearchConf", "discover", "register_configs",
           "validate", "save_config", "SCHEMAS"]
