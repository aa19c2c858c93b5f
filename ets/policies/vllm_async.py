"""The vLLM policy on vLLM's asynchronous engine (``vllm.v1.engine.async_llm.AsyncLLM``):
a :class:`~ets.protocols.StreamingPolicy` for ``search.scheduler=async``.

``AsyncLLM`` runs the engine core in its own process and schedules continuously: a
request added while others are running joins the running batch at the next engine
step. The search submits one group of requests per problem (its next expansions) and
gets each group back as soon as all of it has finished, so the engine keeps generating
other problems' requests while this process scores and selects. ``AsyncLLM`` is driven
from an asyncio loop on a background thread; the search's thread only submits and waits.

Everything else (token-id prompts, sampling parameters with a seed per request, stop
strings kept, finish reasons, prompt formatting) is :class:`ets.policies.vllm.VLLMPolicy`'s;
per-request seeds (vLLM gives child ``i`` of a request the seed ``seed + i``) make the
samples independent of what else is in the batch, as with the offline engine.
Select it with ``policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy`` on any vLLM
preset. Works with the ``AsyncLLM`` of vLLM 0.26 and 0.32 (same ``from_engine_args`` and
``generate(prompt, sampling_params, request_id)``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ets.policies.vllm import VLLMPolicy, context_finish, seeded_sampling_options, supported_options
from ets.policies.vllm_frontend import RemoteAsyncLLM
from ets.types import Generation, GenRequest

log = logging.getLogger("ets.policies.vllm_async")


def new_async_llm(model: str, options: dict[str, Any]) -> Any:
    """vLLM's ``AsyncLLM`` for ``model`` with ``options`` (``EngineArgs`` keys the installed
    vLLM knows), called on the event loop that will drive it: this policy's, or the
    front-end process's (:mod:`ets.policies.vllm_frontend`)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext
    from vllm.v1.engine.async_llm import AsyncLLM

    from ets.policies.vllm_decode import install_raw_logprobs
    from ets.policies.vllm_scheduler import with_step_float_scheduler

    # the engine core sends step-logprob-only requests' log-probabilities as floats
    # (ets.policies.vllm_scheduler), which the raw-logprob decoder installed below reads
    options = with_step_float_scheduler(options)
    # LLM_CLASS: the offline batch defaults (max_num_seqs 1024 and 16k batched tokens on
    # an H100/H200) rather than the small ENGINE_CONTEXT ones.
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=model, **options),
                                       usage_context=UsageContext.LLM_CLASS)
    import vllm.envs

    # What vLLM's own server does once started: read VLLM_* variables once, not on every
    # output step (os.getenv per step was ~5% of the process in a profile). A batch engine
    # started later resets it (ets.policies.vllm.get_engine).
    if hasattr(vllm.envs, "enable_envs_cache"):
        vllm.envs.enable_envs_cache()
    # the step log-probabilities decoded from their bytes, not as three arrays per request
    # and step (ets.policies.vllm_decode; the same numbers)
    install_raw_logprobs(engine.engine_core)
    return engine


async def final_output(engine: Any, prompt: Any, params: Any, request_id: str) -> Any:
    """The last (final-only: the one) output ``AsyncLLM.generate`` yields for a request."""
    final = None
    async for out in engine.generate(prompt, params, request_id):
        final = out
    return final


