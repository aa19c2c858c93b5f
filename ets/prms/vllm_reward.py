"""PRMs that vLLM serves as pooling (reward) models, e.g. ``Qwen2ForProcessRewardModel``.

The path is rendered like the transformers PRMs do it (chat template or plain template,
every step followed by ``step_separator``) and sent as token ids in one
``LLM.encode(..., pooling_task="token_classify")`` call per depth (vLLM 0.26 and 0.32;
``LLM.reward`` is deprecated). Raw head outputs are requested (``use_activation=False``)
and the activation is applied here, so the numbers do not depend on vLLM's defaults.

Which rows are read: models with step pooling (``Qwen2ForProcessRewardModel``) return
only the rows at ``step_tag_id``, which is set per request to the ``score_token`` (vLLM's
own default, 151651, is Qwen's ``<extra_0>`` id and wrong for any other tokenizer);
models with all-token pooling return every row and the ``score_token`` positions are
picked here. A step's score is column ``label_index`` of its row after ``activation``;
``step_score`` reduces the path's step scores (``last`` = the newest step).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from enum import Enum
from typing import Any

from ets.core.answers import AGGREGATIONS, aggregate
from ets.core.tree import Node
from ets.policies.vllm import Engine, engine_env, open_engine
from ets.prms.hf_base import as_str, steps_of, token_id
from ets.schema import Aggregation, Component, ModelDtype, num, schema
from ets.types import Problem

ACTIVATIONS = ("softmax", "sigmoid", "none")


class VLLMRewardPRM:
    """A process reward model on the vLLM pooling runner.

    Args:
        model: Folder or hub id of the reward model.
        step_separator: Text written after every step (e.g. ``<extra_0>``).
        tokenizer, revision, trust_remote_code, dtype, tensor_parallel_size,
            gpu_memory_utilization, max_model_len, enforce_eager, cpu_kv_space_gb,
            in_process, engine_kwargs, share_engine: Engine options, as for
            :class:`~ets.policies.vllm.VLLMPolicy`.
        use_chat_template: ``[system], user=question, assistant=steps`` through the chat
            template (no generation prompt); otherwise ``prompt_template + steps``.
        system_prompt, prompt_template: The PRM's prompt (``{question}`` is replaced).
        step_join: Written between a separator and the next step.
        strip_steps: Strip whitespace around each step's text first.
        score_token: The token whose rows are read (``None`` = ``step_separator``; one token).
        label_index: Column of the head output that is the step's score.
        activation: ``softmax`` | ``sigmoid`` | ``none`` over the row.
        step_score: ``last`` | ``min`` | ``mean`` | ``prod`` over the path's steps.
    """

    def __init__(
        self, model: str, step_separator: str, tokenizer: str | None = None, revision: str | None = None,
        trust_remote_code: bool = False, dtype: Any = "auto", tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, enforce_eager: bool = False,
        cpu_kv_space_gb: float | None = None, in_process: bool | None = None,
        engine_kwargs: dict[str, Any] | None = None, share_engine: bool = True, use_chat_template: bool = True,
        system_prompt: str | None = None, prompt_template: str = "{question}", step_join: str = "",
        strip_steps: bool = True, score_token: str | None = None, label_index: int = 1,
        activation: Any = "softmax", step_score: Any = "last",
    ) -> None:
        self.activation, self.step_score = as_str(activation), as_str(step_score)
        if self.activation not in ACTIVATIONS or self.step_score not in AGGREGATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS} and step_score one of "
                             f"{AGGREGATIONS}; got {self.activation!r}, {self.step_score!r}")
        self.model, self.revision, self.share_engine = model, revision, share_engine
        self.step_separator, self.step_join, self.strip_steps = step_separator, step_join, strip_steps
        self.score_token, self.label_index = score_token or step_separator, label_index
        self.use_chat_template, self.system_prompt, self.prompt_template = (
            use_chat_template, system_prompt, prompt_template)
        self.env = engine_env(cpu_kv_space_gb, in_process)
        self.options = {
            "runner": "pooling", "tokenizer": tokenizer, "revision": revision,
            "trust_remote_code": trust_remote_code, "dtype": as_str(dtype),
            "tensor_parallel_size": tensor_parallel_size, "gpu_memory_utilization": gpu_memory_utilization,
            "max_model_len": max_model_len, "enforce_eager": enforce_eager, **dict(engine_kwargs or {}),
        }
        self._engine: Engine | None = None
        self.score_token_id, self.step_pooling = -1, False

    @property
    def engine(self) -> Engine:
        """The pooling engine, started on first use."""
        if self._engine is None:
            engine = open_engine(self.model, self.revision, self.options, self.env,
                                 self.share_engine, key="prm")
            score_token_id = token_id(engine.llm.get_tokenizer(), self.score_token, "prm.score_token")
            pooler = engine.llm.llm_engine.model_config.pooler_config
            kind = getattr(pooler, "tok_pooling_type", None) or getattr(pooler, "pooling_type", None)
            self.score_token_id, self.step_pooling, self._engine = score_token_id, as_str(kind) == "STEP", engine
        return self._engine

    def close(self) -> None:
        """Shut the engine down unless it is shared (see :func:`ets.policies.vllm.release_engines`)."""
        if self._engine is not None and not self.share_engine:
            self._engine.shutdown()
        self._engine = None

    def render(self, problem: Problem, node: Node) -> str:
        """The PRM input text for the path to ``node``."""
        steps = steps_of(node, strip=self.strip_steps)
        body = self.step_join.join(step + self.step_separator for step in steps)
        question = self.prompt_template.replace("{question}", problem.question)
        if not self.use_chat_template:
            return question + body
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": body}]
        return self.engine.llm.get_tokenizer().apply_chat_template(messages, tokenize=False,
                                                                   add_generation_prompt=False)

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        """One ``encode`` call for all paths; the reduced step scores of each."""
        from vllm import PoolingParams
        from vllm.inputs import TokensPrompt

        if not items:
            return []
        engine, tokenizer = self.engine, self.engine.llm.get_tokenizer()
        ids = [tokenizer.encode(self.render(p, n), add_special_tokens=not self.use_chat_template) for p, n in items]
        extra = {"step_tag_id": self.score_token_id} if self.step_pooling else {}
        params = PoolingParams(use_activation=False, **extra)
        outs = engine.llm.encode([TokensPrompt(prompt_token_ids=i) for i in ids], params,
                                 pooling_task="token_classify", use_tqdm=False)
        return [self._reduce(out.outputs.data, seq) for out, seq in zip(outs, ids)]

    def _reduce(self, rows: Any, seq: list[int]) -> float:
        import torch

        rows = rows.float().reshape(rows.shape[0], -1)
        if not self.step_pooling:
            rows = rows[torch.tensor(seq) == self.score_token_id]
        if rows.shape[0] == 0:
            raise ValueError(f"score token {self.score_token!r} not found in the PRM input")
        if self.activation == "softmax":
            rows = rows.softmax(-1)
        elif self.activation == "sigmoid":
            rows = rows.sigmoid()
        return float(aggregate(rows[:, self.label_index].tolist(), self.step_score))


class RewardActivation(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    softmax = "softmax"
    sigmoid = "sigmoid"
    none = "none"


@schema("prm", "vllm_reward", VLLMRewardPRM)
class VLLMRewardPRMConf(Component):
    """A PRM served by vLLM as a pooling model (:class:`VLLMRewardPRM`)."""

    model: str
    tokenizer: str | None
    revision: str | None
    trust_remote_code: bool
    dtype: ModelDtype
    tensor_parallel_size: int = num(ge=1)
    gpu_memory_utilization: float = num(gt=0, le=1)
    max_model_len: int | None = num(ge=1)
    enforce_eager: bool
    cpu_kv_space_gb: float | None = num(gt=0)
    in_process: bool | None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # any other vllm.LLM keyword
    share_engine: bool
    use_chat_template: bool
    system_prompt: str | None
    prompt_template: str
    step_separator: str
    step_join: str
    strip_steps: bool
    score_token: str | None  # None: step_separator
    label_index: int = num(ge=0)  # column of the head's output read as the step's score
    activation: RewardActivation
    step_score: Aggregation  # over the path's steps
