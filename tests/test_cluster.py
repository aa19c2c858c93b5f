"""Clustering with the real shipped all-MiniLM-L6-v2 model."""

import numpy as np
import pytest

from ets.selectors.cluster import SentenceEmbedder, cluster_labels


@pytest.fixture(scope="module")
def embedder():
    return SentenceEmbedder(cuda_graph=False)  # sentence-transformers' encode on any device


def test_embeddings_are_unit_norm_and_cached(embedder):
    vecs = embedder.embed(["Factor the quadratic.", "Factor the quadratic.", "Add 3 to both sides."])
    assert vecs.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[0], vecs[1])
    assert len(embedder._cache) == 2
    # bit for bit what sentence-transformers' own numpy path gives (one copy back per call)
    direct = embedder._model.encode(["Factor the quadratic.", "Add 3 to both sides."], normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)
    assert np.array_equal(vecs[[0, 2]], direct)
    calls = []
    model = embedder._model
    real = model.encode
    model.encode = lambda texts, **kw: calls.append(list(texts)) or real(texts, **kw)
    try:
        embedder.embed(["Factor the quadratic."])  # cached: the model is not called
        assert calls == []
        embedder.clear_cache()
        again = embedder.embed(["Factor the quadratic."])  # embedded anew, same vector
        assert calls == [["Factor the quadratic."]] and np.allclose(again[0], vecs[0], atol=1e-6)
    finally:
        del model.encode


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


def test_half_precision_embedder_is_an_option_close_to_float32(embedder):
    """``dtype=bfloat16`` (a GPU option; bfloat16 also runs on a CPU): float32 unit vectors
    within 1e-2 of the float32 model's, and the same clusters on a clear-cut example."""
    texts = ["We factor the quadratic expression.", "We factorize the quadratic expression.",
             "Substitute x = 3 into the equation.", "Compute the area of the triangle."]
    half = SentenceEmbedder(device="cpu", dtype="bfloat16")
    got, want = half.embed(texts), embedder.embed(texts)
    assert got.dtype == np.float32 and want.dtype == np.float32
    assert next(half._model.parameters()).dtype.__repr__() == "torch.bfloat16"
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-2)
    assert np.abs(got - want).max() < 2e-2 and not np.array_equal(got, want)  # close, not the same
    assert cluster_labels(got, 0.3) == cluster_labels(want, 0.3) == [0, 0, 1, 2]
    with pytest.raises(ValueError, match=r"selector\.embedder\.dtype='float64' is invalid"):
        SentenceEmbedder(dtype="float64")


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

    from ets.selectors.cluster import resolve_device

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
    from ets.selectors.cluster import KNOWN_THRESHOLDS, MINILM, PAPER_MODEL, default_threshold

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

    from ets.selectors.cluster import KNOWN_THRESHOLDS, MINILM

    cfg = compose_cfg("selector=ets")
    assert cfg.selector.cluster_threshold is None and cfg.selector.embedder.threshold is None
    assert cfg.selector.embedder.device == "auto"
    sel = instantiate(cfg.selector)
    assert sel.threshold() == KNOWN_THRESHOLDS[MINILM]
    paper = instantiate(compose_cfg("selector=ets", "selector.embedder.threshold=0.05").selector)
    assert paper.threshold() == 0.05


# ---- calibration of the MiniLM cut (ets.analysis.cluster_calibration) ---------------------------


def test_labelling_rule_on_hand_examples():
    from ets.analysis.cluster_calibration import same_move, step_numbers

    assert step_numbers("He pays $1,000.50 and 2.0 more, then 3. Total -4") == {"1000.5", "2", "3", "-4"}
    assert step_numbers("x2 and a.5 are not numbers, 12 is") == {"12"}
    # the same calculation in two phrasings: same numbers -> same move
    assert same_move("3 sprints * 60 meters = 180 meters.", "So 60 x 3 is 180 meters a week.")
    # another operand or result -> different move; a number against none -> different
    assert same_move("3 * 60 = 180", "3 * 60 = 190") is False
    assert same_move("3 * 60 = 180", "Let's compute the total.") is False
    assert same_move("Let's think step by step.", "First, read the problem.") is None


