"""Particle filtering and particle Gibbs (ets.selectors.particle): hand-computed weights,
resampling draws under a fixed RNG, finished particles, annealing, reference particles,
config; one CLI run on the synthetic world and one on SmolLM2."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from bisect import bisect

import pytest
from hydra.utils import instantiate

from ets.config import ConfigError, validate
from ets.core.tree import Tree
from ets.protocols import Budget, Expansion
from ets.selectors.particle import (
    ParticleFilter,
    ParticleGibbs,
    ParticleStrategy,
    annealed_tau,
    ess,
    logit,
    softmax,
)
from ets.types import Problem
from tests.conftest import ROOT

PROBLEM = Problem("p0", "q", "7")


def budget(width: int, max_depth: int = 40) -> Budget:
    return Budget(width, max_depth, 10_000, 2 * width * max_depth)


def make(factory, width: int, seed: int = 0, max_depth: int = 40) -> ParticleStrategy:
    tree = Tree("Q: q\n", (1, 2, 3))
    return factory(PROBLEM, tree, random.Random(seed), budget(width, max_depth))


def grow(s: ParticleStrategy, scores: list[list[float]], finished: list[list[bool]] | None = None):
    """Play one round as the loop does: one child per requested particle, scored and
    classified as given (per expansion, in order); returns the children."""
    results, made = [], []
    for j, e in enumerate(s.propose()):
        kids = []
        for k in range(e.n):
            child = s.tree.add_child(e.node, f"s{len(s.tree.nodes)}", (len(s.tree.nodes),))
            child.score = scores[j][k]
            if finished is not None and finished[j][k]:
                child.finished, child.finish_reason, child.answer = True, "answer", str(child.id)
            kids.append(child)
        results.append((e, kids))
        made.append(kids)
    s.observe(results)
    return made


def draws(seed: int, probs: list[float], k: int, skip: int = 0) -> list[int]:
    """The indices ``random.choices(range(n), weights=probs, k)`` draws, recomputed from
    the raw ``random()`` sequence (after ``skip`` earlier calls): bisect on the
    cumulative weights."""
    rng = random.Random(seed)
    for _ in range(skip):
        rng.random()
    cum, total = [], 0.0
    for p in probs:
        total += p
        cum.append(total)
    return [bisect(cum, rng.random() * total, 0, len(cum) - 1) for _ in range(k)]


# ---- weights ------------------------------------------------------------------------------
def test_weight_formula_prod_aggregation_three_particles():
    # paths: A = 0.9 * 0.8 = 0.72, B = 0.5 * 0.6 = 0.30, C = 0.7 (one step)
    # tau = 0.5: softmax(logit(r) / 0.5) = odds^2 normalised:
    # odds 0.72/0.28 = 2.571429, 0.3/0.7 = 0.428571, 0.7/0.3 = 2.333333
    # squares 6.612245, 0.183673, 5.444444 (sum 12.240363)
    # -> 0.540200, 0.015006, 0.444794
    tree = Tree("Q", (1,))
    a1 = tree.add_child(tree.root, "a1", (2,), score=0.9)
    a2 = tree.add_child(a1, "a2", (3,), score=0.8)
    b1 = tree.add_child(tree.root, "b1", (4,), score=0.5)
    b2 = tree.add_child(b1, "b2", (5,), score=0.6)
    c1 = tree.add_child(tree.root, "c1", (6,), score=0.7)
    s = ParticleFilter(aggregation="prod", softmax_temperature=0.5)(
        PROBLEM, tree, random.Random(0), budget(3))
    logw = [s.log_weight(n) for n in (a2, b2, c1)]
    assert logw == pytest.approx([math.log(0.72 / 0.28), math.log(0.3 / 0.7), math.log(0.7 / 0.3)])
    assert softmax(logw, 0.5) == pytest.approx([0.540200, 0.015006, 0.444794], abs=1e-6)
    # other aggregations of the same path A
    assert ParticleFilter(aggregation="last")(PROBLEM, tree, random.Random(0), budget(3)) \
        .log_weight(a2) == pytest.approx(math.log(0.8 / 0.2))
    assert ParticleFilter(aggregation="min")(PROBLEM, tree, random.Random(0), budget(3)) \
        .log_weight(a2) == pytest.approx(math.log(0.8 / 0.2))
    assert ParticleFilter(aggregation="mean")(PROBLEM, tree, random.Random(0), budget(3)) \
        .log_weight(a2) == pytest.approx(math.log(0.85 / 0.15))


def test_logit_clips_like_its_hub_and_rejects_scores_outside_0_1():
    assert logit(1.0) == pytest.approx(math.log((1 - 1e-7) / 1e-7))
    assert logit(0.0) == pytest.approx(-math.log((1 - 1e-7) / 1e-7))
    with pytest.raises(ValueError, match=r"PRM scores in \[0, 1\]"):
        logit(1.2)
    assert ess([0.25] * 4) == pytest.approx(4.0) and ess([1.0, 0.0]) == pytest.approx(1.0)


# ---- resampling ---------------------------------------------------------------------------
def test_first_round_resampling_counts_seed_0():
    # 4 particles, last-step scores 0.9, 0.5, 0.2, 0.7, tau 1: weights = odds normalised:
    # 9, 1, 0.25, 2.333 (sum 12.5833) -> 0.71523, 0.07947, 0.01987, 0.18543;
    # cumulative 0.71523, 0.79470, 0.81457, 1.
    # random.Random(0).random(): 0.84442, 0.75795, 0.42057, 0.25892
    # -> particle 3, 1, 0, 0: child 0 twice, children 1 and 3 once, child 2 dropped.
    s = make(ParticleFilter(aggregation="last"), width=4, seed=0)
    assert s.propose() == [Expansion(s.tree.root, 4)]
    [kids] = grow(s, [[0.9, 0.5, 0.2, 0.7]])
    assert s.last_probs == pytest.approx([0.715232, 0.079470, 0.019868, 0.185430], abs=1e-6)
    assert draws(0, s.last_probs, 4) == [3, 1, 0, 0]  # the same sequence, brute force
    assert s.particles == [kids[3], kids[1], kids[0], kids[0]]
    # one expansion per distinct node, k = the particles on it, slot order
    assert s.propose() == [Expansion(kids[3], 1), Expansion(kids[1], 1), Expansion(kids[0], 2)]
    # KV: every open particle node at the resampling; counts = particles on it after
    assert s.kv_nodes() == kids and s.counts == [2, 1, 0, 1]
    assert s.stats()["resamples"] == 1 and s.stats()["ess_mean"] == pytest.approx(
        1 / sum(p * p for p in s.last_probs))


def test_second_round_children_go_to_their_particles_and_rng_sequence_continues():
    s = make(ParticleFilter(aggregation="last"), width=4, seed=0)
    grow(s, [[0.9, 0.5, 0.2, 0.7]])
    # round 2: expansions (kids3 x1, kids1 x1, kids0 x2) -> slots [0], [1], [2, 3]
    made = grow(s, [[0.6], [0.4], [0.8, 0.1]])
    scores = [0.6, 0.4, 0.8, 0.1]
    odds = [r / (1 - r) for r in scores]
    probs = [o / sum(odds) for o in odds]
    assert s.last_probs == pytest.approx(probs)
    expect = draws(0, probs, 4, skip=4)  # 4 random() calls were the first resampling's
    pool = [made[0][0], made[1][0], made[2][0], made[2][1]]
    assert s.particles == [pool[i] for i in expect]


def test_finished_particles_keep_their_final_weight_and_their_slot():
    # round 1: child 0 finishes with 0.9; children 1, 2 stay open (0.5, 0.5).
    # odds 9, 1, 1 -> 9/11, 1/11, 1/11; cumulative 0.81818, 0.90909, 1.
    # seed 0 draws 0.84442, 0.75795, 0.42057 -> particles 1, 0, 0
    s = make(ParticleFilter(aggregation="last"), width=3, seed=0)
    [kids] = grow(s, [[0.9, 0.5, 0.5]], [[True, False, False]])
    assert s.last_probs == pytest.approx([9 / 11, 1 / 11, 1 / 11])
    assert s.particles == [kids[1], kids[0], kids[0]]
    # the finished particle stays finished, occupies two slots, only one child is asked
    assert s.propose() == [Expansion(kids[1], 1)]
    assert s.kv_nodes() == [kids[1], kids[2]] and s.counts == [1, 0]  # finished: no KV
    [[c]] = grow(s, [[0.25]])
    # round 2: the finished particle's weight is still logit(0.9): odds 1/3, 9, 9
    assert s.last_probs == pytest.approx([(1 / 3) / (18 + 1 / 3), 9 / (18 + 1 / 3), 9 / (18 + 1 / 3)])
    rest = draws(0, s.last_probs, 3, skip=3)
    assert s.particles == [[c, kids[0], kids[0]][i] for i in rest]


def test_resample_inactive_false_keeps_finished_and_resamples_only_active():
    # PIS's other branch: the finished particle keeps slot 0; slots 1, 2 are drawn over
    # the two active particles only (odds 1, 3 -> 0.25, 0.75); seed 0: 0.84442, 0.75795
    # -> both land on the 0.75 one.
    s = make(ParticleFilter(aggregation="last", resample_inactive=False), width=3, seed=0)
    [kids] = grow(s, [[0.9, 0.5, 0.75]], [[True, False, False]])
    assert s.last_probs == pytest.approx([0.25, 0.75])
    assert s.particles == [kids[0], kids[2], kids[2]]
    assert s.propose() == [Expansion(kids[2], 2)]


def test_all_finished_ends_and_argmax_sample_vote_finalists():
    for selection in ("argmax", "sample", "vote"):
        s = make(ParticleFilter(aggregation="last", selection=selection), width=3, seed=5)
        [kids] = grow(s, [[0.3, 0.8, 0.6]], [[True, True, True]])
        assert s.done() and s.stats()["resamples"] == 0  # PIS: no resampling once none is active
        if selection == "argmax":
            assert s.finalists() == [kids[1]]
        elif selection == "vote":
            assert s.finalists() == kids  # every particle, with multiplicity
        else:
            odds = [0.3 / 0.7, 4.0, 1.5]
            [i] = draws(5, [o / sum(odds) for o in odds], 1)
            assert s.finalists() == [kids[i]]


def test_final_resample_its_hub_resamples_after_the_last_stop():
    s = make(ParticleFilter(aggregation="last", final_resample=True, selection="vote"), width=3, seed=0)
    [kids] = grow(s, [[0.3, 0.8, 0.6]], [[True, True, True]])
    odds = [0.3 / 0.7, 4.0, 1.5]
    assert s.done() and s.stats()["resamples"] == 1
    assert s.finalists() == [kids[i] for i in draws(0, [o / sum(odds) for o in odds], 3)]


def test_max_steps_stops_particles():
    s = make(ParticleFilter(aggregation="last", max_steps=2), width=2, seed=1)
    grow(s, [[0.5, 0.5]])
    made = grow(s, [[0.6] * e.n for e in s.propose()])
    assert s.done()
    for kids in made:
        for k in kids:
            assert k.finished and k.finish_reason == "depth" and k.depth == 2


# ---- annealing ------------------------------------------------------------------------------
def test_annealing_schedule_is_pis_linear():
    assert [annealed_tau(1.0, 0.1, 5, t) for t in range(7)] == pytest.approx(
        [1.0, 0.775, 0.55, 0.325, 0.1, 0.1, 0.1])
    assert annealed_tau(2.0, 0.5, 1, 0) == 0.5
    # the strategy resamples after step 1 at tau(1) = 2 - 1.5 * 1/2 = 1.25
    s = make(ParticleFilter(aggregation="last", anneal_start=2.0, anneal_end=0.5, anneal_steps=3),
             width=2, seed=0)
    grow(s, [[0.8, 0.4]])
    assert s.last_probs == pytest.approx(softmax([logit(0.8), logit(0.4)], 1.25))
    assert s.last_probs != pytest.approx(softmax([logit(0.8), logit(0.4)], 1.0))


# ---- particle Gibbs ------------------------------------------------------------------------
def test_pgibbs_reference_particle_is_carried_over_and_its_prefix_reused():
    # width 6, 2 iterations: 3 particles per sweep; tau 0.05 makes every draw the best one.
    s = make(ParticleGibbs(num_iterations=2, num_ref_particles=1, softmax_temperature=0.05),
             width=6, seed=0)
    root = s.tree.root
    assert s.propose() == [Expansion(root, 3)]
    [first] = grow(s, [[0.2, 0.95, 0.5]])
    assert s.particles == [first[1]] * 3
    [second] = grow(s, [[0.9, 0.3, 0.3]], [[True, True, True]])
    ref = second[0]  # prod 0.855, the best; every slot and the reference land on it
    assert s.refs == [ref] and s.sweep == 2
    # sweep 2: 3 - 1 = 2 free particles from the root
    assert s.propose() == [Expansion(root, 2)]
    [fresh] = grow(s, [[0.1, 0.1]])
    # both free slots draw the reference (final weight logit(0.855)): they continue from its
    # prefix of 1 step, the existing node first[1] - not generated again
    assert s.last_probs[-1] == pytest.approx(1.0)
    assert s.particles == [first[1], first[1]]
    assert s.propose() == [Expansion(first[1], 2)]
    assert s.stats()["ref_prefix_draws"] == 2
    assert s.kv_nodes() == [*fresh, first[1]] and s.counts == [0, 0, 2]
    n_nodes = len(s.tree.nodes)
    [last] = grow(s, [[0.1, 0.1]], [[True, True]])
    assert len(s.tree.nodes) == n_nodes + 2  # only the two new steps were generated
    # at step 2 the reference (2 steps) is not truncated: drawn, it stays finished
    assert s.done() and s.particles == [ref, ref] and s.final == [ref, ref, ref]
    assert s.finalists() == [ref]
    assert s.stats()["sweeps"] == 2


def test_pgibbs_reference_weight_prefix_option():
    s = make(ParticleGibbs(num_iterations=2, softmax_temperature=1.0, ref_weight="prefix",
                           aggregation="last"), width=4, seed=0)
    grow(s, [[0.5, 0.5]])  # 2 particles per sweep
    grow(s, [[0.5] * e.n for e in s.propose()], [[True] * e.n for e in s.propose()])
    assert s.sweep == 2 and len(s.refs) == 1
    ref = s.refs[0]
    assert ref.depth == 2
    grow(s, [[0.3]])  # one free particle; the reference is weighed by its 1-step prefix
    assert s.last_probs == pytest.approx([0.3 / 0.7 / (0.3 / 0.7 + 1.0), 1.0 / (0.3 / 0.7 + 1.0)])


def test_pgibbs_budget_split_errors():
    with pytest.raises(ValueError, match="search.width=5 must be divisible by selector.num_iterations=2"):
        make(ParticleGibbs(num_iterations=2), width=5)
    with pytest.raises(ValueError, match="selector.num_ref_particles=2 must be below"):
        make(ParticleGibbs(num_iterations=2, num_ref_particles=2), width=4)
    with pytest.raises(ValueError, match="selector.selection='best'"):
        ParticleFilter(selection="best")


# ---- config -------------------------------------------------------------------------------
def test_config_defaults_and_instantiation(compose_cfg):
    cfg = compose_cfg("selector=pf")
    validate(cfg)
    pf = instantiate(cfg.selector, _convert_="partial")
    assert isinstance(pf, ParticleFilter) and not isinstance(pf, ParticleGibbs)
    c = pf.cfg
    assert (c.aggregation, c.softmax_temperature, c.resample_inactive, c.max_steps, c.selection,
            c.anneal_steps, c.final_resample) == ("prod", 1.0, True, 40, "argmax", 0, False)
    cfg = compose_cfg("selector=pgibbs", "selector.ref_weight=prefix", "selector.selection=vote")
    validate(cfg)
    pg = instantiate(cfg.selector, _convert_="partial")
    assert isinstance(pg, ParticleGibbs)
    assert (pg.cfg.num_iterations, pg.cfg.num_ref_particles, pg.cfg.ref_weight, pg.cfg.selection,
            pg.cfg.final_resample) == (1, 1, "prefix", "vote", True)  # its_hub's defaults


@pytest.mark.parametrize(("sel", "override", "fragment"), [
    ("pf", "selector.softmax_temperature=0", "selector.softmax_temperature=0.0 is invalid: must be > 0"),
    ("pf", "selector.max_steps=0", "selector.max_steps=0 is invalid: must be >= 1"),
    ("pf", "selector.anneal_steps=-1", "selector.anneal_steps=-1 is invalid: must be >= 0"),
    ("pf", "selector.anneal_end=0", "selector.anneal_end=0.0 is invalid: must be > 0"),
    ("pgibbs", "selector.num_iterations=0", "selector.num_iterations=0 is invalid: must be >= 1"),
    ("pgibbs", "selector.num_ref_particles=0", "selector.num_ref_particles=0 is invalid: must be >= 1"),
])
def test_bad_config_values_name_the_key(compose_cfg, sel, override, fragment):
    cfg = compose_cfg(f"selector={sel}", override)
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize(("override", "fragment"), [
    ("selector.selection=best", "selection"), ("selector.aggregation=max", "aggregation"),
])
def test_bad_enum_values_fail_at_composition(compose_cfg, override, fragment):
    with pytest.raises(Exception, match=fragment):
        compose_cfg("selector=pf", override)


# ---- end to end ------------------------------------------------------------------------------
def _cli(tmp_path, *overrides: str) -> list[dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "ets", *overrides, f"hydra.run.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "problems.jsonl").read_text().splitlines()]


def _check_pf_record(r: dict, width: int, vote: bool) -> None:
    st = r["strategy"]
    tree = r["tree"]
    # PF: every active particle is at depth == rounds, so the rounds are the tree's depth
    assert st["rounds"] == r["depths"]
    assert 1 <= st["ess_min"] <= st["ess_mean"] <= width
    assert 1 <= st["final_distinct"] <= width
    # one KV sample per resampling (PF resamples only while some particle is active);
    # what the particles keep after it is part of what they held before it
    for kv in r["kv"].values():
        assert len(kv["per_depth"]) == st["resamples"]
        assert kv["after_pruning"]["total"] <= kv["total"]
    # each round asks one child per active particle: at most width per depth
    for d in range(1, r["depths"] + 1):
        assert sum(1 for n in tree if n["depth"] == d) <= width
    counted = sum(v["count"] for v in r["votes"])
    if vote:  # every final particle votes (those with an answer)
        assert counted <= width and counted >= 1
    else:  # argmax: one finalist
        assert counted <= 1


def test_cli_synthetic_pf_and_pgibbs(tmp_path):
    base = ["+experiment=synthetic", "dataset.limit=4", "search.width=8", "search.concurrency=4"]
    rows = _cli(tmp_path / "pf", *base, "selector=pf")
    assert len(rows) == 4
    for r in rows:
        _check_pf_record(r, 8, vote=False)
    rows = _cli(tmp_path / "pfv", *base, "selector=pf", "selector.selection=vote")
    for r in rows:
        _check_pf_record(r, 8, vote=True)
    rows = _cli(tmp_path / "pg", *base, "selector=pgibbs", "selector.num_iterations=2")
    for r in rows:
        st = r["strategy"]
        assert st["sweeps"] == 2 and st["rounds"] >= 2 and st["resamples"] >= 1
        # two sweeps from the root: 4 then 3 free particles start there
        assert sum(1 for n in r["tree"] if n["parent"] == 0) == 4 + 3


@pytest.mark.slow
def test_smollm2_pf_and_pgibbs(tmp_path):
    """SmolLM2-135M (transformers) with its log-probability PRM: the record is consistent."""
    base = ["dataset=demo", "dataset.limit=2", "search.width=4", "search.max_step_tokens=12",
            "search.max_tokens=36", "search.max_depth=4", "search.concurrency=2", "tracker=local"]
    rows = _cli(tmp_path / "pf", *base, "selector=pf")
    assert len(rows) == 2
    for r in rows:
        _check_pf_record(r, 4, vote=False)
    rows = _cli(tmp_path / "pg", *base, "selector=pgibbs", "selector.num_iterations=2")
    for r in rows:
        assert r["strategy"]["sweeps"] == 2
        assert sum(1 for n in r["tree"] if n["parent"] == 0) == 2 + 1

