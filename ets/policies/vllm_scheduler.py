"""The engine core's side of the step log-probability: a vLLM scheduler that sends the
sampled tokens' log-probabilities of step-logprob-only requests as plain floats.

With ``logprobs=0`` vLLM's scheduler slices, for every request at every engine step, the
step's three logprob arrays (``LogprobsLists.slice_request``: token ids, log-probabilities,
ranks) into an ``EngineCoreOutput``, and the engine core's ``MsgpackEncoder`` encodes each
of the three small arrays through a Python hook: 4.25 µs per request and step here against
0.23 without logprobs and 0.84 with this scheduler (``bench/logprobs.py``), in the
engine-core process that also schedules the GPU. With a small model on an H200 that
process bounds throughput: before this scheduler the search's requests ran at 64–83% of
the same requests without logprobs (README "Performance on a GPU").

:class:`StepFloatScheduler` is vLLM's scheduler (``AsyncScheduler`` where the engine
schedules asynchronously, else ``Scheduler``) with one change in ``update_from_output``:
for a request marked step-logprob-only (``extra_args[STEP_LOGPROB_ONLY]`` true: the
requests whose front end keeps only the sum,
:func:`ets.policies.vllm.install_step_logprob_only`), the slice is a :class:`StepFloats`, the sampled tokens' log-probabilities (the first column of
the step's array, as ``tolist`` gives them, once per step) as a list of Python floats,
which msgpack encodes natively. float32 → float64 is exact, so the front end's sum is the
same number as vLLM's (same values, same order). Every other request gets vLLM's own slice.

The policy's engines read these: :func:`ets.policies.vllm_async.new_async_llm` (``AsyncLLM``)
and :func:`ets.policies.vllm.get_engine` (the offline ``LLM``) set ``scheduler_cls`` (vLLM's
documented option for a custom scheduler, resolved by import path in the engine-core
process, spawned or not) where the user has not, and install the raw-logprob decoder
(:func:`ets.policies.vllm_decode.install_raw_logprobs`), which decodes ``StepFloats`` too;
an in-process engine core hands the object over as is. vLLM's own decoder could not decode
it, so :func:`with_step_float_scheduler` sets this scheduler only where this vLLM's
decoder is one the raw-logprob decoder replaces. On an H200 the search's
tokens/s with floats were 1.04–1.52x those with vLLM's arrays on the same engine (median
1.26x; README "Performance on a GPU", runs R and S).

Works with vLLM 0.26 and 0.32 (``update_from_output`` reads ``model_runner_output.logprobs``
once and calls only ``slice_request(req_index, n)`` on it, in both).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

from ets.policies.vllm import STEP_LOGPROB_ONLY

SCHEDULER = "ets.policies.vllm_scheduler.StepFloatScheduler"


class StepFloats(NamedTuple):
    """A step-logprob-only request's slice: its sampled tokens' log-probabilities, in order.

    Laid out as vLLM's ``LogprobsLists`` (the log-probabilities second) so every reader of
    ``.logprobs`` / ``[1]`` finds them; the token ids and ranks nobody reads are ``None``.
    """

    logprob_token_ids: None
    logprobs: list[float]
    sampled_token_ranks: None
    cu_num_generated_tokens: None = None

    def slice_request(self, req_idx: int, num_positions: int) -> StepFloats:
        """vLLM's ``LogprobsLists.slice_request`` (the front end trims after a stop string)."""
        return StepFloats(None, self.logprobs[req_idx:req_idx + num_positions], None)


class StepLogprobs:
    """One engine step's ``LogprobsLists`` as :class:`StepFloatScheduler` hands it to vLLM's
    ``update_from_output``: ``slice_request`` gives marked requests :class:`StepFloats`."""

    __slots__ = ("lists", "req_ids", "requests", "column")

    def __init__(self, lists: Any, req_ids: list[str], requests: dict[str, Any]) -> None:
        self.lists, self.req_ids, self.requests, self.column = lists, req_ids, requests, None

    def __bool__(self) -> bool:
        return True

    def slice_request(self, req_idx: int, num_positions: int) -> Any:
        # the request is gone where vLLM freed it before slicing (0.26, a finished request):
        # vLLM's slice then, which the front end reads as well
        params = getattr(self.requests.get(self.req_ids[req_idx]), "sampling_params", None)
        extra = getattr(params, "extra_args", None)
        if not extra or extra.get(STEP_LOGPROB_ONLY) is not True:  # "arrays": vLLM's (benchmarks)
            return self.lists.slice_request(req_idx, num_positions)
        column = self.column
        if column is None:  # the sampled token's log-probability is each row's first entry
            rows = self.lists.logprobs
            column = self.column = (rows[:, 0] if rows.ndim > 1 else rows).tolist()
        cu = self.lists.cu_num_generated_tokens
        start = cu[req_idx] if cu is not None else req_idx
        return StepFloats(None, column[start:start + num_positions], None)


class StepFloatScheduler:
    """vLLM's scheduler for the engine's config, with step-logprob-only slices as floats
    (module docstring). ``StepFloatScheduler(**kwargs)`` builds an ``AsyncScheduler`` or
    ``Scheduler`` subclass, as vLLM would have picked without ``scheduler_cls``."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        config = kwargs["vllm_config"] if "vllm_config" in kwargs else args[0]
        return scheduler_class(bool(config.scheduler_config.async_scheduling))(*args, **kwargs)


@functools.cache
def scheduler_class(async_scheduling: bool) -> type:
    """vLLM's ``AsyncScheduler`` (or ``Scheduler``) with :class:`StepLogprobs` slicing."""
    if async_scheduling:
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler as base
    else:
        from vllm.v1.core.sched.scheduler import Scheduler as base

    class Scheduler(base):  # type: ignore[valid-type,misc]
        def update_from_output(self, scheduler_output: Any, model_runner_output: Any, *args: Any, **kwargs: Any) -> Any:
            lists = model_runner_output.logprobs
            if lists is None:
                return super().update_from_output(scheduler_output, model_runner_output, *args, **kwargs)
            model_runner_output.logprobs = StepLogprobs(lists, model_runner_output.req_ids, self.requests)
            try:
                return super().update_from_output(scheduler_output, model_runner_output, *args, **kwargs)
            finally:
                model_runner_output.logprobs = lists

    Scheduler.__name__ = Scheduler.__qualname__ = f"StepFloat{base.__name__}"
    return Scheduler


def with_step_float_scheduler(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (``EngineArgs`` keys) with ``scheduler_cls`` = :class:`StepFloatScheduler`,
    unless they set one (theirs is kept) or this vLLM lacks the step-logprob-only path or a
    msgpack decoder the raw-logprob decoder can replace."""
    from ets.policies.vllm import install_step_logprob_only
    from ets.policies.vllm_decode import raw_decoding_supported

    if options.get("scheduler_cls") is not None or not install_step_logprob_only() or not raw_decoding_supported():
        return options
    return {**options, "scheduler_cls": SCHEDULER}