def test_tree_pairs_and_frontier_replay_on_a_hand_built_tree():
    from ets.analysis.cluster_calibration import replay_frontiers, tree_pairs

    def rec(i, parent, depth, text, finished=False):
        return {"id": i, "parent": parent, "depth": depth, "tokens": 2, "score": 0.5,
                "finished": finished, "text": text}

    tree = [rec(0, None, 0, "QUESTION"), rec(1, 0, 1, "a"), rec(2, 0, 1, "b"),
            rec(3, 0, 1, "a"), rec(4, 1, 2, "c"), rec(5, 1, 2, "d"), rec(6, 2, 2, "e"),
            rec(7, 2, 2, "f", finished=True), rec(8, 4, 3, "g"), rec(9, 6, 3, "h")]
    # depth 1: nodes 1/2 and 2/3 are siblings (1/3 have equal texts: left out); depth 2:
    # c/d siblings, c/e and d/e cousins (f is finished); depth 3: g and h have parents
    # c and e, which are cousins, not siblings: no pair. The root (the question) never
    # appears.
    assert tree_pairs(tree) == [("a", "b", "sibling"), ("b", "a", "sibling"),
                                ("c", "d", "sibling"), ("c", "e", "cousin"),
                                ("d", "e", "cousin")]
    frontiers = [([n.text for n in live], w) for _, live, w in replay_frontiers(tree, 4)]
    assert frontiers == [(["a", "b", "a"], 4), (["c", "d", "e"], 3), (["g", "h"], 3)]


def test_synthetic_pairs_are_labelled_by_move_and_value():
    from ets.analysis.cluster_calibration import synthetic_pairs
    from ets.synthetic.moves import MAX_PARAPHRASES, MOVES, N_VALUES, VALUE_MIN, step_text

    key = {step_text(m, p, VALUE_MIN + v): (m, v) for m in range(len(MOVES))
           for p in range(MAX_PARAPHRASES) for v in range(N_VALUES)}
    pairs = synthetic_pairs(30, 40, seed=3)
    assert sum(p.same for p in pairs) == 30 and len(pairs) == 70
    assert all((key[p.a] == key[p.b]) == p.same and p.a != p.b for p in pairs)


def test_shipped_pairs_and_the_calibrated_cut(embedder):
    """The labelled set: >= 300 real sibling/cousin pairs, labels reproduce the rule,
    and with the real MiniLM model the cut in KNOWN_THRESHOLDS is the best-F1 cut with
    the precision/recall recorded in ets.analysis.cluster_calibration's docstring."""
    from ets.analysis.cluster_calibration import calibrate, load_pairs, same_move
    from ets.selectors.cluster import KNOWN_THRESHOLDS, MINILM

    pairs = load_pairs()
    real = [p for p in pairs if p.source != "synthetic"]
    assert len(real) >= 300 and {p.source for p in real} == {"gsm8k", "math500"}
    assert {p.relation for p in real} == {"sibling", "cousin"}
    assert all(same_move(p.a, p.b) is p.same for p in real)
    assert not any("<|im_start|>" in p.a + p.b for p in pairs)  # no prompt, no question
    report = calibrate(pairs, embedder)
    best = report["chosen"]
    assert best["cut"] == KNOWN_THRESHOLDS[MINILM] == 0.15
    # 110 same-move pairs (10 real); tolerance of one pair either way for BLAS differences
    assert best["tp"] + best["fn"] == 110 and report["real_same"] == 10 and report["real"] == 1466
    assert abs(best["tp"] - 81) <= 1 and abs(best["fp"] - 19) <= 1
    assert best["precision"] == pytest.approx(0.81, abs=0.01)
    assert best["recall"] == pytest.approx(0.736, abs=0.01)
    assert report["by_source"]["synthetic"]["precision"] == pytest.approx(0.899, abs=0.01)
    assert report["by_source"]["synthetic"]["recall"] == pytest.approx(0.80, abs=0.01)
    real = report["by_source"]["real"]
    assert real["tp"] == 1 and abs(real["fp"] - 10) <= 1  # 1 of 10 same, ~10 of 1456 different
    assert real["median_same"] == pytest.approx(0.535, abs=0.01)
    assert real["median_different"] == pytest.approx(0.607, abs=0.01)


# -- selector.embedder.cuda_graph: the fixed-shape forward (GraphedEncoder) ------------------
GRAPH_TEXTS = [
    "We factor the quadratic expression.",
    "Step 2: 3 * 12 = 36 pens, and 36 - 7 = 29 pens are left over after the gift. " * 3,
    "x",
    "Substitute x = 3 into the equation and simplify both sides of it.",
    "Plug in x = 3.",
] * 3  # 15 texts: three batches of 6 with the last one short


