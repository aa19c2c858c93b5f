"""Fit a synthetic-world profile to real search traces (``python -m ets.synthetic.fit``).

Input: run directories of real searches (``problems.jsonl`` with full trees: step
texts, token counts, PRM scores, finish reasons; ``config.yaml``). Only statistics are
kept, never text. :func:`trace_stats` measures, on real and simulated trees alike:

- ``frontier_sd``: population sd of the PRM scores of one selection call's candidates
  (the unfinished nodes of one problem at one depth, >= 2 of them), averaged over calls;
  ``sibling_sd``: the same within the unfinished children of one parent; ``score_mean``,
  ``score_p05`` / ``score_p95``: over all candidates;
- ``steps_mean`` / ``steps_sd``: depth of the nodes that end with an answer;
- ``step_log_mu`` / ``_sigma``: log token counts of unfinished nodes (non-final steps;
  steps cut at the search's per-step cap are included at the cap), ``answer_log_*``:
  of the answer nodes;
- ``loop_share``: share of finished nodes that ran into the token or depth cap
  (runaway generations); ``dup_share``: share of siblings whose text repeats an
  earlier sibling's.

:func:`fit` then runs the synthetic world under the traces' own search settings
(selector, width, caps, read from each run's ``config.yaml``; runs with different
settings, e.g. W = 16 and 64, are simulated each under its own settings and pooled in
the real runs' proportions, :func:`simulate_mix`) and updates the profile by a
fixed number of multiplicative fixed-point rounds, all seeded (same input, same
output): PRM ``bias`` / ``scale`` / ``rho`` towards score mean / frontier sd /
sibling-to-frontier sd ratio, the plan length towards ``steps_mean``, ``loop_base``
(with ``loop_slope = 3 * loop_base``, the reference profile's shape) towards
``loop_share``, ``n_variants`` towards ``dup_share`` and the step-length lognormals
towards the (cap-censored) log-length mean and sd. The error model (``base_error``...)
is not fitted: the traces hold no step-correctness labels.

Published statistics for trained PRMs: a search (2026-11-29) found no published
numeric distribution (mean / sd / range) of step scores for Math-Shepherd,
Qwen2.5-Math-PRM or the Llemma PRMs, so none is used. Published qualitative statements
only: generative PRMs "can sometimes produce scores clustered near 0 or 1" (ThinkPRM
model card, quoted in github.com/mukhal/ThinkPRM/issues/3); existing PRMs put "a
significant proportion of minimum scores ... on the final answer steps" (Zhang et al.,
arXiv:2501.07301); PRMs "are often poorly calibrated and overestimate success
probabilities" (Ma et al., arXiv:2605.06785). Trained PRMs may thus be far more spread
out than our logprob PRM; the ``math_reference`` profile (scores 0.01-0.99) stays
available for that regime.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from ets.synthetic import profiles
from ets.synthetic.moves import MAX_VARIANTS

ROUNDS = 8
SIM_PROBLEMS = 100


def _r(x: float) -> float:
    return round(float(x), 4)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def trace_stats(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The statistics above, from result records with ``tree`` dumps (module docstring)."""
    fr_sd, sib_sd, cand, steps, step_toks, ans_toks = [], [], [], [], [], []
    finished = looped = sib_n = sib_dup = 0
    for row in rows:
        nodes = row["tree"]
        kids: dict[int, list[dict[str, Any]]] = {}
        front: dict[int, list[float]] = {}
        for n in nodes[1:]:
            kids.setdefault(n["parent"], []).append(n)
            if n["finished"]:
                finished += 1
                looped += n["finish_reason"] in ("length", "depth")
                if n["finish_reason"] == "answer":
                    steps.append(n["depth"])
                    ans_toks.append(max(1, n["tokens"]))
            else:
                front.setdefault(n["depth"], []).append(n["score"])
                cand.append(n["score"])
                step_toks.append(max(1, n["tokens"]))
        fr_sd += [statistics.pstdev(s) for s in front.values() if len(s) >= 2]
        for group in kids.values():
            alive = [n["score"] for n in group if not n["finished"]]
            if len(alive) >= 2:
                sib_sd.append(statistics.pstdev(alive))
            if len(group) >= 2:
                sib_n += len(group)
                sib_dup += len(group) - len({n["text"] for n in group})
    logs = [math.log(t) for t in step_toks]
    alogs = [math.log(t) for t in ans_toks]
    return {
        "problems": len(rows),
        "frontier_sd": _r(statistics.fmean(fr_sd)),
        "sibling_sd": _r(statistics.fmean(sib_sd)),
        "score_mean": _r(statistics.fmean(cand)),
        "score_p05": _r(_pct(cand, 0.05)),
        "score_p95": _r(_pct(cand, 0.95)),
        "steps_mean": _r(statistics.fmean(steps)) if steps else 0.0,
        "steps_sd": _r(statistics.pstdev(steps)) if steps else 0.0,
        "step_log_mu": _r(statistics.fmean(logs)),
        "step_log_sigma": _r(statistics.pstdev(logs)),
        "answer_log_mu": _r(statistics.fmean(alogs)) if alogs else 0.0,
        "answer_log_sigma": _r(statistics.pstdev(alogs)) if alogs else 0.0,
        "loop_share": _r(looped / max(1, finished)),
        "dup_share": _r(sib_dup / max(1, sib_n)),
    }


