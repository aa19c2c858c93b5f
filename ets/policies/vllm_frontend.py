"""vLLM's ``AsyncLLM`` front end in a process of its own (``policy.frontend_process=true``).

``AsyncLLM`` runs its engine core in another process already, but its front end (the
output handler that decodes every engine step's outputs, detokenizes, applies stop
strings and sums the step log-probabilities) runs in the process that created it, on its
GIL. On an H200 with SmolLM2-135M that front end took 40.7 µs of this process's CPU per
generated token with the search's requests (11.5 without the step log-probability:
decoding vLLM's three per-request logprob arrays per engine step is most of it), i.e.
about half of one core at the search's ~13k tokens/s: the search thread's own Python
work (selection, the embedder's tokenizing) waits for the GIL meanwhile (README
"Performance on a GPU"). Here the ``AsyncLLM`` lives in a child process (spawned, as
vLLM's API server does) and this process sends it whole groups of requests and gets back
each request's final outputs: one message each way per group, not per token.

Protocol (tuples over a ``multiprocessing`` pipe; the child answers in any order):

- child → parent, once: ``("started", seconds, max_model_len, vocab_size)`` or
  ``("failed", message)``;
- parent → child: ``("generate", key, jobs)``, ``jobs`` a list of ``(prompt_token_ids,
  SamplingParams, request_id)`` or ``None``; child → parent: ``("done", key, results)``,
  each result ``None`` (no job) or ``(num_cached_tokens, [completion, ...])``, each
  completion ``(token_ids, text, cumulative_logprob, finish_reason, stop_reason)``; or
  ``("error", key, message)``;
- ``("reset_prefix_cache", key)`` → ``("done", key, None)``; ``("shutdown",)``.

The parent's side is :class:`RemoteAsyncLLM`, which
:class:`ets.policies.vllm_async.AsyncVLLMPolicy` drives like an ``AsyncLLM``.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import sys
import threading
import time
from typing import Any

from ets.policies.vllm import install_step_logprob_only, step_logprob


def completion_tuple(c: Any) -> tuple[tuple[int, ...], str, float, str | None, Any]:
    """What the parent reads of a vLLM ``CompletionOutput`` (the step log-probability as
    :func:`ets.policies.vllm.step_logprob` reads it, here where the entries are)."""
    return tuple(c.token_ids), c.text, step_logprob(c), c.finish_reason, c.stop_reason


def serve(conn: Any, model: str, options: dict[str, Any]) -> None:
    """The child's main: start ``AsyncLLM``, then answer the parent until ``shutdown``
    (or until the parent's end of the pipe closes)."""
    try:
        from vllm.inputs import TokensPrompt

        from ets.policies.vllm_async import final_output, new_async_llm

        install_step_logprob_only()  # the marked requests' logprobs are summed here
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        start = time.perf_counter()
        engine = new_async_llm(model, options)
        config = engine.model_config
        conn.send(("started", time.perf_counter() - start, config.max_model_len, int(config.get_vocab_size())))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    send_lock = threading.Lock()

    def send(message: tuple) -> None:
        with send_lock:
            conn.send(message)

    async def generate(key: int, jobs: list[Any]) -> None:
        async def one(job: Any) -> Any:
            if job is None:
                return None
            ids, params, request_id = job
            out = await final_output(engine, TokensPrompt(prompt_token_ids=ids), params, request_id)
            return out.num_cached_tokens or 0, [completion_tuple(c) for c in out.outputs]

        try:
            results = list(await asyncio.gather(*(one(j) for j in jobs)))
        except BaseException as exc:  # noqa: BLE001
            send(("error", key, f"{type(exc).__name__}: {exc}"))
            return
        send(("done", key, results))

    async def reset(key: int) -> None:
        await engine.reset_prefix_cache()
        send(("done", key, None))

    def receive() -> None:  # blocking reads off the loop, each message handed to the loop
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                message = ("shutdown",)
            if message[0] == "shutdown":
                loop.call_soon_threadsafe(loop.stop)
                return
            coro = generate(*message[1:]) if message[0] == "generate" else reset(message[1])
            asyncio.run_coroutine_threadsafe(coro, loop)

    threading.Thread(target=receive, name="ets-frontend-recv", daemon=True).start()
    try:
        loop.run_forever()
    finally:
        engine.shutdown()
        conn.close()
        # Leave without the interpreter's teardown: the engine is shut down, and AsyncLLM's
        # __del__ would call shutdown again once module globals are gone (a TypeError logged
        # at every exit).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


class _ModelConfig:
    """What the parent reads of the child's ``model_config``."""

    def __init__(self, max_model_len: int, vocab_size: int) -> None:
        self.max_model_len, self._vocab = max_model_len, vocab_size

    def get_vocab_size(self) -> int:
        return self._vocab


class _Completion:
    """A ``CompletionOutput`` as the parent reads it."""

    __slots__ = ("token_ids", "text", "cumulative_logprob", "finish_reason", "stop_reason", "logprobs")

    def __init__(self, token_ids: tuple[int, ...], text: str, cumulative_logprob: float | None,
                 finish_reason: str | None, stop_reason: Any) -> None:
        self.token_ids, self.text, self.cumulative_logprob = token_ids, text, cumulative_logprob
        self.finish_reason, self.stop_reason, self.logprobs = finish_reason, stop_reason, None


class _Output:
    """A ``RequestOutput`` as the parent reads it."""

    __slots__ = ("num_cached_tokens", "outputs")

    def __init__(self, num_cached_tokens: int, outputs: list[_Completion]) -> None:
        self.num_cached_tokens, self.outputs = num_cached_tokens, outputs


class RemoteAsyncLLM:
    """The parent's handle on the child's ``AsyncLLM``: ``run_jobs`` and
    ``reset_prefix_cache`` are coroutines on the parent's event loop ``loop``, answered by
    a reader thread; ``model_config``; ``shutdown``."""

    def __init__(self, model: str, options: dict[str, Any], loop: asyncio.AbstractEventLoop) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # vLLM's own choice for CUDA
        self._conn, child = ctx.Pipe()
        # not a daemon: the child starts vLLM's engine-core process, which daemons may not
        self._process = ctx.Process(target=serve, args=(child, model, options), name="ets-vllm-frontend")
        self._process.start()
        child.close()
        try:
            message = self._conn.recv()
        except EOFError:  # the child died before it could say why
            message = ("failed", f"the process exited with code {self._process.exitcode}")
        if message[0] != "started":
            self._process.join(timeout=30)
            raise RuntimeError(f"vLLM front-end process failed to start the engine: {message[1]}")
        _, self.start_s, max_model_len, vocab = message
        self.model_config = _ModelConfig(max_model_len, vocab)
        self._loop = loop
        self._pending: dict[int, asyncio.Future] = {}
        self._lock, self._send_lock = threading.Lock(), threading.Lock()
        self._key = 0
        self._reader = threading.Thread(target=self._read, name="ets-frontend-read", daemon=True)
        self._reader.start()
        # before multiprocessing's own exit handler (atexit runs last-registered first), which
        # would join the child while it still waits on this end of the pipe
        atexit.register(self.shutdown)

    def _read(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):  # the child is gone: fail whatever waits
                for key in list(self._pending):
                    self._resolve(key, RuntimeError("the vLLM front-end process exited"))
                return
            kind, key, payload = message
            if kind == "error":
                self._resolve(key, RuntimeError(f"vLLM front-end process: {payload}"))
            elif payload is None:
                self._resolve(key, None)
            else:
                self._resolve(key, [None if r is None else
                                    _Output(r[0], [_Completion(*c) for c in r[1]]) for r in payload])

    def _resolve(self, key: int, value: Any) -> None:
        with self._lock:
            future = self._pending.pop(key, None)
        if future is None:
            return

        def settle() -> None:
            if future.done():  # cancelled meanwhile
                return
            if isinstance(value, BaseException):
                future.set_exception(value)
            else:
                future.set_result(value)

        self._loop.call_soon_threadsafe(settle)

    async def _ask(self, message: tuple) -> Any:
        future = self._loop.create_future()
        with self._lock:
            self._key += 1
            key = self._key
            self._pending[key] = future
        # not under self._lock: the reader takes it to resolve, and must keep reading
        # (else a full pipe could block both processes' sends)
        with self._send_lock:
            self._conn.send((message[0], key, *message[1:]))
        return await future

    async def run_jobs(self, jobs: list[Any]) -> list[Any]:
        """``jobs``: ``(TokensPrompt, SamplingParams, request_id)`` or ``None`` each; the
        final ``RequestOutput`` (as read here) of each, ``None`` for ``None``."""
        wire = [None if j is None else (list(j[0]["prompt_token_ids"]), j[1], j[2]) for j in jobs]
        return await self._ask(("generate", wire))

    async def reset_prefix_cache(self) -> None:
        await self._ask(("reset_prefix_cache",))

    def shutdown(self) -> None:
        atexit.unregister(self.shutdown)
        if self._conn.closed:
            return
        try:
            with self._send_lock:
                self._conn.send(("shutdown",))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=60)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=10)
        self._conn.close()
