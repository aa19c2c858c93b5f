"""The step log-probabilities of an ``AsyncLLM``'s engine outputs, decoded without vLLM's arrays.

With ``logprobs=0`` vLLM's engine core sends, for every request at every engine step, a
``LogprobsLists`` of three small numpy arrays (the sampled token id, its log-probability,
its rank), and the front end's msgpack decoder builds all three through a Python hook
(``MsgpackDecoder.dec_hook``): 4.84 µs per request and step here against 0.25 without
logprobs (``bench/logprobs.py``), on the one core that also runs the output
processor. On an H200 that front end was the search's ceiling (README "Performance on a
GPU"). The search reads one number per step: the sum of the sampled tokens'
log-probabilities.

:func:`install_raw_logprobs` gives an engine-core client a decoder whose
``EngineCoreOutput.new_logprobs`` is a :class:`RawLogprobs`: the log-probability array
kept as its encoded ``(dtype, shape, bytes)``, the token-id and rank arrays left
undecoded (``msgspec.Raw``, no Python call at all). The requests the policy marks
(:data:`ets.policies.vllm.STEP_LOGPROB_ONLY`) sum the first column straight from those
bytes (:func:`sampled_logprobs`: float32 to Python float, in order: the number vLLM's own
sum gives); every other consumer (vLLM's ``LogprobsProcessor`` for unmarked requests, its
``slice_request`` after a stop string) gets the ``LogprobsLists`` vLLM would have built
(:meth:`RawLogprobs.lists`), so nothing else changes. Arrays vLLM sends out of band
(an index into the message's extra frames, above its inline threshold) are converted
while those frames are at hand.

Where the engine core runs ets' scheduler (:mod:`ets.policies.vllm_scheduler`), a marked
request's ``new_logprobs`` arrives as plain floats instead (``logprobs`` is a list of
floats: :func:`is_step_floats`); :func:`sampled_logprobs` returns them as they are and
:meth:`RawLogprobs.lists` gives the ``StepFloats`` the engine core built.

Works with vLLM 0.26 and 0.32 (the same encoding; the output structs are subclassed, not
copied, so fields added by a version are kept).
"""

# No ``from __future__ import annotations``: the structs below are defined in a function,
# and msgspec resolves string annotations in module globals only.
import functools
import sys
from typing import Any

_LITTLE = sys.byteorder == "little"


@functools.cache
def raw_types() -> tuple[type, type]:
    """``(RawLogprobs, RawEngineCoreOutputs)``: vLLM's output structs with ``new_logprobs``
    decoded raw (defined once, on first use: they subclass vLLM's)."""
    import msgspec
    import numpy as np
    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
    from vllm.v1.outputs import LogprobsLists

    from ets.policies.vllm_scheduler import StepFloats

    def ndarray(triple: Any, bufs: Any) -> Any:
        """vLLM's ``MsgpackDecoder._decode_ndarray`` (zero-copy, as its client decodes)."""
        dtype, shape, data = triple
        if isinstance(data, int):
            if bufs is None:
                raise ValueError("an out-of-band logprob array needs the message's frames")
            data = bufs[data]
        return np.frombuffer(data, dtype=dtype).reshape(shape)

    class RawLogprobs(msgspec.Struct, array_like=True, gc=False):
        """``LogprobsLists`` as encoded: ``logprobs`` is ``[dtype, shape, bytes or frame index]``."""

        logprob_token_ids: msgspec.Raw
        logprobs: Any
        sampled_token_ranks: msgspec.Raw
        cu_num_generated_tokens: list[int] | None = None

        def lists(self, bufs: Any = None) -> Any:
            """The ``LogprobsLists`` vLLM's decoder builds from the same bytes (the
            :class:`~ets.policies.vllm_scheduler.StepFloats` the engine core sent as floats)."""
            if is_step_floats(self.logprobs):
                return StepFloats(None, self.logprobs, None)
            dec = _triple_decoder()
            return LogprobsLists(ndarray(dec.decode(self.logprob_token_ids), bufs), ndarray(self.logprobs, bufs),
                                 ndarray(dec.decode(self.sampled_token_ranks), bufs), self.cu_num_generated_tokens)

        def slice_request(self, req_idx: int, num_positions: int) -> Any:
            return self.lists().slice_request(req_idx, num_positions)  # vLLM's trim after a stop string

    class RawEngineCoreOutput(EngineCoreOutput, array_like=True, omit_defaults=True, gc=False):
        new_logprobs: RawLogprobs | None = None

    class RawEngineCoreOutputs(EngineCoreOutputs, array_like=True, omit_defaults=True, gc=False):
        outputs: list[RawEngineCoreOutput] = []

    return RawLogprobs, RawEngineCoreOutputs