class AsyncBatchEngine:
    """What the replay (:mod:`ets.rundir.replay`) reads of an engine, on an
    :class:`AsyncVLLMPolicy`'s ``AsyncLLM``, so that a search's raw engine bound (the same
    requests as one plain batch) runs on the engine the search used: ``generate`` sends
    every request at once and gathers the final outputs in order (``LLM.generate``'s
    contract); ``llm.reset_prefix_cache()``; ``llm.llm_engine.model_config``. The
    ``AsyncLLM`` runs without stat loggers, so there are no KV samples and no preemption
    or prefix-cache counters (the replay reports 0 for them)."""

    block_size = 16
    blocks = 1
    kv_capacity = 0.0
    samples: tuple[float, ...] = ()

    def __init__(self, policy: AsyncVLLMPolicy) -> None:
        self._policy = policy

    @property
    def llm(self) -> AsyncBatchEngine:
        return self

    @property
    def llm_engine(self) -> Any:
        self._policy._start()
        return self._policy._async

    def reset_prefix_cache(self) -> None:
        self._policy._call(self.llm_engine.reset_prefix_cache())

    def metrics(self) -> dict[str, float]:
        return {}

    def generate(self, prompts: Sequence[Any], sampling: Sequence[Any]) -> list[Any]:
        return self._policy._call(self.agenerate(prompts, sampling))

    async def agenerate(self, prompts: Sequence[Any], sampling: Sequence[Any]) -> list[Any]:
        """``generate`` as a coroutine on the engine's loop: every request sent at once,
        final outputs gathered in order."""
        from vllm.sampling_params import RequestOutputKind

        self._policy._start()
        base = uuid.uuid4().hex  # request ids unique across calls and engines of this policy
        for params in sampling:
            params.output_kind = RequestOutputKind.FINAL_ONLY
        return await self._policy._outputs([(p, sp, f"replay-{base}-{i}")
                                            for i, (p, sp) in enumerate(zip(prompts, sampling))])

    def run_chains(self, chains: Sequence[Callable[[], Awaitable[None]]], concurrency: int) -> None:
        """Run coroutine functions on the engine's loop, ``concurrency`` at a time, started
        in order (the next as soon as one ends: problems joining the pool). The chains
        replay (:meth:`ets.rundir.replay.Replayer.run_chains`)."""
        self._policy._start()
        pending = iter(chains)

        async def worker() -> None:  # each free worker takes the next chain: start order kept
            for make in pending:
                await make()

        async def every() -> None:
            await asyncio.gather(*(worker() for _ in range(concurrency)))

        self._policy._call(every())


