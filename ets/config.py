"""Structured-config schemas: one dataclass per component, stored in Hydra's ConfigStore.

Every ``conf/<group>/<name>.yaml`` extends its schema (``defaults: [/schema/<group>/<name>@_here_]``),
so a misspelt key or a value of the wrong type fails at composition with the key named.
Enum-typed fields list their allowed values in the error. Numeric ranges are declared
in field metadata (``ge``/``gt``/``le``; probabilities are capped at 1) and checked by :func:`validate` right after composition.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """An invalid configuration value (the message names the key and the allowed range)."""


def _num(default: Any, **bounds: float) -> Any:
    return field(default=default, metadata=bounds)


class NodeCost(str, Enum):  # noqa: UP042 - OmegaConf needs a plain Enum
    uniform = "uniform"
    tokens = "tokens"


class MinChildRule(str, Enum):  # noqa: UP042 (ets.selectors.ets.ETSSelector.guaranteed)
    representative = "representative"
    cluster = "cluster"
    every = "every"


class BeamVariant(str, Enum):  # noqa: UP042
    search_and_learn = "search_and_learn"
    ets_reference = "ets_reference"


class WandbMode(str, Enum):  # noqa: UP042 (same style as the other enums)
    online = "online"
    offline = "offline"
    disabled = "disabled"


class Aggregation(str, Enum):  # noqa: UP042
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
    # ``async`` is a Python keyword, so not an Enum member name: a str with choices.
    scheduler: str = field(default="async", metadata={"choices": ("lockstep", "async")})


# ---- selectors ----------------------------------------------------------------------
@dataclass
class RebaseConf(Component):
    temperature: float = _num(0.2, gt=0)


@dataclass
class RebaseTruncConf(RebaseConf):
    truncate_ratio: float = _num(0.5, gt=0, le=1)


@dataclass
class AStarConf(Component):
    """``selector=astar`` (:mod:`ets.selectors.astar`)."""

    k: int = _num(4, ge=1)
    cost: str = field(default="depth", metadata={"choices": ("accumulated", "depth", "zero")})
    step_cost: float = _num(0.1, ge=0)
    push: str = field(default="all", metadata={"choices": ("all", "best")})
    tie_break: str = field(default="fifo", metadata={"choices": ("fifo", "deeper")})
    expand_per_round: int = _num(1, ge=1)
    stop: str = field(default="width", metadata={"choices": ("width", "first")})
    open_max: int | None = _num(None, ge=1)
    max_expansions: int | None = _num(None, ge=1)
    max_prm_calls: int | None = _num(None, ge=1)
    max_total_tokens: int | None = _num(None, ge=1)


@dataclass
class StepBoNConf(Component):
    """``selector=step_bon`` (:mod:`ets.selectors.step_bon`)."""

    candidates_per_step: int = _num(8, ge=1)


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
            "min_child_rule": MinChildRule,
            "zero_lambda_quirk": bool,
            "cluster_threshold": float | None,
            "time_limit_s": float,
            "num_workers": int,
            "objective_scale": int,
            "presolve": bool,
            "embedder": Any,
        },
        "lambda": _num(1.0, ge=0),
        "coverage_weight": _num(1.4, ge=0),
        "node_cost": NodeCost.uniform,
        "min_one_child": False,
        "min_child_rule": MinChildRule.representative,
        "zero_lambda_quirk": True,
        "cluster_threshold": _num(None, ge=0),  # None: selector.embedder.threshold
        "time_limit_s": _num(1.0, gt=0),
        "num_workers": _num(1, ge=1),
        "objective_scale": _num(1_000_000, ge=1),
        "presolve": True,
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
    model: str | None = None
    device: str = "auto"  # auto: cuda when torch sees a GPU, else cpu
    batch_size: int = _num(64, ge=1)
    num_threads: int | None = _num(None, ge=1)
    threshold: float | None = _num(None, ge=0)  # None: the model's calibrated cut


# ---- policies, prms, datasets, trackers -----------------------------------------------
@dataclass
class PolicyConf(Component):
    step_delimiter: str = "\n\n"
    answer_markers: list[str] = field(default_factory=lambda: ["boxed", "The answer is"])


@dataclass
class SyntheticPolicyConf(PolicyConf):
    seed: int = 0
    profile: str | None = None  # ets.synthetic.profiles; None values below come from it
    base_error: float = _num(0.10, ge=0, le=1)
    error_slope: float = _num(0.30, ge=0)
    loop_base: float | None = _num(None, ge=0, le=1)
    loop_slope: float | None = _num(None, ge=0)
    detour_correct: float = _num(0.05, ge=0, le=1)
    detour_wrong: float = _num(0.25, ge=0, le=1)
    n_paraphrases: int = _num(4, ge=1)
    n_variants: int | None = _num(None, ge=1)


@dataclass
class SyntheticPRMConf(Component):
    quality: float = _num(0.3, ge=0)
    seed: int = 0
    profile: str | None = None
    scale: float | None = _num(None, gt=0)
    rho: float | None = _num(None, ge=0)
    bias: float | None = None


class PaddingSide(str, Enum):  # noqa: UP042 (same style as the other enums)
    right = "right"
    left = "left"


class TagPosition(str, Enum):  # noqa: UP042
    first = "first"
    last = "last"


class ModelDtype(str, Enum):  # noqa: UP042
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@dataclass
class HFPRMConf(Component):
    """A transformers PRM (``ets.prms.hf_base.HFPRM``); model quirks live in the YAML."""

    model: str = MISSING
    tokenizer: str | None = None
    device: str = "auto"
    dtype: ModelDtype = ModelDtype.auto
    batch_size: int = _num(8, ge=1)
    padding_side: PaddingSide = PaddingSide.right


@dataclass
class TaggedPRMConf(HFPRMConf):
    prompt_template: str = "{question}"
    step_tag: str = MISSING
    step_join: str = ""
    score_at: TagPosition = TagPosition.last


@dataclass
class MathShepherdPRMConf(TaggedPRMConf):
    good_token: str = "+"
    bad_token: str = "-"


@dataclass
class QwenMathPRMConf(HFPRMConf):
    system_prompt: str = ""
    step_separator: str = MISSING


@dataclass
class RLHFlowPRMConf(HFPRMConf):
    good_token: str = "+"
    bad_token: str = "-"
    question_join: str = " "


@dataclass
class SkyworkPRMConf(HFPRMConf):
    step_token: str = "\n"


@dataclass
class JudgePRMConf(HFPRMConf):
    user_template: str = MISSING
    system_prompt: str = ""
    no_previous: str = "(none)"
    step_join: str = "\n\n"
    answer_prefix: str = ""
    yes_tokens: list[str] = field(default_factory=lambda: ["Yes"])
    no_tokens: list[str] = field(default_factory=lambda: ["No"])


@dataclass
class LogprobPRMConf(Component):
    pass


class RewardActivation(str, Enum):  # noqa: UP042
    softmax = "softmax"
    sigmoid = "sigmoid"
    none = "none"


@dataclass
class PromptedPolicyConf(PolicyConf):
    """Keys shared by the engine-backed policies (``ets.policies.vllm`` / ``openai``)."""

    model: str = MISSING
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    use_chat_template: bool = True
    prompt_template: str = "{question}"
    system_prompt: str | None = None
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    response_prefix: str = ""
    temperature: float = _num(1.0, ge=0)
    top_p: float = _num(1.0, gt=0, le=1)


@dataclass
class HFPolicyConf(PromptedPolicyConf):
    """The transformers policy (``ets.policies.hf.HFPolicy``). Its presets switch engine
    with ``policy._target_=ets.policies.vllm.VLLMPolicy`` (that class accepts and ignores
    ``device`` and ``batch_size``)."""

    model: str = "smollm2"
    dtype: ModelDtype = ModelDtype.float32
    device: str = "cpu"
    batch_size: int = _num(32, ge=1)


@dataclass
class VLLMPolicyConf(PromptedPolicyConf):
    """The offline vLLM engine (``ets.policies.vllm.VLLMPolicy``); null = vLLM's default."""

    dtype: ModelDtype = ModelDtype.auto
    tensor_parallel_size: int = _num(1, ge=1)
    gpu_memory_utilization: float = _num(0.9, gt=0, le=1)
    max_model_len: int | None = _num(None, ge=1)
    block_size: int | None = _num(None, ge=1)
    enable_prefix_caching: bool = True
    enforce_eager: bool = False
    seed: int = 0
    swap_space: float | None = _num(None, ge=0)
    cpu_kv_space_gb: float | None = _num(None, gt=0)
    in_process: bool | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    share_engine: bool = True


