"""First Finish Search as published: Sync-FFS (``selector=ffs_sync``) and Async-FFS
(``selector=ffs_async``) (Agarwal, Sengupta, Chakraborty, "First Finish Search: Efficient
Test-Time Scaling in Large Language Models", arXiv 2505.18149; ALGORITHMS.md §7).

From the paper (no reference code is published with it): launch ``n`` independent samples
(plain sampling, no PRM) and return the first trace that completes (emits EOS).
*Sync-FFS* decodes the ``n`` samples together in one batch and stops all of them the
moment one finishes, so it generates ``n x`` the first finisher's length; *Async-FFS* runs
the samples independently (e.g. on separate servers) and returns whichever completes first,
cancelling the rest. ``n`` is ``search.width`` (the samples are the root's ``W``
children, sample ``i`` = the ``i``-th child). The answer is the winner's alone (it is the
only finalist, so every vote returns it).

How we realise it in a loop that generates in rounds (our choices):

- A round moves every live sample by one expansion: one step with ``expander=step``, a
  chunk of ``expander.tokens`` tokens with ``expander=fixed_tokens``. That expansion is the
  granularity of the race; the paper stops at the token.
- "Finish" means the trace completed: finish reason ``answer`` or ``eos``. The caps
  (``length``, ``depth``, ``context``) truncate a sample; they do not win the race. If no
  sample completes, there is no answer.
- **Sync**: at the first round in which any sample completes the search stops; the
  others are left unfinished (their generated tokens are counted). The winner is, among
  the samples that completed in that round, the one with the fewest generated tokens
  (ties: lowest sample index). With ``fixed_tokens`` all live samples hold the same
  tokens before a round, so this is the token-level first finisher and each stopped
  sample overshoots the paper's stop by less than one chunk; with ``step`` the race is
  counted in steps, not tokens.
- **Async**: "first" is defined without a scheduler, as the sample that completes with
  the **fewest generated tokens** (every sample decoding at the same rate per token;
  ties: lowest sample index), so records do not depend on timing. A sample keeps going
  while it holds fewer tokens than the best completion so far (it could still finish
  first) and stops once it holds as many or more. The winner is then exactly the
  token-level first finisher, whatever the expander; each stopped sample overshoots by
  less than one expansion. With ``fixed_tokens`` Sync and Async give the same records.
- Cost: only tokens actually generated are counted (``record["tokens"]``). The
  per-problem stats show the granularity: ``winner_tokens`` (L, the winner's length),
  ``token_level_tokens`` (``sum_i min(tokens_i, L)``, what a token-level stop at the
  winner's finish would have generated: the paper's ``n x L`` when every sample reached
  ``L``), ``overshoot_tokens`` (generated minus that), ``stopped`` (samples left
  unfinished) and ``rounds``.

``selector=ffs`` (:class:`ets.selectors.ffs.FFSSelector`) is the older variant: it waits
for the first ``k`` finishers and votes over them; with ``expander=full`` every sample
runs to its end first (best-of-N's cost).
"""

from __future__ import annotations

import random

from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion
from ets.schema import Component, schema
from ets.types import Problem

COMPLETED = ("answer", "eos")  # a trace that ended by itself (the caps truncate it)
MODES = ("sync", "async")


class FirstFinishStrategy:
    """One problem's First Finish Search (module docstring).

    Args:
        tree: This problem's tree.
        budget: ``budget.width`` is n, the number of samples.
        mode: ``sync`` or ``async``.
    """

    def __init__(self, tree: Tree, budget: Budget, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid; allowed: {', '.join(MODES)}")
        self.tree, self.budget, self.mode = tree, budget, mode
        self.name = f"ffs_{mode}"
        self.samples: list[Node] = []  # sample i's newest step
        self.winner: Node | None = None
        self._winner_key: tuple[int, int] | None = None  # (tokens, sample index)
        self._live: list[int] = []  # samples expanded in the next round
        self._kv: list[Node] = []
        self._next = [Expansion(tree.root, budget.width)] if budget.width > 0 else []
        self.counts: list[int] = []  # aligned with kv_nodes(): 1 = continues, 0 = stopped
        self.rounds = 0

    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        self.rounds += 1
        if not self.samples:  # the first round: the root's children are the samples
            self.samples = [c for _, kids in results for c in kids]
            moved = list(range(len(self.samples)))
        else:
            for i, (_, kids) in zip(self._live, results, strict=True):
                self.samples[i] = kids[0]
            moved = self._live
        for i in moved:
            node = self.samples[i]
            key = (node.cum_tokens, i)
            if node.finish_reason in COMPLETED and (self._winner_key is None or key < self._winner_key):
                self.winner, self._winner_key = node, key
        still_open = [i for i in moved if not self.samples[i].finished]
        if self.mode == "sync":
            go = [] if self.winner is not None else still_open
        else:
            bound = self._winner_key[0] if self._winner_key is not None else None
            go = [i for i in still_open if bound is None or self.samples[i].cum_tokens < bound]
        self._kv = [self.samples[i] for i in still_open]
        self.counts = [int(i in go) for i in still_open] if go else []
        self._live = go
        self._next = [Expansion(self.samples[i], 1) for i in go]

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        return [self.winner] if self.winner is not None else []

    def kv_nodes(self) -> list[Node]:
        return list(self._kv)

    def stats(self) -> dict[str, float]:
        tokens = sum(n.cum_tokens for n in self.samples)
        out = {"rounds": float(self.rounds),
               "stopped": float(sum(not n.finished for n in self.samples))}
        if self.winner is not None:
            length = self.winner.cum_tokens
            token_level = sum(min(n.cum_tokens, length) for n in self.samples)
            out.update(winner_tokens=float(length), token_level_tokens=float(token_level),
                       overshoot_tokens=float(tokens - token_level))
        return out


class FirstFinish:
    """Factory of :class:`FirstFinishStrategy` (no hyperparameter: n = ``search.width``).

    Args:
        mode: ``sync`` or ``async``.
    """

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is invalid; allowed: {', '.join(MODES)}")
        self.mode = mode

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random,
                 budget: Budget) -> FirstFinishStrategy:
        return FirstFinishStrategy(tree, budget, self.mode)


class SyncFFS(FirstFinish):
    """``selector=ffs_sync``: all samples stop at the first finisher's round."""

    def __init__(self) -> None:
        super().__init__("sync")


class AsyncFFS(FirstFinish):
    """``selector=ffs_async``: the sample that completes with the fewest tokens wins."""

    def __init__(self) -> None:
        super().__init__("async")


@schema("selector", "ffs_sync", SyncFFS)
@schema("selector", "ffs_async", AsyncFFS)
class FirstFinishConf(Component):
    """``selector=ffs_sync`` / ``ffs_async``: N = ``search.width``; no other key."""
