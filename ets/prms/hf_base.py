"""Shared machinery of the transformers PRMs: offline-safe lazy loading and one batched forward.

Every transformers PRM turns ``(problem, path)`` into token ids that *end at its scoring
position* (the step tag, the separator, the token before the "+" answer, ...). Causal
attention makes the output there independent of anything after it, so cutting the
sequence there is exact, and the batch can then be read at each row's last real token:
``logits_to_keep`` computes the head only at those positions (never ``B x T x vocab``).
Padding is explicit (``attention_mask`` plus ``position_ids`` counted over real tokens),
so left and right padding give the same scores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from enum import Enum
from typing import Any

from ets.core.tree import Node
from ets.models import ModelUnavailable, resolve_model
from ets.schema import ModelDtype, num
from ets.types import Problem

log = logging.getLogger("ets.prms")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def _load(loader: Any, name: str, key: str, **kwargs: Any) -> Any:
    """``loader(resolve_model(name), **kwargs)``; unavailable models fail at once, named."""
    where = resolve_model(name, key=key)
    try:
        return loader(where, **kwargs)
    except OSError as exc:  # no network / gated repo / missing files
        raise ModelUnavailable(
            f"{key}={name!r} could not be loaded ({exc}). Download it where the hub is reachable "
            f"(huggingface-cli download {name}) and set {key}=/path/to/folder."
        ) from exc


def token_id(tokenizer: Any, text: str, role: str) -> int:
    """The id of ``text``, which must be exactly one token (no special tokens added)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"{role} {text!r} is {len(ids)} tokens {tokenizer.convert_ids_to_tokens(ids)} for this "
            "tokenizer; configure a string that is exactly one token"
        )
    return ids[0]


def steps_of(node: Node, strip: bool = True) -> list[str]:
    """Step texts of the path to ``node`` (root excluded), stripped of surrounding whitespace
    unless ``strip`` is false."""
    path = node.path()
    if not path:
        raise ValueError(f"node {node.id} is the root: there is no step to score")
    return [n.text.strip() if strip else n.text for n in path]


def last_index(ids: Sequence[int], token: int, what: str) -> int:
    """Index of the last occurrence of ``token`` in ``ids``."""
    for i in range(len(ids) - 1, -1, -1):
        if ids[i] == token:
            return i
    raise ValueError(f"{what} (token id {token}) not found in the tokenized PRM input")


def pair_probability(logits: Any, good: Sequence[int], bad: Sequence[int]) -> Any:
    """P(good) / (P(good) + P(bad)) from logits ``[B, V]``; with one id each this is the
    softmax over the two logits (any shared normaliser cancels)."""
    import torch

    return torch.sigmoid(
        torch.logsumexp(logits[:, list(good)], -1) - torch.logsumexp(logits[:, list(bad)], -1)
    )


def as_str(value: Any) -> str:
    """A config choice as a plain string (Hydra passes enum-typed fields as enum members)."""
    return str(value.value if isinstance(value, Enum) else value)


