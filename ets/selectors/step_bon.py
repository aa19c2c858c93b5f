"""Step-level best-of-N (``selector=step_bon``; ThinkBooster "online best-of-N";
ALGORITHMS.md §7).

Where each rule comes from (IINemo/thinkbooster, commit 51ca08e,
``llm_tts/strategies/strategy_online_best_of_n.py``,
``OnlineBestOfNStrategy.generate_trajectories_batch``; defaults in
``config/strategy/online_bon.yaml``; the method in ``docs/strategies/online_bon/README.md``):

- one trajectory per problem ("sample"): at every step the current end of the
  trajectory gets ``candidates_per_step`` sampled continuations (8 in
  ``online_bon.yaml``), all scored by the PRM (the score of the last step of each
  candidate trajectory, ``traj_scores[-1]``);
- the candidate with the highest score is appended (``max(valid_indices, key=score)``:
  on ties the first candidate wins, and a candidate without a score is skipped), the
  others are pruned; the trajectory ends when the selected step ends it (answer, EOS,
  or the step / token cap: ``max_steps`` is our ``search.max_depth``).

Our choices:

- ``search.width`` = W is the number of such trajectories per problem, each one the
  reference's single trajectory, run independently (one policy call advances all of
  them); the final vote (``search.aggregation``) runs over their W ends. W=1 is the
  reference exactly. Each step costs ``W * candidates_per_step`` generated steps, so the
  node budget of a problem is ``W * candidates_per_step * max_depth``
  (:meth:`StepBoNStrategies.node_budget`, read by the loop).
- The reference, when a trajectory reaches its step or context limit without an answer,
  samples ``candidates_per_step`` final answers and keeps the best; here such a
  trajectory ends at the cap (reason ``depth``/``length``) like every other method's.
- The non-selected candidates stay in the tree (the record shows them, as pruned
  siblings) but are never continued nor voted on: ``finalists()`` are the W trajectory
  ends, and ``kv_nodes()`` the trajectory ends still open (the prefixes kept alive).
"""

from __future__ import annotations

import random

from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion
from ets.schema import Component, num, schema
from ets.types import Problem


def argmax_first(nodes: list[Node]) -> Node:
    """The best-scored node; ties to the first, unscored nodes skipped (all unscored:
    the first), as the reference's ``max(valid_indices, key=...)``."""
    scored = [i for i, n in enumerate(nodes) if n.score is not None]
    if not scored:
        return nodes[0]
    return nodes[max(scored, key=lambda i: nodes[i].score)]  # type: ignore[arg-type,return-value]


class StepBoNStrategy:
    """W independent trajectories, each extended by its best of ``c`` candidates per step.

    The W trajectories all start at the root: their first step is one expansion of the
    root into ``W * c`` children, split in order into W groups of ``c`` (one request, so
    the W groups are different samples; W requests for the same node would share its
    request seed and draw the same samples).
    """

    name = "step_bon"

    def __init__(self, tree: Tree, budget: Budget, candidates_per_step: int) -> None:
        self.tree, self.budget, self.c = tree, budget, candidates_per_step
        self.heads: list[Node] = [tree.root] * budget.width  # each trajectory's current end
        self.stopped: set[int] = set()  # trajectories cut by an explicit node budget
        self.generated = 0
        self.steps = 0
        self._slots: list[list[int]] = []  # per proposed expansion: its trajectories
        self._next: list[Expansion] = []
        self._plan()

    def _plan(self) -> None:
        groups: dict[int, list[int]] = {}  # node id -> trajectories whose end it is
        for t, head in enumerate(self.heads):
            if head.finished or t in self.stopped:
                continue
            if self.generated + (sum(map(len, groups.values())) + 1) * self.c > self.budget.max_nodes:
                self.stopped.add(t)  # only with a node budget below node_budget()
                continue
            groups.setdefault(head.id, []).append(t)
        self._slots = list(groups.values())
        self._next = [Expansion(self.heads[ts[0]], self.c * len(ts)) for ts in self._slots]

    def propose(self) -> list[Expansion]:
        return list(self._next)

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        for ts, (_, kids) in zip(self._slots, results, strict=True):
            for j, t in enumerate(ts):
                self.heads[t] = argmax_first(kids[j * self.c:(j + 1) * self.c])
            self.generated += len(kids)
        self.steps += 1
        self._plan()

    def done(self) -> bool:
        return not self._next

    def finalists(self) -> list[Node]:
        return [h for h in self.heads if h.finished]

    def kv_nodes(self) -> list[Node]:
        return [h for t, h in enumerate(self.heads)
                if not h.finished and h.parent is not None and t not in self.stopped]

    def stats(self) -> dict[str, float]:
        return {"steps": float(self.steps), "cut": float(len(self.stopped))}


class StepBoNStrategies:
    """Factory of :class:`StepBoNStrategy`.

    Args:
        candidates_per_step: Continuations sampled per trajectory and step (the
            reference's 8).
    """

    def __init__(self, candidates_per_step: int = 8) -> None:
        if not isinstance(candidates_per_step, int) or isinstance(candidates_per_step, bool) \
                or candidates_per_step < 1:
            raise ValueError(f"candidates_per_step={candidates_per_step!r} is invalid: "
                             "must be an integer >= 1")
        self.candidates_per_step = candidates_per_step

    def node_budget(self, width: int, max_depth: int) -> int:
        """Generated nodes a problem needs: W trajectories x c candidates x max_depth steps."""
        return width * self.candidates_per_step * max_depth

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> StepBoNStrategy:
        # Deterministic given the scores (argmax, first on ties): the RNG is not needed.
        return StepBoNStrategy(tree, budget, self.candidates_per_step)


@schema("selector", "step_bon", StepBoNStrategies)
class StepBoNConf(Component):
    """``selector=step_bon`` (ThinkBooster online best-of-N); default 8 from its config."""

    candidates_per_step: int = num(ge=1)
