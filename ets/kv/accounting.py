"""KV accounting over a search: every backend at every selection call, per problem and per run.

One **measurement** is taken per selection call (ALGORITHMS.md §6), i.e. each time the
selector is asked to allocate children to the candidates (the new unfinished children of
a depth) while width remains. No measurement is taken when the search stops instead
(no candidate left, or the width used up): the reference (SqueezeAILab/ETS ``rebase.py``,
``select_and_expand``) returns before its ``select_*`` method, which is where it calls
``get_kv_size``. The reference also counts the root (the prompt, ~2 tokens through its
tokenizer bug: ``len`` of a ``BatchEncoding``) in every measurement, and measures once more
at depth 0 with the root alone; ``paper`` leaves the prompt out and starts at the first depth
of steps, so its total is the reference's less ~2 tokens per selection call, plus one call.

Three views per backend, per problem (:meth:`ProblemKV.summary`) and per run (:func:`run_kv`):

- ``per_depth``/``mean``/``peak``/``total``: the KV held by the candidates' root-to-node
  paths *before pruning*. ``total`` is the sum over the problem's selection calls; the run's
  ``total`` is the mean over problems of those totals. With the ``paper`` backend this is
  the reference's "Total KV cache size" (``rebase.py`` adds ``get_kv_size`` up over every
  selection call), divided by the number of problems: the number the paper's 1.8x compares.
  The run's ``mean`` is the mean over all (problem, selection call) pairs and ``peak`` the
  largest single measurement.
- ``after_pruning``: the same measure over only the candidates the selector gives >= 1 child
  (the paths the search keeps), with its own ``per_depth``/``mean``/``peak``/``total``.
- ``newest_step``: tokens of the candidates' own newest step (their ``token_ids``, summed
  over the distinct candidates) per selection call: ``total`` per problem, and ``share`` =
  newest-step tokens / KV held, both summed over the calls (over all calls of all problems
  for the run). Backend-independent tokens, divided by each backend's KV. Every candidate's
  newest step is in the KV before pruning and only pruned candidates' steps can leave, so
  for the ``paper`` backend this is the share the issue (#8 §3) asks for. It bounds what
  pruning frees at a call when every pruned candidate's parent keeps a child (then only
  newest steps leave); a pruned private lineage frees more, which ``after_pruning`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ets.core.tree import Node, Tree
from ets.protocols import KVBackend


class KVAccounting:
    """All backends side by side; ``headline`` is the one plots and sweeps lead with.

    Args:
        backends: The KV definitions to compute (paper, radix, paged, ...).
        headline: Name of the headline backend.
    """

    def __init__(self, backends: Sequence[KVBackend], headline: str) -> None:
        names = [b.name for b in backends]
        if headline not in names:
            raise ValueError(f"kv headline {headline!r} is not one of {names}")
        self.backends = list(backends)
        self.headline = headline

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.backends]

    def measure(self, tree: Tree, live: Sequence[Node]) -> dict[str, int]:
        return {b.name: b.measure(tree, live) for b in self.backends}

    def problem(self) -> ProblemKV:
        """A fresh per-problem log over these backends."""
        return ProblemKV(self)


def _series(vals: list[int]) -> dict[str, Any]:
    return {"per_depth": vals, "mean": sum(vals) / len(vals) if vals else 0.0,
            "peak": max(vals, default=0), "total": sum(vals)}


def kept(candidates: Sequence[Node], counts: Sequence[int]) -> list[Node]:
    """The candidates the selector gives at least one child."""
    if len(counts) != len(candidates):
        raise ValueError(f"selector returned {len(counts)} counts for {len(candidates)} candidates")
    return [c for c, n in zip(candidates, counts) if n > 0]


class ProblemKV:
    """One problem's KV log: one entry per selection call, for every backend and view.

    Call :meth:`observe` once per selection call, after the selector has returned its
    counts; never for a depth where the search stops instead of selecting.
    """

    def __init__(self, accounting: KVAccounting) -> None:
        self.accounting = accounting
        names = accounting.names
        self.before: dict[str, list[int]] = {n: [] for n in names}
        self.after: dict[str, list[int]] = {n: [] for n in names}
        self.newest: list[int] = []

    def observe(self, tree: Tree, candidates: Sequence[Node], counts: Sequence[int]) -> None:
        """Record one selection call.

        Args:
            tree: The problem's tree.
            candidates: The nodes the selector allocated over (unfinished new children).
            counts: The selector's children per candidate (same order).
        """
        survivors = kept(candidates, counts)
        # Nothing pruned (every candidate kept): the same paths, measured once.
        same = len(survivors) == len(candidates)
        for b in self.accounting.backends:
            before = b.measure(tree, candidates)
            self.before[b.name].append(before)
            self.after[b.name].append(before if same else b.measure(tree, survivors))
        self.newest.append(sum(c.n_tokens for c in {c.id: c for c in candidates}.values()))

    @property
    def calls(self) -> int:
        """Selection calls recorded so far."""
        return len(self.newest)

    def last(self, name: str) -> int:
        """The latest before-pruning measurement of backend ``name`` (0 before the first)."""
        vals = self.before[name]
        return vals[-1] if vals else 0

    def summary(self) -> dict[str, Any]:
        """Per backend: the before-pruning series and stats, ``after_pruning``, ``newest_step``."""
        newest = sum(self.newest)
        out: dict[str, Any] = {}
        for name, vals in self.before.items():
            held = sum(vals)
            out[name] = {**_series(vals), "after_pruning": _series(self.after[name]),
                         "newest_step": {"total": newest, "share": newest / held if held else 0.0}}
        return out


def _mean(vals: list[float]) -> float:
    return sum(vals) / len(vals) if vals else 0.0


def _run_view(series: list[list[int]]) -> dict[str, float]:
    flat = [v for s in series for v in s]
    return {"mean": _mean([float(v) for v in flat]), "peak": max(flat, default=0),
            "total": _mean([float(sum(s)) for s in series])}


def run_kv(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run-level KV per backend from the problem records.

    ``mean``: over all (problem, selection call) pairs; ``peak``: over all of them;
    ``total``: mean over problems of each problem's sum. ``after_pruning`` has the same
    three; ``newest_step`` has ``total`` (mean over problems) and ``share`` (newest-step
    tokens over KV held, each summed over every call of every problem). Records written
    before these views existed contribute their ``per_depth`` only.
    """
    before: dict[str, list[list[int]]] = {}
    after: dict[str, list[list[int]]] = {}
    newest: dict[str, list[int]] = {}
    for rec in records:
        for name, stats in rec["kv"].items():
            before.setdefault(name, []).append(stats["per_depth"])
            if "after_pruning" in stats:
                after.setdefault(name, []).append(stats["after_pruning"]["per_depth"])
                newest.setdefault(name, []).append(stats["newest_step"]["total"])
    out: dict[str, dict[str, Any]] = {}
    for name, series in before.items():
        out[name] = _run_view(series)
        if name in after:
            out[name]["after_pruning"] = _run_view(after[name])
            held = sum(sum(s) for s in series)
            out[name]["newest_step"] = {"total": _mean([float(v) for v in newest[name]]),
                                        "share": sum(newest[name]) / held if held else 0.0}
    return out