def read_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(problem records, search settings) of one run directory."""
    import yaml

    run_dir = Path(run_dir)
    rows = [json.loads(line) for line in (run_dir / "problems.jsonl").read_text().splitlines() if line.strip()]
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    sel = cfg["selector"]
    settings = {
        "selector": sel["_target_"].rsplit(".", 1)[-1],
        "temperature": sel.get("temperature"),
        "width": cfg["search"]["width"],
        "max_step_tokens": cfg["search"]["max_step_tokens"],
        "max_tokens": cfg["search"]["max_tokens"],
        "max_depth": cfg["search"]["max_depth"],
        "policy": cfg["policy"].get("model"),
        "prm": cfg["prm"]["_target_"].rsplit(".", 1)[-1],
    }
    return rows, settings


def simulate(profile: profiles.Profile, settings: dict[str, Any], n: int = SIM_PROBLEMS,
             seed: int = 0) -> list[dict[str, Any]]:
    """Records of a synthetic REBASE search under ``settings`` (the traces' own)."""
    from hydra import compose, initialize_config_dir

    from ets.config import register_configs
    from ets.rundir.run import ROOT, build_search

    if settings["selector"] != "RebaseSelector":
        raise ValueError(f"fitting supports REBASE traces only, got {settings['selector']}")
    profiles.register(profile)
    register_configs()
    overrides = [
        "+experiment=synthetic", "selector=rebase", f"selector.temperature={settings['temperature']}",
        f"search.width={settings['width']}", f"search.max_step_tokens={settings['max_step_tokens']}",
        f"search.max_tokens={settings['max_tokens']}", f"search.max_depth={settings['max_depth']}",
        f"policy.profile={profile.name}", f"dataset.limit={n}", f"search.seed={seed}",
    ]  # fmt: skip
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    search, dataset = build_search(cfg)
    rows: list[dict[str, Any]] = []
    search.run(dataset.load(), rows.append)
    return rows


def simulate_mix(profile: profiles.Profile, source: dict[str, Any], n: int = SIM_PROBLEMS,
                 seed: int = 0) -> list[dict[str, Any]]:
    """Records of synthetic REBASE searches under every setting of ``source["settings"]``
    (one per group of real runs, each with its real ``problems`` count), pooled: ``n``
    simulated problems split in the real runs' proportions, so statistics averaged over
    selection calls weigh each width as the real traces do."""
    mix = source["settings"]
    total = sum(s["problems"] for s in mix)
    rows: list[dict[str, Any]] = []
    for one in mix:
        settings = {k: v for k, v in one.items() if k != "problems"}
        rows += simulate(profile, settings, max(1, round(n * one["problems"] / total)), seed)
    return rows


def group_runs(run_dirs: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(pooled problem records, ``source``) of real runs: ``source["settings"]`` lists
    each distinct search setting once, with the number of real problems run under it."""
    rows: list[dict[str, Any]] = []
    mix: list[dict[str, Any]] = []
    for one in run_dirs:
        more, got = read_run(one)
        rows += more
        for entry in mix:
            if {k: v for k, v in entry.items() if k != "problems"} == got:
                entry["problems"] += len(more)
                break
        else:
            mix.append({**got, "problems": len(more)})
    return rows, {"run": ",".join(str(r) for r in run_dirs), "settings": mix}


def _start(name: str, target: dict[str, float]) -> profiles.Profile:
    ref = profiles.MATH_REFERENCE
    return replace(
        ref, name=name,
        step_log_mu=target["step_log_mu"], step_log_sigma=target["step_log_sigma"],
        answer_log_mu=target["answer_log_mu"] or ref.answer_log_mu,
        answer_log_sigma=target["answer_log_sigma"] or ref.answer_log_sigma,
        prm_scale=1.0, prm_rho=0.5, length_per_text=True,
    )  # fmt: skip


def _damp(ratio: float) -> float:
    return min(1.3, max(1 / 1.3, math.sqrt(ratio)))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def fit(name: str, target: dict[str, float], source: dict[str, Any],
        rounds: int = ROUNDS) -> tuple[profiles.Profile, dict[str, float]]:
    """Fit a profile to ``target`` (trace statistics) under the search settings of
    ``source`` (:func:`group_runs`); returns it and its own statistics."""
    prof = _start(name, target)
    for _ in range(rounds):
        sim = trace_stats(simulate_mix(prof, source))
        ratio_t = (target["sibling_sd"] / target["frontier_sd"]) ** 2
        ratio_s = (sim["sibling_sd"] / sim["frontier_sd"]) ** 2
        rho = 1 - (1 - prof.prm_rho) * ratio_t / ratio_s
        scale = prof.prm_scale * target["frontier_sd"] / sim["frontier_sd"]
        bias = prof.prm_bias + _logit(target["score_mean"]) - _logit(sim["score_mean"])
        # damped (square root, at most x1.3 per round): the token cap couples step counts
        # and loop share, an undamped update overshoots
        grow = _damp((target["steps_mean"] - 1) / max(0.1, sim["steps_mean"] - 1))
        grow = min(grow, 12.0 / max(1.0, max(prof.steps_mean) - 1))  # plans within MAX_STEPS
        loop = prof.loop_base * _damp(max(target["loop_share"], 0.002) / max(sim["loop_share"], 0.002))
        variants = prof.n_variants * sim["dup_share"] / max(target["dup_share"], 1e-3)
        # the per-step token cap censors lengths alike in traces and simulation: match
        # the censored statistics (shift and stretch the lognormals)
        lengths = {
            f"{kind}_log_mu": _r(getattr(prof, f"{kind}_log_mu") + target[f"{kind}_log_mu"] - sim[f"{kind}_log_mu"])
            for kind in ("step", "answer")
        } | {
            f"{kind}_log_sigma": _r(getattr(prof, f"{kind}_log_sigma") * _damp(
                (target[f"{kind}_log_sigma"] / max(1e-3, sim[f"{kind}_log_sigma"])) ** 2))
            for kind in ("step", "answer")
        }  # fmt: skip
        prof = replace(
            prof,
            **lengths,
            prm_rho=_r(min(0.95, max(0.0, rho))), prm_scale=_r(scale), prm_bias=_r(bias),
            steps_mean=tuple(_r(1 + (m - 1) * grow) for m in prof.steps_mean),
            steps_sd=tuple(_r(s * grow) for s in prof.steps_sd),
            loop_base=_r(min(0.2, loop)), loop_slope=_r(3 * min(0.2, loop)),
            n_variants=int(min(MAX_VARIANTS, max(1, round(variants)))),
        )  # fmt: skip
    return prof, trace_stats(simulate_mix(prof, source))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+",
                    help="NAME=RUN_DIR[,RUN_DIR...]: profile name and real REBASE run directories "
                         "(their problems are pooled; runs with different search settings are "
                         "simulated each under its own)")
    ap.add_argument("--out", default=str(profiles.FITTED_JSON), help="fitted profiles JSON to write")
    args = ap.parse_args(argv)
    out: dict[str, Any] = {"profiles": {}}
    for spec in args.runs:
        name, run_dir = spec.split("=", 1)
        rows, source = group_runs(run_dir.split(","))
        target = trace_stats(rows)
        prof, achieved = fit(name, target, source)
        params = {k: v for k, v in asdict(prof).items() if k != "name"}
        reference = trace_stats(simulate_mix(profiles.MATH_REFERENCE, source))
        out["profiles"][name] = {
            "source": source,
            "target": target,
            "params": params,
            "achieved": achieved,
            "math_reference": reference,
        }
        print(f"\n{name} ({run_dir}, {target['problems']} real problems vs {SIM_PROBLEMS} simulated)")
        print("| statistic | real traces | fitted profile | math_reference |\n|---|---|---|---|")
        for key in target:
            print(f"| {key} | {target[key]} | {achieved[key]} | {reference[key]} |")
        print("params:", json.dumps(params))
    Path(args.out).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