@dataclass
class OpenAIPolicyConf(PromptedPolicyConf):
    """An OpenAI-compatible completions server (``ets.policies.openai.OpenAIPolicy``)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = _num(600.0, gt=0)
    concurrency: int = _num(16, ge=1)
    send_token_ids: bool | None = None
    vllm_extensions: bool = True
    max_retries: int = _num(2, ge=0)
    metrics: bool = False


@dataclass
class VLLMRewardPRMConf(Component):
    """A PRM served by vLLM as a pooling model (``ets.prms.vllm_reward.VLLMRewardPRM``)."""

    model: str = MISSING
    tokenizer: str | None = None
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: ModelDtype = ModelDtype.auto
    tensor_parallel_size: int = _num(1, ge=1)
    gpu_memory_utilization: float = _num(0.9, gt=0, le=1)
    max_model_len: int | None = _num(None, ge=1)
    enforce_eager: bool = False
    cpu_kv_space_gb: float | None = _num(None, gt=0)
    in_process: bool | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    share_engine: bool = True
    use_chat_template: bool = True
    system_prompt: str | None = None
    prompt_template: str = "{question}"
    step_separator: str = MISSING
    step_join: str = ""
    strip_steps: bool = True
    score_token: str | None = None
    label_index: int = _num(1, ge=0)
    activation: RewardActivation = RewardActivation.softmax
    step_score: Aggregation = Aggregation.last


@dataclass
class DatasetConf(Component):
    limit: int | None = _num(None, ge=0)
    offset: int = _num(0, ge=0)
    shard: str | None = None
    grader: Any = None


@dataclass
class SyntheticDatasetConf(DatasetConf):
    n: int = _num(500, ge=1)
    seed: int = 0
    profile: str | None = None


@dataclass
class JsonlDatasetConf(DatasetConf):
    path: str | None = None
    hub_id: str | None = None
    hub_config: str | None = None
    split: str = "test"
    question_field: str = "problem"
    answer_field: str = "answer"
    id_field: str | None = None
    answer_format: str = "plain"
    shuffle_seed: int | None = None


@dataclass
class MultipleChoiceDatasetConf(JsonlDatasetConf):
    """``ets.datasets.multiple_choice.MultipleChoiceDataset`` (GPQA): gold = a letter."""

    correct_field: str = "Correct Answer"
    incorrect_fields: list[str] = field(default_factory=lambda: [
        "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"])
    choice_seed: int = 0
    template: str = "{question}\n\n{choices}"


@dataclass
class TrackerConf(Component):
    tags: list[str] = field(default_factory=list)


@dataclass
class WandbTrackerConf(TrackerConf):
    """W&B logging; the API key is read from ``WANDB_API_KEY`` only, never from config.

    ``mode=None``: ``WANDB_MODE`` if set, else online with a key, offline without one.
    ``group=None``: the sweep dir for sweeps, ``name`` otherwise. ``dir=None``:
    ``WANDB_DIR`` if set, else the run dir.
    """

    project: str = "ets"
    entity: str | None = None
    group: str | None = None
    mode: WandbMode | None = None
    dir: str | None = None


SCHEMAS: dict[str, dict[str, type]] = {
    "selector": {
        "rebase": RebaseConf,
        "rebase_trunc": RebaseTruncConf,
        "astar": AStarConf,
        "step_bon": StepBoNConf,
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
    "policy": {"base": PolicyConf, "synthetic": SyntheticPolicyConf, "hf": HFPolicyConf,
               "vllm": VLLMPolicyConf, "openai": OpenAIPolicyConf},
    "prm": {
        "base": Component,
        "synthetic": SyntheticPRMConf,
        "math_shepherd": MathShepherdPRMConf,
        "llemma": TaggedPRMConf,
        "qwen_math_prm": QwenMathPRMConf,
        "rlhflow": RLHFlowPRMConf,
        "judge": JudgePRMConf,
        "logprob": LogprobPRMConf,
        "vllm_reward": VLLMRewardPRMConf,
        "skywork": SkyworkPRMConf,
    },
    "dataset": {"synthetic": SyntheticDatasetConf, "jsonl": JsonlDatasetConf,
                "multiple_choice": MultipleChoiceDatasetConf},
    "tracker": {"base": TrackerConf, "wandb": WandbTrackerConf},
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


__all__ = ["ConfigError", "register_configs", "validate", "save_config", "SCHEMAS"]
