"""Fitted profiles: identical siblings, trace statistics, the fit and the profile key."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from ets.core.tree import Tree
from ets.datasets.synthetic import SyntheticDataset
from ets.policies.synthetic import SyntheticPolicy
from ets.prms.synthetic import SyntheticPRM
from ets.rundir.run import build_search
from ets.synthetic import fit, profiles
from ets.types import GenRequest

FITTED = json.loads(profiles.FITTED_JSON.read_text())["profiles"]
# |simulated - real| allowed on a seeded sample of SIM_PROBLEMS problems
TOLERANCE = {"frontier_sd": 0.15, "sibling_sd": 0.2, "score_mean": 0.03, "steps_mean": 0.15}
RELATIVE = {"frontier_sd", "sibling_sd", "steps_mean"}


@pytest.mark.parametrize("profile", ["math_reference", *sorted(FITTED)])
def test_identical_sibling_texts_are_one_step(profile):
    """Same text under one parent: same token ids and same PRM score, at two depths.

    ``math_reference`` draws lengths per sample (a text stands for steps of several
    lengths), so there the same text *and tokens* must give the same score.
    """
    pol, prm = SyntheticPolicy(profile=profile), SyntheticPRM(profile=profile)
    per_text = profiles.get(profile).length_per_text
    groups = checked = 0
    for p in SyntheticDataset(n=40, profile=profile).load():
        pr = pol.format_prompt(p)
        tree = Tree(pr.text, pr.token_ids)
        parents = [tree.root]
        for _ in range(2):
            nxt = []
            for parent in parents:
                _, ctx = tree.context(parent)
                for g in pol.generate([GenRequest(p, "", ctx, 32, 256, ["\n\n"], 0)])[0]:
                    nxt.append(tree.add_child(parent, g.text, g.token_ids))
            scores = prm.score([(p, c) for c in nxt])
            by_text: dict[tuple, list[tuple[tuple[int, ...], float]]] = defaultdict(list)
            for c, s in zip(nxt, scores):
                key = (c.parent.id, c.text) if per_text else (c.parent.id, c.text, c.token_ids)
                by_text[key].append((c.token_ids, s))
            for same in by_text.values():
                assert len(set(same)) == 1
                groups += len(same) > 1
            checked += len(by_text)
            parents = [c for c in nxt if not c.text.startswith(("Putting", "Combining", "This"))][:3]
    assert groups > 20 and checked > groups  # duplicates happen, and so do distinct texts


@pytest.mark.parametrize("profile", ["math_reference", *sorted(FITTED)])
def test_sibling_steps_cut_to_the_same_text_are_one_step(profile):
    """Different sibling steps cut at the token cap to the same text are one step.

    Same token ids, same PRM score and the same children (a tokenizer makes ids from
    text: which full step was cut must not show). Different cut texts keep different
    first ids (no accidental prefix sharing).
    """
    pol, prm = SyntheticPolicy(profile=profile), SyntheticPRM(profile=profile)
    merged = 0
    for p in SyntheticDataset(n=40, profile=profile).load():
        pr = pol.format_prompt(p)
        for limit in (3, 6):
            full = pol.generate([GenRequest(p, "", pr.token_ids, 32, 10**6, ["\n\n"], 0)])[0]
            cut = pol.generate([GenRequest(p, "", pr.token_ids, 32, limit, ["\n\n"], 0)])[0]
            tree = Tree(pr.text, pr.token_ids)
            by_text: dict[str, list[tuple[str, object]]] = defaultdict(list)
            heads: dict[int, str] = {}
            for f, c in zip(full, cut):
                if c.finish_reason != "length":
                    continue
                assert len(c.token_ids) == limit and f.text.startswith(c.text)
                assert heads.setdefault(c.token_ids[0], c.text) == c.text
                by_text[c.text].append((f.text, tree.add_child(tree.root, c.text, c.token_ids)))
            for group in by_text.values():
                if len({f for f, _ in group}) < 2:
                    continue  # the same full step cut twice proves nothing
                merged += 1
                nodes = [n for _, n in group]
                assert len({n.token_ids for n in nodes}) == 1
                assert len(set(prm.score([(p, n) for n in nodes]))) == 1
                kids = [pol.generate([GenRequest(p, "", tree.context(n)[1], 4, 256, ["\n\n"], 0)])[0]
                        for n in nodes]
                assert all(k == kids[0] for k in kids)
    assert merged > 10


def test_prm_depends_only_on_texts_and_tokens():
    """A node rebuilt in another tree from the same texts/tokens gets the same score."""
    pol, prm = SyntheticPolicy(profile="math_reference"), SyntheticPRM(profile="math_reference")
    p = SyntheticDataset(n=3, profile="math_reference").load()[2]
    pr = pol.format_prompt(p)
    a, b = Tree(pr.text, pr.token_ids), Tree(pr.text, pr.token_ids)
    g1 = pol.generate([GenRequest(p, "", pr.token_ids, 5, 256, ["\n\n"], 0)])[0]
    g2 = pol.generate([GenRequest(p, "", pr.token_ids + g1[3].token_ids, 2, 256, ["\n\n"], 0)])[0]
    na = a.add_child(a.add_child(a.root, g1[3].text, g1[3].token_ids), g2[1].text, g2[1].token_ids)
    b.add_child(b.root, "decoy\n\n", (1, 2))
    nb = b.add_child(b.add_child(b.root, g1[3].text, g1[3].token_ids), g2[1].text, g2[1].token_ids)
    assert prm.score([(p, na)]) == SyntheticPRM(profile="math_reference").score([(p, nb)])


def test_trace_stats_by_hand():
    def node(i, parent, depth, score, text="s", tokens=10, finished=False, reason=None):
        return {"id": i, "parent": parent, "depth": depth, "score": score, "text": text, "tokens": tokens,
                "finished": finished, "finish_reason": reason}

    tree = [
        {"id": 0, "parent": None, "depth": 0, "score": None, "text": "q", "tokens": 5, "finished": False,
         "finish_reason": None},
        node(1, 0, 1, 0.4, "a", 20), node(2, 0, 1, 0.6, "a", 20), node(3, 0, 1, 0.8, "b", 40),
        node(4, 1, 2, 0.5, "x", 7, True, "answer"), node(5, 1, 2, 0.7, "y", 384, True, "length"),
    ]
    got = fit.trace_stats([{"tree": tree}])
    sd3 = math.sqrt(((0.4 - 0.6) ** 2 + 0 + 0.2**2) / 3)
    assert got["frontier_sd"] == round(sd3, 4)  # the depth-2 frontier is empty (all finished)
    assert got["sibling_sd"] == round(sd3, 4)  # node 1's children are finished: not candidates
    assert got["score_mean"] == 0.6 and got["steps_mean"] == 2.0 and got["loop_share"] == 0.5
    assert got["dup_share"] == round(1 / 5, 4)  # one repeated "a" among 3 + 2 siblings
    assert got["step_log_mu"] == round((2 * math.log(20) + math.log(40)) / 3, 4)
    assert got["answer_log_mu"] == round(math.log(7), 4)


@pytest.mark.parametrize("name", sorted(FITTED))
def test_fitted_profile_reproduces_trace_statistics(name):
    entry = FITTED[name]
    prof = profiles.get(name)
    achieved = fit.trace_stats(fit.simulate_mix(prof, entry["source"]))
    assert achieved == entry["achieved"]  # seeded: the committed numbers are this run's
    for key, tol in TOLERANCE.items():
        real, sim = entry["target"][key], achieved[key]
        err = abs(sim - real) / real if key in RELATIVE else abs(sim - real)
        assert err <= tol, (key, real, sim)


@pytest.mark.parametrize("name", sorted(FITTED))
def test_trace_statistics_equal_the_committed_numbers(name):
    runs = [Path(r) for r in FITTED[name]["source"]["run"].split(",")]
    if not all((run / "problems.jsonl").exists() for run in runs):
        pytest.skip(f"real traces not found at {runs}")
    rows, source = fit.group_runs([str(r) for r in runs])
    assert fit.trace_stats(rows) == FITTED[name]["target"]
    assert source == FITTED[name]["source"]  # every run's own width and caps, and counts


def test_runs_with_different_settings_are_simulated_each_under_its_own(tmp_path):
    """group_runs keeps one entry per distinct setting (read from each config.yaml) with
    its real problem count; simulate_mix runs each width in the real proportions."""
    import yaml

    def run(name, width, cap, n):
        d = tmp_path / name
        d.mkdir()
        cfg = {"selector": {"_target_": "ets.selectors.rebase.RebaseSelector", "temperature": 0.2},
               "search": {"width": width, "max_step_tokens": cap, "max_tokens": 4 * cap, "max_depth": 40},
               "policy": {"model": "smollm2"}, "prm": {"_target_": "ets.prms.logprob.LogprobPRM"}}
        (d / "config.yaml").write_text(yaml.safe_dump(cfg))
        (d / "problems.jsonl").write_text("".join(json.dumps({"id": i, "tree": []}) + "\n" for i in range(n)))
        return str(d)

    rows, source = fit.group_runs([run("a", 16, 128, 3), run("b", 64, 128, 1), run("c", 16, 128, 2)])
    assert len(rows) == 6 and [(s["width"], s["max_tokens"], s["problems"]) for s in source["settings"]] == [
        (16, 512, 5), (64, 512, 1)]
    sim = fit.simulate_mix(profiles.get("math_reference"), source, n=6)
    widths = [max(sum(1 for n in r["tree"] if n["depth"] == 1), 0) for r in sim]
    assert len(sim) == 6 and sorted(widths)[-1] == 64 and sorted(widths)[-2] == 16  # 5 at W=16, 1 at W=64


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FITTED))
def test_refit_gives_the_committed_parameters(name):
    entry = FITTED[name]
    prof, achieved = fit.fit(name + "_refit", entry["target"], entry["source"])
    got = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(prof).items() if k != "name"}
    assert got == entry["params"] and achieved == entry["achieved"]


def test_one_key_selects_the_profile(compose_cfg):
    cfg = compose_cfg("+experiment=synthetic", "policy.profile=math_reference", "dataset.limit=2")
    search, dataset = build_search(cfg)
    assert search.policy.profile == search.prm.profile == dataset.profile.name == "math_reference"
    assert (search.prm.scale, search.prm.rho) == (3.0, 0.0)
    default = compose_cfg("+experiment=synthetic", "dataset.limit=2")
    search, dataset = build_search(default)
    assert search.policy.profile == search.prm.profile == dataset.profile.name == profiles.DEFAULT_PROFILE
    with pytest.raises(ValueError, match="profile must be one of .*math_reference"):
        SyntheticPolicy(profile="nope")


@pytest.mark.parametrize("profile", ["math_reference", *sorted(FITTED)])
def test_reading_the_texts_recovers_the_policy_state(profile):
    """The PRM's reader (texts only) agrees with the policy's own table on every node."""
    from ets.synthetic.dynamics import ProblemSpec, read_path

    pol = SyntheticPolicy(profile=profile, base_error=0.3)
    checked = wrong = 0
    for p in SyntheticDataset(n=30, profile=profile).load():
        pr = pol.format_prompt(p)
        tree = Tree(pr.text, pr.token_ids)
        level = [tree.root]
        for _ in range(6):
            nxt = []
            for parent in level[:4]:
                _, ctx = tree.context(parent)
                for g in pol.generate([GenRequest(p, "", ctx, 8, 256, ["\n\n"], 0)])[0]:
                    nxt.append(tree.add_child(parent, g.text, g.token_ids))
            for c in nxt:
                st = pol.state_of(p, tree.context(c)[1])
                read = read_path(ProblemSpec(p), [n.text for n in c.path()])
                assert (read["ok"], read["k"], read["loop"], read["done"]) == (
                    st["ok"], st["k"], st["loop"], st["done"])
                checked += 1
                wrong += not st["ok"]
            level = [c for c in nxt if not pol.state_of(p, tree.context(c)[1])["done"]]
    assert checked > 1000 and 0.1 < wrong / checked < 0.9
