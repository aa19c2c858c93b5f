"""A policy behind an OpenAI-compatible completions endpoint (``vllm serve``, or any such server).

One search depth = one HTTP request per node to expand (``n`` children each), sent
concurrently from a thread pool; only the standard library is used. Prompts go out as
token ids where the server takes them (vLLM does), so the server sees exactly the tree's
tokens; otherwise as text. With ``send_token_ids`` null this is probed once, explicitly,
before the first call: one 1-token request with a token-id prompt. Any other 4xx
(context too long, a bad parameter, a wrong model name) is an error naming the server's
message, never a reason to switch to text.

The server's context length (``max_model_len`` in vLLM's ``/v1/models``) caps each
request as in the vLLM policy: a path whose context is full ends with reason ``context``.

With ``vllm_extensions`` (vLLM servers) the request also asks for the stop string in the
output and for the generated token ids, and ``stop_reason`` tells a stop string from EOS.
A plain OpenAI server says ``stop`` for both: then it is read as a stop string when the
request had any, and the output is re-tokenized locally.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ets.policies.formatting import PromptedPolicyConf, PromptFormatter
from ets.policies.vllm import COUNTERS, context_finish, map_finish_reason
from ets.schema import num, schema
from ets.types import Generation, GenRequest, Problem, Prompt

log = logging.getLogger("ets.policies.openai")


class RequestRejected(RuntimeError):
    """The server answered a request with a 4xx; the message has its code and explanation."""

    def __init__(self, url: str, code: int, detail: str) -> None:
        super().__init__(f"{url} rejected the request (HTTP {code}): {detail}")
        self.code, self.detail = code, detail


def _detail(exc: urllib.error.HTTPError) -> str:
    """The server's explanation of an HTTP error (OpenAI-style ``{"error": {"message"}}``)."""
    try:
        body = exc.read().decode(errors="replace")
    except Exception:  # noqa: BLE001 - the status line is enough
        return str(exc.reason)
    try:
        error = json.loads(body).get("error", body)
        return str(error.get("message", error) if isinstance(error, dict) else error)[:500]
    except (ValueError, AttributeError):
        return body[:500] or str(exc.reason)
_METRIC = re.compile(r"^vllm:(\w+?)(?:_total)?(\{[^}]*\})? (\S+)$", re.M)