class AsyncVLLMPolicy(VLLMPolicy):
    """:class:`VLLMPolicy` with ``submit``/``wait`` on vLLM's ``AsyncLLM`` (same arguments;
    ``share_engine`` is not used: each policy owns its engine)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._async: Any = None  # AsyncLLM, or RemoteAsyncLLM (frontend_process)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._done: queue.Queue[tuple[int, list[Any] | BaseException]] = queue.Queue()
        self._groups: dict[int, tuple[list[GenRequest], list[int]]] = {}  # ticket: (requests, rooms)
        self._ticket = 0
        self._limit: int | None = None  # max_model_len, known once the engine has started
        self.stats.update({"submitted_groups": 0, "engine_start_s": 0.0, "engine_busy_s": 0.0})
        # Engine busy time: seconds with at least one group in flight (the engine has work),
        # as opposed to ``generate_s``, the seconds the search thread spent blocked in wait().
        self._busy_lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0

    # -- engine -----------------------------------------------------------------------------
    def _start(self) -> None:
        if self._async is not None:
            return
        from ets.models import resolve_model

        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # see vllm.get_engine
        os.environ.update({k: v for k, v in self.env.items() if v is not None})
        options = {k: v for k, v in self.options.items() if v is not None}
        if options.get("tokenizer"):
            options["tokenizer"] = resolve_model(options["tokenizer"], key="policy.tokenizer")
        model = resolve_model(self.model, self.revision, key="policy.model")
        # No stat loggers: this policy reads none of vLLM's gauges (engine_metrics is its own
        # counters), and on an H200 they cost ~12% of this process's CPU time in a cProfile
        # of an ETS search (update_from_output, the loggers' record, prometheus), time the
        # output handler takes from the search thread under the GIL.
        options = supported_options(seeded_sampling_options({**options, "disable_log_stats": True}))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="vllm-async", daemon=True)
        self._thread.start()

        async def make() -> Any:  # created on the loop that will drive it
            return new_async_llm(model, options)

        start = time.perf_counter()
        if self.uses_frontend_process():  # AsyncLLM and its output handler in a child process
            # (the spawned child inherits this environment, self.env included)
            self._async = RemoteAsyncLLM(model, options, self._loop)
        else:
            self._async = asyncio.run_coroutine_threadsafe(make(), self._loop).result()
        self.stats["engine_start_s"] = time.perf_counter() - start
        # the engine's context limit (the model's, unless policy.max_model_len sets it)
        self._limit = self.max_model_len or getattr(getattr(self._async, "model_config", None),
                                                    "max_model_len", None)
        log.info("vLLM AsyncLLM for %s started in %.1fs", model, self.stats["engine_start_s"])

    def uses_frontend_process(self) -> bool:
        """``frontend_process``, or for ``None`` whether vLLM's platform is CUDA (read
        through NVML, without creating a CUDA context in this process)."""
        if self.frontend_process is not None:
            return bool(self.frontend_process)
        from vllm.platforms import current_platform

        return bool(current_platform.is_cuda())

    def _call(self, coro: Any) -> Any:
        """Run a coroutine on the engine's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def engine(self) -> AsyncBatchEngine:  # type: ignore[override]
        """The ``AsyncLLM`` as a batch engine for the replay (not the offline engine: this
        policy starts no second engine)."""
        self._start()
        return AsyncBatchEngine(self)

    def start_engine(self) -> float:
        """Start the ``AsyncLLM`` now; returns the seconds that took (0 when it was running)."""
        started = time.perf_counter()
        self._start()
        return time.perf_counter() - started

    def close(self) -> None:
        if self._async is not None:
            self._async.shutdown()
            self._async = None
        if self._loop is not None:
            async def drain() -> None:  # let the engine's cancelled tasks finish cleanly
                tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(drain(), self._loop).result(timeout=30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop = None
        super().close()

    # -- StreamingPolicy --------------------------------------------------------------------
    def submit(self, requests: Sequence[GenRequest]) -> int:
        """Queue a group; it comes back from :meth:`wait` once every request is done."""
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        self._start()
        self._ticket += 1
        ticket = self._ticket
        rooms = [self._room(req, self._limit) for req in requests]
        self._groups[ticket] = (list(requests), rooms)  # wait() reads the rooms back
        jobs = []
        for i, (req, room) in enumerate(zip(requests, rooms)):
            if room <= 0:
                jobs.append(None)
                continue
            # The same parameters as the batch engine (the step-logprob-only path included:
            # without it vLLM builds a logprob entry per generated token), final outputs only.
            params = self._sampling_params(req, room, output_kind=RequestOutputKind.FINAL_ONLY)
            jobs.append((TokensPrompt(prompt_token_ids=list(req.context_ids)), params, f"{ticket}-{i}"))
        self.stats["submitted_groups"] += 1
        self.stats["requests"] += sum(j is not None for j in jobs)
        assert self._loop is not None
        with self._busy_lock:
            if self._in_flight == 0:
                self._busy_since = time.perf_counter()
            self._in_flight += 1
        asyncio.run_coroutine_threadsafe(self._run_group(ticket, jobs), self._loop)
        return ticket

    async def _outputs(self, jobs: list[Any]) -> list[Any]:
        """The final output of each ``(prompt, params, request_id)`` job (``None`` for
        ``None``), from the ``AsyncLLM`` here or the front-end process."""
        if isinstance(self._async, RemoteAsyncLLM):
            return await self._async.run_jobs(jobs)

        async def one(job: Any) -> Any:
            return None if job is None else await final_output(self._async, *job)

        return list(await asyncio.gather(*(one(j) for j in jobs)))

    async def _run_group(self, ticket: int, jobs: list[Any]) -> None:
        try:
            result: list[Any] | BaseException = await self._outputs(jobs)
        except BaseException as exc:  # surfaced in the search's thread by wait()
            result = exc
        with self._busy_lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.stats["engine_busy_s"] += time.perf_counter() - self._busy_since
        self._done.put((ticket, result))

    def wait(self) -> list[tuple[int, list[list[Generation]]]]:
        """Block until a group is done; return it and every other group done by then."""
        if not self._groups:
            return []
        start = time.perf_counter()
        done = [self._done.get()]
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.stats["generate_s"] += time.perf_counter() - start  # time blocked on the engine
        self.stats["generate_calls"] += 1
        out = []
        for ticket, results in done:
            requests, rooms = self._groups.pop(ticket)
            if isinstance(results, BaseException):
                raise RuntimeError(f"vLLM AsyncLLM failed on a request group: {results}") from results
            gens = []
            for req, room, result in zip(requests, rooms, results):
                if result is None:  # the context already fills the model
                    gens.append([Generation("", (), 0.0, "context") for _ in range(req.n)])
                    continue
                self.stats["request_cached_tokens"] += result.num_cached_tokens or 0
                self.stats["request_prompt_tokens"] += len(req.context_ids)
                gens.append([context_finish(g, room, req.max_tokens) for g in self._generations(req, result.outputs)])
            out.append((ticket, gens))
        return out

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """The lockstep path on the same engine: one group, waited for."""
        ticket = self.submit(requests)
        pending: dict[int, list[list[Generation]]] = {}
        while ticket not in pending:
            pending.update(self.wait())
        return pending[ticket]

    def engine_metrics(self) -> dict[str, float]:
        """This policy's own counters (the offline engine's KV gauges are not read here)."""
        return {k: float(v) for k, v in self.stats.items()}

    def reset_engine_state(self) -> None:
        self.stats = dict.fromkeys(self.stats, 0)
        self.stats["generate_s"] = self.stats["engine_busy_s"] = 0.0
        if self._async is not None and self._loop is not None:
            self._call(self._async.reset_prefix_cache())