def test_fixed_shape_forward_is_encode_up_to_rounding(embedder):
    """The function a CUDA graph captures, run eagerly on the CPU: padded to 6 rows and to
    the next of 16/32/64/... tokens, it gives sentence-transformers' ``encode`` vectors to
    float32 rounding, on texts of several lengths, over batches with empty rows; rows left
    over from a previous, larger batch do not leak into a smaller one."""
    import torch

    from ets.selectors.cluster import GraphedEncoder

    embedder.embed(["load"])
    enc = GraphedEncoder(embedder._model, batch=6, capture=False)
    assert enc.lengths[-1] == 256 and enc.lengths[:3] == (16, 32, 64)  # MiniLM's max_seq_length
    want = embedder._model.encode(GRAPH_TEXTS, normalize_embeddings=True, show_progress_bar=False)
    got = enc.encode(GRAPH_TEXTS).cpu().numpy()
    assert got.shape == want.shape == (15, 384)
    assert np.abs(got - want).max() < 1e-5
    tokens = [len(enc.tokenizer(t)["input_ids"]) for t in GRAPH_TEXTS]
    padded = {next(x for x in (16, 32, 64, 128, 256) if x >= max(tokens[i:i + 6])) for i in (0, 6, 12)}
    assert sorted(enc._graphs) == sorted(padded) and len(padded) == 2  # the long text's, the short's
    alone = enc.encode([GRAPH_TEXTS[1]]).cpu().numpy()  # 1 row after a full batch of that length
    assert np.abs(alone - want[1]).max() < 1e-5  # (rows 1..5 hold the earlier texts)
    assert np.abs(enc.encode(["x"]).cpu().numpy() - want[2]).max() < 1e-5
    assert enc._graphs[16][1]["mask"][:, 0].tolist() == [1] * 6  # empty rows attend to one token
    assert isinstance(enc.encode([]), torch.Tensor)
    enc.sdpa, enc._graphs = False, {}  # the additive mask (eager attention) masks the same tokens
    assert np.abs(enc.encode(GRAPH_TEXTS).cpu().numpy() - want).max() < 1e-5


def test_graph_tokenizer_gives_the_model_tokenizers_tensors(embedder):
    """GraphedEncoder.tokenize calls the Rust backend directly: the same ids, mask and
    token types as the model's tokenizer called as sentence-transformers calls it,
    truncation at max_seq_length included; the tokenizer itself is left as it was."""
    from ets.selectors.cluster import GraphedEncoder

    embedder.embed(["load"])
    tok = embedder._model[0].tokenizer
    enc = GraphedEncoder(embedder._model, batch=6, capture=False)
    assert enc._rust is not None and enc._rust is not tok.backend_tokenizer
    texts = [*GRAPH_TEXTS, "long " * 400, "Ünïcode ÅÄÖ ∑ x² — done."]
    want = tok(texts, padding=True, truncation="longest_first", max_length=256, return_tensors="pt")
    got = enc.tokenize(texts)
    assert got["input_ids"].shape == (17, 256)  # padded to the truncated long text
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[key].dtype == want[key].dtype and (got[key] == want[key]).all(), key
    assert tok(["a b"])["input_ids"] == [[101, 1037, 1038, 102]]  # unpadded as before
    enc._rust = None  # a slow tokenizer: transformers' own call
    short = tok(texts[:3], padding=True, truncation="longest_first", max_length=256, return_tensors="pt")
    assert all((enc.tokenize(texts[:3])[k] == short[k]).all() for k in short)


def test_cuda_graph_needs_cuda_and_a_mean_pooled_bert(embedder):
    from ets.selectors.cluster import GraphedEncoder

    with pytest.raises(ValueError, match=r"selector\.embedder\.cuda_graph=true needs a CUDA device.*'cpu'"):
        SentenceEmbedder(device="cpu", cuda_graph=True)
    embedder.embed(["load"])
    modules = list(embedder._model)
    with pytest.raises(ValueError, match=r"cuda_graph=true runs BERT-family models with mean pooling only; "
                                         r"this model is Transformer -> Normalize"):
        GraphedEncoder([modules[0], modules[2]], batch=4)


