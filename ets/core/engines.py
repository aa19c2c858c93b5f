"""How the asynchronous scheduler talks to a policy.

A :class:`~ets.protocols.StreamingPolicy` (continuous batching: vLLM's asynchronous
engine) takes groups of requests at any time and returns each group once it is done.
Any other policy is wrapped in :class:`BatchEngine`: every ``wait`` sends all groups
submitted so far as one ``generate`` call ("batch what is ready").
"""

from __future__ import annotations

from collections.abc import Sequence

from ets.protocols import Policy, StreamingPolicy
from ets.types import Generation, GenRequest


class BatchEngine:
    """A :class:`StreamingPolicy` over a batch :class:`Policy`: one ``generate`` per ``wait``.

    Attributes:
        calls: ``generate`` calls made.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.calls = 0
        self._pending: list[tuple[int, list[GenRequest]]] = []
        self._next = 0

    def submit(self, requests: Sequence[GenRequest]) -> int:
        self._next += 1
        self._pending.append((self._next, list(requests)))
        return self._next

    def wait(self) -> list[tuple[int, list[list[Generation]]]]:
        if not self._pending:
            return []
        pending, self._pending = self._pending, []
        flat = [r for _, reqs in pending for r in reqs]
        gens = self.policy.generate(flat)
        self.calls += 1
        out, i = [], 0
        for ticket, reqs in pending:
            out.append((ticket, gens[i:i + len(reqs)]))
            i += len(reqs)
        return out


def streaming(policy: Policy) -> StreamingPolicy:
    """The policy itself when it streams, else a :class:`BatchEngine` around it."""
    return policy if isinstance(policy, StreamingPolicy) else BatchEngine(policy)
