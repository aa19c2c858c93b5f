"""Clustering with the real shipped all-MiniLM-L6-v2 model."""

import numpy as np
import pytest

from ets.cluster import SentenceEmbedder, cluster_labels


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder()


def test_embeddings_are_unit_norm_and_cached(embedder):
    vecs = embedder.embed(["Factor the quadratic.", "Factor the quadratic.", "Add 3 to both sides."])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[0], vecs[1])
    assert len(embedder._cache) == 2


def test_paraphrases_cluster_together_moves_apart(embedder):
    texts = [
        "We factor the quadratic expression.",
        "We factorize the quadratic expression.",
        "Next, we factor the quadratic expression.",
        "Substitute x = 3 into the equation.",
        "Plug in x = 3 into the equation.",
        "Compute the area of the triangle with Heron's formula.",
    ]
    labels = cluster_labels(embedder.embed(texts), threshold=0.3)
    assert labels[0] == labels[1] == labels[2]
    assert labels[3] == labels[4]
    assert len({labels[0], labels[3], labels[5]}) == 3


def test_threshold_zero_separates_distinct_texts_only(embedder):
    texts = ["a cat sat", "a cat sat", "the dog ran"]
    assert cluster_labels(embedder.embed(texts), threshold=0.0) == [0, 0, 1]


def test_average_linkage_against_scipy_free_brute_force():
    # three points on a line in cosine space: average linkage merges a,b first
    # (distance 0.02), then c joins only if the mean distance to {a,b} <= threshold.
    ang = np.radians([0.0, 11.5, 30.0])
    emb = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    d = 1 - np.cos(np.radians([11.5, 30.0, 18.5]))  # ab, ac, bc
    mean_c = (d[1] + d[2]) / 2
    assert cluster_labels(emb, threshold=(d[0] + mean_c) / 2) == [0, 0, 1]
    assert cluster_labels(emb, threshold=mean_c + 1e-6) == [0, 0, 0]


def test_device_auto_follows_torch(monkeypatch):
    import torch

    from ets.cluster import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert SentenceEmbedder(device="auto").device == "cuda"  # the model loads lazily
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert SentenceEmbedder().device == "cpu"  # auto is the default
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="selector.embedder.device='gpu'.*auto, cpu, cuda"):
        resolve_device("gpu")


def test_threshold_is_a_property_of_the_model():
    from ets.cluster import KNOWN_THRESHOLDS, MINILM, PAPER_MODEL, default_threshold

    assert default_threshold(PAPER_MODEL) == 0.05  # the paper's model keeps the paper's cut
    assert default_threshold(None) == KNOWN_THRESHOLDS[MINILM]  # shipped MiniLM
    assert default_threshold("sentence-transformers/all-MiniLM-L6-v2") == KNOWN_THRESHOLDS[MINILM]
    assert default_threshold("/models/Bert-MLM_arXiv-MP-class_zbMath") == 0.05
    with pytest.raises(ValueError, match="selector.embedder.threshold"):
        default_threshold("some/other-model")
    assert SentenceEmbedder("some/other-model", device="cpu", threshold=0.3).threshold == 0.3
    assert SentenceEmbedder(device="cpu").threshold == KNOWN_THRESHOLDS[MINILM]


def test_config_default_ets_uses_the_embedder_cut(compose_cfg):
    from hydra.utils import instantiate

    from ets.cluster import KNOWN_THRESHOLDS, MINILM

    cfg = compose_cfg("selector=ets")
    assert cfg.selector.cluster_threshold is None and cfg.selector.embedder.threshold is None
    assert cfg.selector.embedder.device == "auto"
    sel = instantiate(cfg.selector)
    assert sel.threshold() == KNOWN_THRESHOLDS[MINILM]
    paper = instantiate(compose_cfg("selector=ets", "selector.embedder.threshold=0.05").selector)
    assert paper.threshold() == 0.05
