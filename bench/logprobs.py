"""The step log-probability in vLLM's front end: its ``logprobs=0`` path vs the policy's sum-only path.

    python bench/logprobs.py [--tokens 20000] [--repeats 3]

Feeds the same sampled-token log-probabilities, one decoding step at a time as the
engine core sends them, to vLLM's ``LogprobsProcessor`` (detokenizes each token and
builds its Logprob entry) and to ``ets.policies.vllm._add_sampled_logprobs`` (what the
policy installs for its requests), with SmolLM2's tokenizer; prints microseconds per
generated token (fastest repeat) and checks both sums are identical.

Then the step before it, decoding: one engine step's outputs for ``--requests`` requests
(one token each), encoded by vLLM's ``MsgpackEncoder`` as its engine core sends them, and
decoded by vLLM's ``MsgpackDecoder`` and by the raw-logprob decoder the asynchronous policy
installs (``ets.policies.vllm_decode``), each followed by the step sum; microseconds per
request and step, without logprobs for reference, and whether the sums are identical.

Last, the engine core's side of the same step, which no front-end change reaches: what
vLLM's scheduler does per request (``LogprobsLists.slice_request`` of the step's arrays,
an ``EngineCoreOutput``) and its ``MsgpackEncoder`` encoding the step, with and without
logprobs, and what the policy's engines do instead for step-logprob-only requests (ets'
scheduler, ``ets.policies.vllm_scheduler``: the sampled log-probabilities as floats; the
decode table has its row too).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--requests", type=int, default=1024, help="requests per engine step (decode table)")
    args = ap.parse_args()
    from transformers import AutoTokenizer
    from vllm.logprobs import create_sample_logprobs
    from vllm.v1.engine.logprobs import LogprobsProcessor
    from vllm.v1.outputs import LogprobsLists

    from ets.models import resolve_model
    from ets.policies.vllm import _add_sampled_logprobs

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    rng = np.random.default_rng(0)
    steps = [LogprobsLists(rng.integers(0, len(tok), (1, 1)), rng.normal(-2, 1, (1, 1)).astype(np.float32),
                           np.ones(1, dtype=np.int64), None) for _ in range(args.tokens)]

    def processor() -> LogprobsProcessor:
        return LogprobsProcessor(tokenizer=tok, logprobs=create_sample_logprobs(False), prompt_logprobs=None,
                                 cumulative_logprob=0.0, num_logprobs=0, num_prompt_logprobs=None)

    full, fast, same = [], [], True
    for _ in range(args.repeats):
        a, b = processor(), processor()
        t0 = time.perf_counter()
        for s in steps:
            a._update_sample_logprobs(s)
        t1 = time.perf_counter()
        for s in steps:
            _add_sampled_logprobs(b, s)
        t2 = time.perf_counter()
        full.append(t1 - t0)
        fast.append(t2 - t1)
        same &= a.cumulative_logprob == b.cumulative_logprob
    us = 1e6 / args.tokens
    print(f"| path | us per generated token | seconds per 369k tokens (the first H200 ETS run) |\n|---|---:|---:|\n"
          f"| vLLM logprobs=0 | {min(full) * us:.2f} | {min(full) * 369e3 / args.tokens:.1f} |\n"
          f"| step sum only (ets) | {min(fast) * us:.2f} | {min(fast) * 369e3 / args.tokens:.1f} |\n"
          f"\nsame cumulative log-probability: {same}")
    decode_table(args.requests, args.repeats * 5)


def engine_step(requests: int, seed: int = 1):
    """``outputs(logprobs)``: one engine step's ``EngineCoreOutputs`` for ``requests``
    requests of one token each, built as vLLM's scheduler builds them (each request's
    ``slice_request`` of the step's logprob arrays, with ``logprobs``: ``True`` vLLM's
    scheduler, ``"floats"`` ets' step-float scheduler with every request marked
    step-logprob-only, ``False`` none)."""
    from vllm import SamplingParams
    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
    from vllm.v1.outputs import LogprobsLists

    from ets.policies.vllm import STEP_LOGPROB_ONLY
    from ets.policies.vllm_scheduler import StepLogprobs

    rng = np.random.default_rng(seed)
    step = LogprobsLists(rng.integers(0, 49152, (requests, 1)), rng.normal(-2, 1, (requests, 1)).astype(np.float32),
                         rng.integers(1, 50, requests))
    tokens = rng.integers(0, 49152, requests).tolist()
    ids = [f"req-{i}" for i in range(requests)]
    marked = type("Request", (), {"sampling_params": SamplingParams(logprobs=0, extra_args={STEP_LOGPROB_ONLY: True})})
    scheduled = {i: marked() for i in ids}  # what the scheduler reads of each vLLM Request

    def outputs(logprobs: bool | str):
        sliced = StepLogprobs(step, ids, scheduled) if logprobs == "floats" else step
        return EngineCoreOutputs(outputs=[
            EngineCoreOutput(request_id=ids[i], new_token_ids=[tokens[i]],
                             new_logprobs=sliced.slice_request(i, 1) if logprobs else None) for i in range(requests)])

    return outputs


def fastest_us(work, repeats: int, per: int) -> float:
    """The fastest of ``repeats`` calls of ``work()``, in microseconds per ``per``."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / per


def decode_table(requests: int, repeats: int) -> None:
    """The decode rows (module docstring)."""
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder

    from ets.policies.vllm_decode import raw_types, sampled_logprobs

    outputs = engine_step(requests)
    frames = {lp: [bytes(f) for f in MsgpackEncoder().encode(outputs(lp))] for lp in (True, "floats", False)}
    stock, raw = MsgpackDecoder(EngineCoreOutputs), MsgpackDecoder(raw_types()[1])

    def sums(decoder, logprobs: bool | str) -> list[float]:
        return [sum(sampled_logprobs(o.new_logprobs.logprobs)) if o.new_logprobs is not None else 0.0
                for o in decoder.decode(frames[logprobs]).outputs]

    rows = {"vLLM's decoder, logprobs=0": (stock, True), "raw-logprob decoder (ets), logprobs=0": (raw, True),
            "raw-logprob decoder (ets), logprobs=0, step floats": (raw, "floats"),
            "vLLM's decoder, no logprobs": (stock, False)}
    print(f"\n{requests} requests per engine step, one token each: decode + step sum\n\n"
          "| decoder | us per request and step |\n|---|---:|")
    for name, (decoder, logprobs) in rows.items():
        print(f"| {name} | {fastest_us(lambda d=decoder, lp=logprobs: sums(d, lp), repeats, requests):.2f} |")
    print(f"\nsame step sums: {sums(stock, True) == sums(raw, True) == sums(raw, 'floats')}")
    encode_table(requests, repeats)


def encode_table(requests: int, repeats: int) -> None:
    """The engine core's rows (module docstring)."""
    from vllm.v1.serial_utils import MsgpackEncoder

    outputs, encoder = engine_step(requests, seed=2), MsgpackEncoder()
    print(f"\nthe engine core's side of the step ({requests} requests): per-request slice + encode\n\n"
          "| requests ask for | us per request and step |\n|---|---:|")
    for name, logprobs in (("logprobs=0, vLLM's scheduler", True), ("logprobs=0, step floats (ets' scheduler)", "floats"),
                           ("no logprobs", False)):
        print(f"| {name} | {fastest_us(lambda lp=logprobs: encoder.encode(outputs(lp)), repeats, requests):.2f} |")

if __name__ == "__main__":
    main()
