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