class HFPRM:
    """Base of the transformers PRMs.

    Subclasses implement :meth:`_encode` (token ids ending at the scoring position) and
    :meth:`_reduce` (outputs ``[B, C]`` at that position → scores ``[B]``); they may
    override :meth:`_load_model` and :meth:`_setup` (called once with the tokenizer).

    Args:
        model: Alias (``smollm2``), local folder, or hub id.
        tokenizer: Where to take the tokenizer from (default: ``model``).
        device: ``auto`` (CUDA if available), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``auto`` (bfloat16 on CUDA, float32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        batch_size: Sequences per forward pass (inputs are sorted by length first).
        padding_side: ``right`` or ``left``; scores do not depend on it.
    """

    def __init__(
        self,
        model: str,
        tokenizer: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        padding_side: str = "right",
    ) -> None:
        self.padding_side = as_str(padding_side)
        if self.padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dtype_name = as_str(dtype)
        if self.dtype_name not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.model_name, self.tokenizer_name = model, tokenizer or model
        self.device_name, self.batch_size = as_str(device), batch_size
        self._model: Any = None
        self._tokenizer: Any = None

    # ---- lazy loading ---------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            tok = _load(AutoTokenizer.from_pretrained, self.tokenizer_name, self._key("tokenizer"))
            self._setup(tok)
            self._tokenizer = tok
        return self._tokenizer

    @property
    def model(self) -> Any:
        if self._model is None:
            import torch

            device = self.device_name
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = self.dtype_name
            if dtype == "auto":
                dtype = "bfloat16" if device.startswith("cuda") else "float32"
            log.info("loading PRM %s (%s, %s)", self.model_name, device, dtype)
            model = _load(self._load_model, self.model_name, self._key("model"), dtype=getattr(torch, dtype))
            self._model = model.to(device).eval()
        return self._model

    def _key(self, field: str) -> str:
        """The config key errors name: ``prm.tokenizer`` only when it is set apart from the model."""
        return (
            "prm.tokenizer"
            if field == "tokenizer" and self.tokenizer_name != self.model_name
            else "prm.model"
        )

    def _load_model(self, where: str, dtype: Any) -> Any:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(where, dtype=dtype)

    def _setup(self, tokenizer: Any) -> None:
        """Resolve configured token strings to ids (once the tokenizer is loaded)."""

    # ---- scoring ----------------------------------------------------------------------
    def _encode(self, problem: Problem, node: Node) -> list[int]:
        raise NotImplementedError

    def _reduce(self, outputs: Any) -> Any:
        raise NotImplementedError

    def score(self, items: Sequence[tuple[Problem, Node]]) -> list[float]:
        """Scores of the last step of each path: one batched pass over all items."""
        if not items:
            return []
        _ = self.model, self.tokenizer  # load (or fail naming the model) before any work
        seqs = [self._encode(problem, node) for problem, node in items]
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        scores = [0.0] * len(seqs)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            values = self._reduce(self._outputs_at_end([seqs[i] for i in rows]))
            for i, value in zip(rows, values.tolist()):
                scores[i] = float(value)
        return scores

    def _outputs_at_end(self, batch: list[list[int]]) -> Any:
        """Model outputs (float32, CPU) at the last token of each sequence: ``[B, C]``."""
        import torch

        model = self.model
        device = next(model.parameters()).device
        width, left = max(map(len, batch)), self.padding_side == "left"
        pad = self.tokenizer.pad_token_id
        ids = torch.full((len(batch), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            cols = slice(width - len(seq), width) if left else slice(0, len(seq))
            ids[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        last = torch.tensor([width - 1 if left else len(seq) - 1 for seq in batch])
        keep, which = torch.unique(last, return_inverse=True)
        with torch.inference_mode():
            out = model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=positions.to(device),
                logits_to_keep=keep.to(device),
                use_cache=False,
            ).logits
        return out[torch.arange(len(batch), device=out.device), which.to(out.device)].float().cpu()

    def _tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` as is (a rendered chat template carries its own special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _tokens_to_char(self, text: str, char: int, first: bool) -> list[int]:
        """Token ids of ``text`` (special tokens added, e.g. BOS) cut after the token covering
        ``text[char]`` (``first``) or after the last token overlapping ``text[char:]`` (``first=False``)."""
        enc = self.tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        hits = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if e > char and e > s]
        if not hits:
            raise ValueError(f"no token covers character {char} of the PRM input")
        return list(enc["input_ids"][: (hits[0] if first else hits[-1]) + 1])


__all__ = ["HFPRM", "as_str", "last_index", "pair_probability", "steps_of", "token_id"]


class PaddingSide(str, Enum):  # noqa: UP042 - OmegaConf needs a plain str Enum
    right = "right"
    left = "left"


class HFPRMConf:
    """Keys of every transformers PRM (:class:`HFPRM`); each PRM's schema extends this."""

    model: str
    tokenizer: str | None
    device: str
    dtype: ModelDtype
    batch_size: int = num(ge=1)
    padding_side: PaddingSide
