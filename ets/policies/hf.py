"""The transformers policy: batched ``generate`` with a seed per child, stop strings and logprobs.

Every child of every request becomes one row; rows are sorted by context length, cut
into batches of ``batch_size`` and left-padded. Sampling and stopping are done by two
small hooks into ``generate`` so that each row behaves as if it ran alone:

- :class:`_RowSampler` draws each row's token with that row's own ``torch.Generator``
  (seeded from the request seed and the child index), so a child's tokens do not
  depend on which other rows share its batch, and records the token's log-probability
  under the model (raw logits, before temperature and top-p — what vLLM reports too).
- :class:`_RowStopper` ends a row at its own ``max_tokens``, at an EOS token, or at
  the token that completes one of its stop strings in the *generated* text (a stop
  string spanning the context and the output does not count, as in vLLM).

What is deterministic: the same requests (contexts, ``n``, ``max_tokens``, stop
strings, seeds) on the same device, dtype and library versions give identical
outputs. Changing the batch composition (other requests, ``batch_size``) changes
padding, which may perturb logits in the last float bits and, rarely, flip a sampled
token; on CPU float32 we have not seen it happen. ``temperature: 0`` is greedy.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ets.models import ModelUnavailable, resolve_model
from ets.policies.formatting import PromptedPolicyConf, PromptFormatter
from ets.schema import ModelDtype, num, schema
from ets.types import Generation, GenRequest, Problem, Prompt

log = logging.getLogger("ets.policies.hf")
_PREFIX_TOKENS = 4  # context tokens decoded with each output so leading spaces survive
_NEG_INF = float("-inf")


@dataclass
class _Row:
    request: int
    child: int
    context: tuple[int, ...]
    max_tokens: int
    stop: tuple[str, ...]
    seed: int
    temperature: float | None = None  # None: the policy's


def child_seed(request_seed: int, child: int) -> int:
    """The sampling seed of child ``child`` of a request (stable, batch-independent)."""
    return (request_seed * 1_000_003 + child) & 0x7FFF_FFFF_FFFF_FFFF


class _RowSampler:
    """A logits processor that samples each row with its own generator (or greedily).

    Not a subclass of transformers' ``LogitsProcessor`` (nor ``_RowStopper`` of
    ``StoppingCriteria``): ``generate`` only calls them, and this module must import
    without torch (``ets.config.register_configs`` imports it for its schema).
    """

    def __init__(self, seeds: Sequence[int], temperature: float | Sequence[float], top_p: float,
                 device: Any) -> None:
        import torch  # OMP_WAIT_POLICY is set in ets/__init__.py, before any torch import

        # One temperature for every row, or one per row (requests may ask for greedy steps).
        self.temperature: float | list[float] = (
            temperature if isinstance(temperature, (int, float)) else list(temperature))
        self.top_p = top_p
        self.generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        self.logprobs: list[Any] = []  # one [rows] tensor per step: log p(chosen token)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        logp = torch.log_softmax(scores.float(), dim=-1)
        if isinstance(self.temperature, list):
            chosen = logp.argmax(dim=-1)
            for i, t in enumerate(self.temperature):
                if t > 0:
                    chosen[i] = self._sample(scores[i:i + 1], t, [self.generators[i]])[0]
        elif self.temperature <= 0:
            chosen = logp.argmax(dim=-1)
        else:
            chosen = self._sample(scores, self.temperature, self.generators)
        self.logprobs.append(logp.gather(-1, chosen[:, None])[:, 0])
        out = torch.full_like(scores, _NEG_INF)
        return out.scatter(-1, chosen[:, None], 0.0)

    def _sample(self, scores: Any, temperature: float, generators: Sequence[Any]) -> Any:
        import torch

        probs = torch.softmax(scores.float() / temperature, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(dim=-1) - sorted_p >= self.top_p  # keeps at least one
            probs = probs.scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        return torch.stack([torch.multinomial(probs[i], 1, generator=g)[0]
                            for i, g in enumerate(generators)])


class _RowStopper:
    """A stopping criterion with a per-row token limit, EOS set and stop strings."""

    def __init__(self, tokenizer: Any, start: int, rows: Sequence[_Row], eos: set[int]) -> None:
        self.tokenizer, self.start, self.rows, self.eos = tokenizer, start, rows, eos
        longest = max((len(s) for r in rows for s in r.stop), default=0)
        self.window = 2 * longest + 8  # tokens decoded per check: covers any stop string
        self.ended: list[tuple[int, str] | None] = [None] * len(rows)

    def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
        import torch

        n = input_ids.shape[1] - self.start
        for i, row in enumerate(self.rows):
            if self.ended[i] is None and n > 0:
                self.ended[i] = self._check(input_ids[i], row, n)
        return torch.tensor([e is not None for e in self.ended], device=input_ids.device)

    def _check(self, ids: Any, row: _Row, n: int) -> tuple[int, str] | None:
        if int(ids[-1]) in self.eos:
            return n, "eos"
        if row.stop:
            tail = ids[max(self.start, ids.shape[0] - self.window):].tolist()
            text = self.tokenizer.decode(tail, skip_special_tokens=True)
            if any(s in text for s in row.stop):
                return n, "stop"
        return (n, "length") if n >= row.max_tokens else None


class HFPolicy:
    """A causal LM run with transformers.

    Args:
        model: Hub id, local folder, or ``smollm2`` (the embedded SmolLM2-135M-Instruct).
        tokenizer: Tokenizer folder or hub id (``None`` = ``model``).
        step_delimiter: Ends a reasoning step (the step expander's stop string).
        answer_markers: How the search loop extracts final answers (``ets.core.answers``).
        use_chat_template, prompt_template, system_prompt, chat_template_kwargs,
            response_prefix: The root prompt, built by
            :class:`~ets.policies.formatting.PromptFormatter` exactly as the vLLM and
            OpenAI policies build it (``{question}`` is replaced; other braces stay).
        temperature: Sampling temperature (0 = greedy).
        top_p: Nucleus sampling mass.
        device: ``cpu``, ``cuda``, ``cuda:1`` or ``auto`` (accelerate's device map).
        dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto``.
        batch_size: Rows (children) per ``generate`` call.
        revision, trust_remote_code: Passed to ``from_pretrained``.

    Raises:
        ModelUnavailable: the model cannot be found (the message names it and says
            what to do); raised at construction, before any problem is searched. The
            weights themselves load on the first ``generate``.
    """

    def __init__(
        self, model: str = "smollm2", tokenizer: str | None = None, step_delimiter: str = "\n\n",
        answer_markers: Sequence[str] = ("boxed", "The answer is"), use_chat_template: bool = True,
        prompt_template: str = "{question}", system_prompt: str | None = None,
        chat_template_kwargs: dict[str, Any] | None = None, response_prefix: str = "",
        temperature: float = 1.0, top_p: float = 1.0, device: str = "cpu", dtype: str = "float32",
        batch_size: int = 32, revision: str | None = None, trust_remote_code: bool = False,
    ) -> None:
        self.name, self.path = model, resolve_model(model, revision)
        self.step_delimiter, self.answer_markers = step_delimiter, list(answer_markers)
        self.temperature, self.top_p, self.batch_size = temperature, top_p, batch_size
        self.device, self.dtype = device, str(getattr(dtype, "value", dtype))
        self._load_kw = {"revision": revision, "trust_remote_code": trust_remote_code}
        self.formatter = PromptFormatter(
            tokenizer or self.path, use_chat_template=use_chat_template, prompt_template=prompt_template,
            system_prompt=system_prompt, chat_template_kwargs=chat_template_kwargs,
            response_prefix=response_prefix, revision=revision, trust_remote_code=trust_remote_code,
            key="policy.tokenizer" if tokenizer else "policy.model",
        )
        self.tokenizer = self._tokenizer()
        self._model: Any = None
        self._context_limit: int | None = None
        self.eos_ids: set[int] = set()

    # ---- loading ----------------------------------------------------------------------
    def _tokenizer(self) -> Any:
        try:
            tok = self.formatter.tokenizer
        except ModelUnavailable:
            raise
        except Exception as exc:  # missing files, bad id, no tokenizer in the folder
            raise ModelUnavailable(
                f"policy.model={self.name!r}: could not load its tokenizer from {self.formatter.name} "
                f"({type(exc).__name__}: {exc}). Download it where the hub is reachable and set "
                "policy.model=/path/to/folder, or run the embedded default (policy=smollm2)."
            ) from exc
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return tok

    @property
    def model(self) -> Any:
        """The weights, loaded on first use (construction only checks that they exist)."""
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig

        dtype = self.dtype if self.dtype == "auto" else getattr(torch, self.dtype)
        kw: dict[str, Any] = {"dtype": dtype, **self._load_kw}
        if self.device == "auto":
            kw["device_map"] = "auto"
        log.info("loading %s (%s, %s)", self.path, self.device, self.dtype)
        model = AutoModelForCausalLM.from_pretrained(self.path, **kw)
        if self.device != "auto":
            model = model.to(self.device)
        eos = model.generation_config.eos_token_id
        self.eos_ids = {*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                        self.tokenizer.eos_token_id}
        # Only our temperature/top_p apply: the hub's sampling defaults (and penalties) are dropped.
        model.generation_config = GenerationConfig(
            bos_token_id=model.generation_config.bos_token_id, eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
        )
        return model.eval()

    # ---- protocol ---------------------------------------------------------------------
    def format_prompt(self, problem: Problem) -> Prompt:
        return self.formatter(problem)

    def context_limit(self) -> tuple[int | None, str]:
        """(the model's context length, where it comes from): ``max_position_embeddings``
        of its config (read without loading the weights)."""
        if self._context_limit is None:
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(self.path, **self._load_kw)
            self._context_limit = int(getattr(config, "max_position_embeddings", 0) or 0)
        return (self._context_limit or None), "the model's max_position_embeddings"

    def generate(self, requests: Sequence[GenRequest]) -> list[list[Generation]]:
        limit = self.context_limit()[0]
        rows = [_Row(i, j, tuple(r.context_ids), self._room(r, limit), tuple(r.stop), child_seed(r.seed, j),
                     r.temperature) for i, r in enumerate(requests) for j in range(r.n)]
        out: list[list[Any]] = [[None] * r.n for r in requests]
        for row in [r for r in rows if r.max_tokens <= 0]:
            full = limit is not None and len(row.context) >= limit  # nothing more fits the model
            out[row.request][row.child] = Generation("", (), 0.0, "context" if full else "length")
        rows = sorted((r for r in rows if r.max_tokens > 0), key=lambda r: -len(r.context))
        for b in range(0, len(rows), self.batch_size):
            batch = rows[b:b + self.batch_size]
            for row, gen in zip(batch, self._generate_batch(batch)):
                if gen.finish_reason == "length" and row.max_tokens < requests[row.request].max_tokens:
                    gen.finish_reason = "context"  # stopped by the model's context, not the step limit
                out[row.request][row.child] = gen
        return out

    @staticmethod
    def _room(request: GenRequest, limit: int | None) -> int:
        """Tokens the row may generate: its ``max_tokens``, capped by the context left."""
        return request.max_tokens if limit is None else min(request.max_tokens, limit - len(request.context_ids))

    # ---- one batch --------------------------------------------------------------------
    def _generate_batch(self, rows: Sequence[_Row]) -> list[Generation]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        model = self.model
        width = max(len(r.context) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r.context)) + list(r.context) for r in rows])
        mask = torch.tensor([[0] * (width - len(r.context)) + [1] * len(r.context) for r in rows])
        device = model.device
        temps = [self.temperature if r.temperature is None else r.temperature for r in rows]
        sampler = _RowSampler([r.seed for r in rows], temps if any(r.temperature is not None for r in rows)
                              else self.temperature, self.top_p, device)
        stopper = _RowStopper(self.tokenizer, width, rows, self.eos_ids)
        max_new = max(r.max_tokens for r in rows)
        with torch.inference_mode():
            seqs = model.generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=False,
                max_new_tokens=max_new, logits_processor=LogitsProcessorList([sampler]),
                stopping_criteria=StoppingCriteriaList([stopper]),
            )
        logps = torch.stack(sampler.logprobs, dim=1).double().cpu() if sampler.logprobs else None
        gens = []
        for i, row in enumerate(rows):
            n, reason = stopper.ended[i] or (max_new, "length")
            tokens = tuple(seqs[i, width:width + n].tolist())
            logprob = float(logps[i, :n].sum()) if logps is not None else 0.0
            gens.append(Generation(self._decode(row.context, tokens), tokens, logprob, reason))
        return gens

    def _decode(self, context: Sequence[int], tokens: Sequence[int]) -> str:
        """The text of ``tokens`` as it reads after ``context`` (keeps a leading space)."""
        prefix = list(context[-_PREFIX_TOKENS:])
        head = self.tokenizer.decode(prefix, skip_special_tokens=True)
        full = self.tokenizer.decode(prefix + list(tokens), skip_special_tokens=True)
        if full.startswith(head):
            return full[len(head):]
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)


@schema("policy", "hf", HFPolicy)
class HFPolicyConf(PromptedPolicyConf):
    """The transformers policy (:class:`HFPolicy`). Its presets switch engine with
    ``policy._target_=ets.policies.vllm.VLLMPolicy`` (that class accepts and ignores
    ``device`` and ``batch_size``)."""

    model: str
    dtype: ModelDtype
    device: str  # cpu | cuda | cuda:N | auto (accelerate device map)
    batch_size: int = num(ge=1)  # children per generate call