class OpenAIPolicy:
    """A policy LLM served over HTTP.

    Args:
        model: Model name on the server (for ``vllm serve DIR`` that is ``DIR``).
        base_url: The API root, e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: Name of the environment variable holding the API key (never the key).
        tokenizer: Local tokenizer of the served model (``None`` = ``model``).
        timeout_s: Per HTTP request.
        concurrency: HTTP requests in flight.
        send_token_ids: Send prompts as token ids (``None``: probe the server once).
        vllm_extensions: Ask for vLLM's extra fields (stop string kept, token ids returned).
        max_retries: Retries of a request after a connection error or a 5xx.
        metrics: Read vLLM's Prometheus ``/metrics`` for :meth:`engine_metrics`.
        revision, trust_remote_code, use_chat_template, prompt_template, system_prompt,
            chat_template_kwargs, response_prefix: The root prompt (see
            :class:`~ets.policies.formatting.PromptFormatter`).
        temperature, top_p, step_delimiter, answer_markers: As for the vLLM policy.
    """

    def __init__(
        self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str | None = "OPENAI_API_KEY",
        tokenizer: str | None = None, timeout_s: float = 600.0, concurrency: int = 16,
        send_token_ids: bool | None = None, vllm_extensions: bool = True, max_retries: int = 2,
        metrics: bool = False, revision: str | None = None, trust_remote_code: bool = False,
        use_chat_template: bool = True, prompt_template: str = "{question}", system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None, response_prefix: str = "",
        temperature: float = 1.0, top_p: float = 1.0, step_delimiter: str = "\n\n",
        answer_markers: Sequence[str] = ("boxed", "The answer is"),
    ) -> None:
        self.model, self.base_url = model, base_url.rstrip("/")
        self.api_key_env, self.timeout_s, self.concurrency = api_key_env, timeout_s, concurrency
        self.send_token_ids, self.vllm_extensions, self.max_retries = send_token_ids, vllm_extensions, max_retries
        self.metrics, self.temperature, self.top_p = metrics, temperature, top_p
        self.step_delimiter, self.answer_markers = step_delimiter, list(answer_markers)
        self.formatter = PromptFormatter(tokenizer or model, use_chat_template, prompt_template, system_prompt,
                                         chat_template_kwargs, response_prefix, revision, trust_remote_code)
        self._base: dict[str, float] | None = None
        self._max_model_len: int | None = None
        self._probed = False
        self._kv: list[float] = []
        self.stats = {"generate_calls": 0, "generate_s": 0.0, "requests": 0}

    def format_prompt(self, problem: Problem) -> Prompt:
        return self.formatter(problem)

    # -- HTTP ---------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.api_key_env or "", "")
        return {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}

    def _call(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON; retries connection errors and 5xx."""
        data = json.dumps(body).encode()
        for attempt in range(self.max_retries + 1):
            request = urllib.request.Request(self.base_url + path, data=data, headers=self._headers())
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    return json.loads(response.read().decode())
            except urllib.error.HTTPError as exc:
                if exc.code < 500:
                    raise RequestRejected(self.base_url + path, exc.code, _detail(exc)) from exc
                if attempt == self.max_retries:
                    raise
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                if attempt == self.max_retries:
                    raise ConnectionError(
                        f"Cannot reach the OpenAI-compatible server at {self.base_url} "
                        f"({getattr(exc, 'reason', exc)}): start one (e.g. python -m "
                        "vllm.entrypoints.openai.api_server --model ...) or set policy.base_url."
                    ) from exc
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _body(self, req: GenRequest, as_ids: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model, "prompt": list(req.context_ids) if as_ids else req.context_text,
            "n": req.n, "max_tokens": req.max_tokens,
            "temperature": self.temperature if req.temperature is None else req.temperature, "top_p": self.top_p,
            "seed": req.seed, "logprobs": 0,
        }
        if req.stop:
            body["stop"] = list(req.stop)
        if self.vllm_extensions:
            body.update(include_stop_str_in_output=True, return_token_ids=True)
        return body

    def probe(self) -> None:
        """Once: read the server's context length and, if ``send_token_ids`` is null, whether
        it takes token-id prompts (a 1-token request; a 4xx other than auth / not found
        means it does not)."""
        if self._probed:
            return
        self._probed = True
        try:
            models = self._call_get("/models").get("data", [])
            entry = next((m for m in models if m.get("id") == self.model), None)
            if entry is not None and entry.get("max_model_len"):
                self._max_model_len = int(entry["max_model_len"])
        except (RequestRejected, urllib.error.HTTPError, ValueError, AttributeError):
            self._max_model_len = None  # not an OpenAI-compatible /models: no cap known
        if self.send_token_ids is not None:
            return
        ids = self.formatter.tokenizer.encode("1 + 1 =", add_special_tokens=False)
        body = {"model": self.model, "prompt": list(ids), "max_tokens": 1, "temperature": 0.0}
        try:
            self._call("/completions", body)
            self.send_token_ids = True
        except RequestRejected as exc:
            if exc.code in (401, 403, 404):  # auth or a wrong model name: not about token ids
                raise
            log.warning("%s does not take token-id prompts (HTTP %d: %s): prompts are sent as text and "
                        "re-tokenised by the server", self.base_url, exc.code, exc.detail)
            self.send_token_ids = False
        log.info("%s: token-id prompts %s", self.base_url, "on" if self.send_token_ids else "off")

    def _call_get(self, path: str) -> Any:
        request = urllib.request.Request(self.base_url + path, headers=self._headers())
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read().decode())
        except urllib.error.HTTPError as exc:
            raise RequestRejected(self.base_url + path, exc.code, _detail(exc)) from exc

    def context_limit(self) -> tuple[int | None, str]:
        """(the server's context length, where it comes from), from ``/v1/models``."""
        try:
            self.probe()
        except (ConnectionError, OSError, RequestRejected):
            return None, "the server's max_model_len"
        return self._max_model_len, "the server's max_model_len (vllm serve --max-model-len)"

    def _complete(self, req: GenRequest) -> list[Generation]:
        limit = self._max_model_len
        room = req.max_tokens if limit is None else min(req.max_tokens, limit - len(req.context_ids))
        if room <= 0:  # the context already fills the model: nothing more can be written
            return [Generation("", (), 0.0, "context") for _ in range(req.n)]
        body = self._body(req, as_ids=bool(self.send_token_ids))
        body["max_tokens"] = room
        return [context_finish(g, room, req.max_tokens) for g in self._generations(req, self._call("/completions", body))]

    def _generations(self, req: GenRequest, response: dict[str, Any]) -> list[Generation]:
        out = []
        for choice in sorted(response["choices"], key=lambda c: c.get("index", 0)):
            text = choice.get("text") or ""
            # A plain OpenAI server sends no stop_reason: "stop" is then a stop string if the request had any.
            reason = map_finish_reason(choice.get("finish_reason"),
                                       choice.get("stop_reason", "?" if req.stop else None))
            ids = choice.get("token_ids")
            if ids is None:
                ids = self.formatter.tokenizer.encode(text, add_special_tokens=False)
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or []
            out.append(Generation(text, tuple(ids), float(sum(lp for lp in logprobs if lp is not None)), reason))
        return out

    # -- Policy protocol ----------------------------------------------------------------------
    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        """All requests concurrently; ``requests[i].n`` generations each, in order."""
        self.probe()
        if self.metrics and self._base is None:
            self._base = self._scrape()[0]
        start, done = time.perf_counter(), threading.Event()
        watcher = threading.Thread(target=self._watch_kv, args=(done,), daemon=True) if self.metrics else None
        if watcher is not None:
            watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                results = list(pool.map(self._complete, requests))
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
        self.stats["generate_s"] += time.perf_counter() - start
        self.stats["generate_calls"] += 1
        self.stats["requests"] += len(requests)
        return results

    # -- engine metrics (vLLM servers) --------------------------------------------------------------
    def _scrape(self) -> tuple[dict[str, float], float, float]:
        """(counters, KV usage fraction, KV capacity in tokens) from ``/metrics``."""
        text = self._call_root("/metrics")
        values: dict[str, float] = {}
        capacity = 0.0
        for name, labels, value in _METRIC.findall(text):
            if name == "cache_config_info":
                info = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                if info.get("num_gpu_blocks", "None").isdigit():
                    capacity = float(info["num_gpu_blocks"]) * float(info.get("block_size", 0))
            elif name in (*COUNTERS, "kv_cache_usage_perc"):
                values[name] = values.get(name, 0.0) + float(value)
        return {k: values.get(k, 0.0) for k in COUNTERS}, values.get("kv_cache_usage_perc", 0.0), capacity

    def _call_root(self, path: str) -> str:
        root = self.base_url.removesuffix("/v1")
        with urllib.request.urlopen(root + path, timeout=self.timeout_s) as response:
            return response.read().decode()

    def _watch_kv(self, done: threading.Event) -> None:
        """Samples the server's KV gauge while a call runs (it reads 0 once requests finish)."""
        self._kv = []
        while True:
            _, usage, capacity = self._scrape()
            self._kv.append(usage * capacity)
            if done.wait(0.1):
                return

    def engine_metrics(self) -> dict[str, float]:
        """Server-side numbers since the first call (``metrics: true`` only)."""
        if not self.metrics or self._base is None:
            return {}
        counters, _, capacity = self._scrape()
        out = {k: v - self._base.get(k, 0.0) for k, v in counters.items()}
        kv = self._kv or [0.0]
        out.update(kv_tokens=max(kv), kv_tokens_mean=sum(kv) / len(kv), kv_capacity_tokens=capacity)
        out.update({k: float(v) for k, v in self.stats.items()})
        return out


@schema("policy", "openai", OpenAIPolicy)
class OpenAIPolicyConf(PromptedPolicyConf):
    """An OpenAI-compatible completions server (:class:`OpenAIPolicy`)."""

    base_url: str
    api_key_env: str | None  # the environment variable holding the key (never the key)
    timeout_s: float = num(gt=0)
    concurrency: int = num(ge=1)  # requests in flight
    send_token_ids: bool | None  # None: try token ids, fall back to text if the server refuses
    vllm_extensions: bool  # vLLM's extra fields (stop string kept, token ids returned)
    max_retries: int = num(ge=0)
    metrics: bool  # read the server's /metrics (vLLM) for engine KV numbers
