"""Structured-config schemas: one dataclass per component, stored in Hydra's ConfigStore.

Every ``conf/<group>/<name>.yaml`` extends its schema (``defaults: [/schema/<group>/<name>@_here_]``),
so a misspelt key or a value of the wrong type fails at composition with the key named.
Enum-typed fields list their allowed values in the error. Numeric ranges are declared
in field metadata (``ge``/``gt``) and checked by :func:`validate` right after composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """An invalid configuration value (the message names the key and the allowed range)."""


def _num(default: Any, **bounds: float) -> Any:
    return field(default=default, metadata=bounds)


class NodeCost(str, Enum):
    uniform = "uniform"
    tokens = "tokens"


class BeamVariant(str, Enum):
    search_and_learn = "search_and_learn"
    ets_reference = "ets_reference"


class Aggregation(str, Enum):
    last = "last"
    min = "min"
    prod = "prod"
    mean = "mean"


@dataclass
class Component:
    _target_: str = MISSING


# ---- search -------------------------------------------------------------------------
@dataclass
class SearchConf:
    width: int = _num(64, ge=1)
    max_depth: int = _num(40, ge=1)
    max_step_tokens: int = _num(256, ge=1)
    max_tokens: int = _num(1024, ge=1)
    seed: int = 0
    concurrency: int = _num(8, ge=1)
    aggregation: Aggregation = Aggregation.last


# ---- selectors ----------------------------------------------------------------------
@dataclass
class RebaseConf(Component):
    temperature: float = _num(0.2, gt=0)


# ``lambda`` is a Python keyword, so the ETS schema is built with ``type()``;
# init/repr/eq are off because the generated methods would need ``self.lambda``.
_ETSBody = type(
    "_ETSBody",
    (RebaseConf,),
    {
        "__annotations__": {
            "lambda": float,
            "coverage_weight": float,
            "node_cost": NodeCost,
            "min_one_child": bool,
            "zero_lambda_quirk": bool,
            "cluster_threshold": float,
            "time_limit_s": float,
            "num_workers": int,
            "objective_scale": int,
            "embedder": Any,
        },
        "lambda": _num(1.0, ge=0),
        "coverage_weight": _num(1.4, ge=0),
        "node_cost": NodeCost.uniform,
        "min_one_child": False,
        "zero_lambda_quirk": True,
        "cluster_threshold": _num(0.05, ge=0),
        "time_limit_s": _num(1.0, gt=0),
        "num_workers": _num(1, ge=1),
        "objective_scale": _num(1_000_000, ge=1),
        "embedder": None,
    },
)
ETSConf = dataclass(init=False, repr=False, eq=False)(_ETSBody)
ETSConf.__name__ = ETSConf.__qualname__ = "ETSConf"


@dataclass
class BeamConf(Component):
    beam_width: int = _num(4, ge=1)
    variant: BeamVariant = BeamVariant.search_and_learn


@dataclass
class DVTSConf(Component):
    beam_width: int = _num(4, ge=1)


@dataclass
class BestOfNConf(Component):
    pass


@dataclass
class FFSConf(Component):
    k: int = _num(1, ge=1)


# ---- expanders, kv, graders, embedders --------------------------------------------------
@dataclass
class StepExpanderConf(Component):
    delimiter: str = "\n\n"
    max_step_tokens: int = _num(256, ge=1)


@dataclass
class FixedTokensExpanderConf(Component):
    tokens: int = _num(64, ge=1)


@dataclass
class FullExpanderConf(Component):
    pass


@dataclass
class KVConf(Component):
    pass


@dataclass
class PagedKVConf(KVConf):
    block_size: int = _num(16, ge=1)


@dataclass
class EmbedderConf(Component):
    model: Optional[str] = None
    device: str = "cpu"
    batch_size: int = _num(64, ge=1)


# ---- policies, prms, datasets, trackers -----------------------------------------------
@dataclass
class PolicyConf(Component):
    step_delimiter: str = "\n\n"
    answer_markers: list[str] = field(default_factory=lambda: ["boxed", "The answer is"])


@dataclass
class SyntheticPolicyConf(PolicyConf):
    seed: int = 0
    base_error: float = _num(0.04, ge=0)
    error_slope: float = _num(0.16, ge=0)


@dataclass
class SyntheticPRMConf(Component):
    quality: float = _num(0.7, ge=0)
    seed: int = 0


@dataclass
class DatasetConf(Component):
    limit: Optional[int] = _num(None, ge=0)
    offset: int = _num(0, ge=0)
    shard: Optional[str] = None
    grader: Any = None


@dataclass
class SyntheticDatasetConf(DatasetConf):
    n: int = _num(500, ge=1)
    seed: int = 0


@dataclass
class JsonlDatasetConf(DatasetConf):
    path: Optional[str] = None
    hub_id: Optional[str] = None
    split: str = "test"
    question_field: str = "problem"
    answer_field: str = "answer"
    id_field: Optional[str] = None
    answer_format: str = "plain"


@dataclass
class TrackerConf(Component):
    pass


SCHEMAS: dict[str, dict[str, type]] = {
    "selector": {
        "rebase": RebaseConf,
        "ets": ETSConf,
        "beam": BeamConf,
        "dvts": DVTSConf,
        "best_of_n": BestOfNConf,
        "ffs": FFSConf,
    },
    "expander": {
        "step": StepExpanderConf,
        "fixed_tokens": FixedTokensExpanderConf,
        "full": FullExpanderConf,
    },
    "kv": {"base": KVConf, "paged": PagedKVConf},
    "policy": {"base": PolicyConf, "synthetic": SyntheticPolicyConf},
    "prm": {"base": Component, "synthetic": SyntheticPRMConf},
    "dataset": {"synthetic": SyntheticDatasetConf, "jsonl": JsonlDatasetConf},
    "tracker": {"base": TrackerConf},
    "embedder": {"base": EmbedderConf},
}


def register_configs() -> None:
    """Store every schema as ``schema/<group>/<name>`` (idempotent)."""
    cs = ConfigStore.instance()
    for group, schemas in SCHEMAS.items():
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
        if "ge" in f.metadata and value < f.metadata["ge"]:
            raise ConfigError(f"{key}={value} is invalid: must be >= {f.metadata['ge']}")
        if "gt" in f.metadata and value <= f.metadata["gt"]:
            raise ConfigError(f"{key}={value} is invalid: must be > {f.metadata['gt']}")


def validate(cfg: DictConfig) -> None:
    """Range-check every schema-typed node of a composed config.

    Raises:
        ConfigError: naming the full key, the bad value and the allowed range.
    """
    for key in cfg:
        node = cfg[key]
        schema = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        if schema is not None and is_dataclass(schema):
            _check_bounds(node, schema, str(key))
    search = cfg.get("search")
    if search is not None and search.max_step_tokens > search.max_tokens:
        raise ConfigError(
            f"search.max_step_tokens={search.max_step_tokens} exceeds "
            f"search.max_tokens={search.max_tokens}"
        )


__all__ = ["ConfigError", "register_configs", "validate", "SCHEMAS"]