@functools.cache
def _triple_decoder() -> Any:
    """Decodes one encoded array's ``[dtype, shape, data]`` (vLLM's inline-bytes extension)."""
    import msgspec
    from vllm.v1.serial_utils import MsgpackDecoder

    return msgspec.msgpack.Decoder(ext_hook=MsgpackDecoder().ext_hook)


def is_step_floats(rows: Any) -> bool:
    """Whether ``rows`` (a ``.logprobs`` as the front end gets it) is the float list of a
    :class:`~ets.policies.vllm_scheduler.StepFloats`, not an array or :class:`RawLogprobs`'
    ``[dtype, shape, bytes]`` (whose first entry is the dtype string)."""
    return isinstance(rows, list) and not (rows and isinstance(rows[0], str))


def sampled_logprobs(rows: Any) -> list[float]:
    """The sampled tokens' log-probabilities (first column) of ``LogprobsLists.logprobs``:
    an array, :class:`RawLogprobs`' ``[dtype, shape, bytes]``, or the floats the engine core
    sent (:class:`~ets.policies.vllm_scheduler.StepFloats`); Python floats, in order, as
    ``rows.tolist()`` gives them."""
    if not isinstance(rows, list):
        return [row[0] for row in rows.tolist()]
    if is_step_floats(rows):
        return rows
    dtype, shape, data = rows
    width = shape[1] if len(shape) > 1 else 1
    if dtype == "<f4" and _LITTLE and isinstance(data, memoryview) and data.contiguous:
        values = data.cast("B").cast("f").tolist()  # float32 -> Python float, exactly as tolist
    else:
        import numpy as np

        if isinstance(data, int):
            raise ValueError("an out-of-band logprob array reached the reader unconverted")
        values = np.frombuffer(data, dtype=dtype).tolist()
    return values[::width] if width != 1 else values


@functools.cache
def _patch_logprobs_processor() -> None:
    """vLLM's ``LogprobsProcessor._update_sample_logprobs`` takes a :class:`RawLogprobs` too
    (converted to its ``LogprobsLists``): the requests not marked step-logprob-only."""
    from vllm.v1.engine.logprobs import LogprobsProcessor

    raw_logprobs, _ = raw_types()
    original = LogprobsProcessor._update_sample_logprobs

    def _update_sample_logprobs(self: Any, logprobs_lists: Any) -> None:
        if isinstance(logprobs_lists, raw_logprobs):
            logprobs_lists = logprobs_lists.lists()
        original(self, logprobs_lists)

    LogprobsProcessor._update_sample_logprobs = _update_sample_logprobs


_DECODER_ATTRS = ("decoder", "ext_hook", "dec_hook", "decode")


def raw_decoding_supported() -> bool:
    """Whether this vLLM's ``MsgpackDecoder`` has the shape :func:`install_raw_logprobs`
    replaces (its ``decoder`` is an instance attribute: checked on a fresh one)."""
    try:
        from vllm.v1.engine import EngineCoreOutputs
        from vllm.v1.serial_utils import MsgpackDecoder
    except ImportError:
        return False
    return all(hasattr(MsgpackDecoder(EngineCoreOutputs), a) for a in _DECODER_ATTRS)


def install_raw_logprobs(client: Any) -> bool:
    """Decode ``client``'s engine outputs with raw logprobs (module docstring). ``client`` is
    an ``AsyncLLM``'s ``engine_core``; returns ``False`` (nothing changed) where it has no
    msgpack decoder of the known shape or the step-logprob-only path is not installed."""
    from ets.policies.vllm import install_step_logprob_only

    decoder = getattr(client, "decoder", None)
    if decoder is None or getattr(decoder, "_ets_raw_logprobs", None) is not None:
        return decoder is not None
    if not all(hasattr(decoder, a) for a in _DECODER_ATTRS):
        return False
    if not install_step_logprob_only():
        return False
    import msgspec

    _patch_logprobs_processor()
    raw_logprobs, raw_outputs = raw_types()
    decoder._ets_raw_logprobs = {
        True: msgspec.msgpack.Decoder(raw_outputs, ext_hook=decoder.ext_hook, dec_hook=decoder.dec_hook),
        False: decoder.decoder}
    decoder.decoder = decoder._ets_raw_logprobs[True]
    plain = decoder.decode

    def decode(bufs: Any) -> Any:
        out = plain(bufs)
        if isinstance(bufs, (list, tuple)) and len(bufs) > 1:  # out-of-band arrays: read them now
            for o in getattr(out, "outputs", None) or ():
                if isinstance(o.new_logprobs, raw_logprobs):
                    o.new_logprobs = o.new_logprobs.lists(bufs)
        return out

    decoder.decode = decode
    return True


def use_raw_logprobs(client: Any, on: bool) -> None:
    """Switch an installed client between the raw decoder and vLLM's own (benchmarks)."""
    decoder = client.decoder
    decoder.decoder = decoder._ets_raw_logprobs[bool(on)]