def test_cuda_graph_default_is_on_for_cuda_only_and_falls_back_for_other_models(monkeypatch, caplog):
    """cuda_graph=None (the default): graphs on a CUDA device, encode on a CPU; a model the
    graphs do not cover falls back to encode (saying so) unless cuda_graph=true asks for
    them; a failed capture likewise."""
    import ets.selectors.cluster as cluster

    cpu = SentenceEmbedder(device="cpu")  # (device auto is a GPU on a GPU node)
    assert cpu.cuda_graph is None
    cpu.embed(["a"])
    assert not cpu.graphed  # a CPU: encode

    made = []

    class Refuses:
        def __init__(self, model, batch):
            made.append(batch)
            raise ValueError("runs BERT-family models with mean pooling only; this model is X")

    class FailsCapture(Refuses):
        def __init__(self, model, batch):
            raise RuntimeError("operation not permitted when stream is capturing")

    def on_a_gpu(cuda_graph=None, batch_size=64):  # loaded on the CPU, then told it is on a GPU
        emb = SentenceEmbedder(device="cpu", batch_size=batch_size)
        emb._model = emb._load()
        emb.device, emb.cuda_graph = "cuda", cuda_graph
        return emb

    monkeypatch.setattr(cluster, "GraphedEncoder", Refuses)
    auto = on_a_gpu(batch_size=8)
    with caplog.at_level("INFO", logger="ets.selectors.cluster"):
        auto._graph()
    assert made == [8] and not auto.graphed and auto.embed(["a", "b"]).shape == (2, 384)
    assert "embedding with sentence-transformers' encode: runs BERT-family" in caplog.text
    with pytest.raises(ValueError, match="BERT-family"):
        on_a_gpu(cuda_graph=True)._graph()
    assert made == [8, 64]  # the default, then true
    on_a_gpu(cuda_graph=False)._graph()
    assert made == [8, 64]  # false: not even tried
    monkeypatch.setattr(cluster, "GraphedEncoder", FailsCapture)
    auto = on_a_gpu()
    with caplog.at_level("WARNING", logger="ets.selectors.cluster"):
        auto._graph()
    assert not auto.graphed and "capturing CUDA graphs failed: operation not permitted" in caplog.text
    with pytest.raises(RuntimeError, match="cuda_graph=true: capturing the embedder failed"):
        on_a_gpu(cuda_graph=True)._graph()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_embedder_matches_encode_on_the_gpu():
    """On a GPU: the replayed graphs (the default there) give ``encode``'s vectors (same
    device) to rounding and the same clusters, across calls that reuse a graph with new texts."""
    plain = SentenceEmbedder(device="cuda", cuda_graph=False)
    graphed = SentenceEmbedder(device="cuda", batch_size=6)
    want = plain.embed(GRAPH_TEXTS)
    first = graphed.embed(GRAPH_TEXTS[:4])
    got = graphed.embed(GRAPH_TEXTS)
    assert graphed.graphed and not plain.graphed
    assert all(g[0] is not None for g in graphed._graphed._graphs.values())
    assert np.abs(got - want).max() < 1e-4 and np.array_equal(first, got[:4])
    assert cluster_labels(got, graphed.threshold) == cluster_labels(want, plain.threshold)


def test_cut_tree_at_is_scipys_fcluster_distance_cut():
    """``cut_tree_at`` (what cluster_labels cuts with) against scipy's ``fcluster`` on
    random linkages: cuts at random heights, at 0, exactly at merge heights (ties), with
    duplicate points (zero-height merges), and on hand-made trees with an inversion."""
    from scipy.cluster.hierarchy import fcluster

    from ets.selectors.cluster import average_linkage, cut_tree_at, first_seen

    rng = np.random.default_rng(7)
    cuts = 0
    for _ in range(200):
        n = int(rng.integers(2, 40))
        points = rng.normal(size=(n, 6))
        dup = rng.integers(0, n, n // 3)
        points[dup] = points[rng.integers(0, n, len(dup))]
        merges = average_linkage(points)
        for t in [0.0, float(rng.uniform(0, 1.5)), *merges[:, 2][rng.integers(0, n - 1, 3)]]:
            assert first_seen(cut_tree_at(merges, t, n)) == first_seen(fcluster(merges, t=t, criterion="distance"))
            cuts += 1
    # an inversion (a merge lower than one below it): scipy cuts by the subtree's largest height
    inverted = np.array([[0, 1, 0.5, 2], [2, 3, 0.1, 2], [4, 5, 0.3, 3], [6, 7, 0.4, 5]], dtype=float)
    for t in (0.05, 0.1, 0.2, 0.3, 0.35, 0.45, 0.5, 0.6):
        assert first_seen(cut_tree_at(inverted, t, 5)) == first_seen(
            fcluster(inverted, t=t, criterion="distance")), t
    assert cuts == 1000
