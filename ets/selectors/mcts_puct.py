"""MCTS with PUCT as in OpenR (``selector=mcts_puct``; ALGORITHMS.md §7).

Where each rule comes from (openreasoner/openr, commit 54ae004):

- The search is ``SearchTree.vanila_mcts`` (``reason/guided_search/tree.py``), run by
  ``reason/evaluation/methods.py`` ``vanila_mcts`` with ``select_by_prior=False`` and
  ``init_critic_value=True``; ``scripts/eval/vanila_mcts.sh`` sets ``tree_max_width 4``,
  ``tree_max_depth 50`` and ``temperature 0.7`` (our defaults).
- Expansion (``envs/base_env.py`` ``CoTEnv.update_legal_actions`` and
  ``SearchTree._expand_leaf_node``): ``tree_max_width`` continuations of the node are
  sampled; a continuation is dropped if its text is empty, equal to an earlier sibling's
  (dedup of identical siblings) or not ended by a stop string or EOS (``finish_reason !=
  "stop"``: truncated at the token limit; ours: ``stop_reason`` ``length``/``context``).
  The prior of a kept child is ``exp(mean token logprob)`` (``cumulative_logprob /
  max(1, n_tokens)``) normalised over the kept siblings; its initial value is the PRM's
  score of its last step (``rs[-1]``; ``None`` → 0.0 as OpenR's empty PRM output).
- One path (``for i_path in range(num_path)``): from the root, repeatedly move to the
  child with the highest ``Q + c·P·sqrt(N_parent)/(N_child+1)`` where
  ``c = ln((N_parent + pb_c_base + 1)/pb_c_base) + pb_c_init`` (``_ucb_score``), ``Q`` =
  the child's mean backed-up value, or its initial value while unvisited; the first
  child wins a tie (strict ``>``). At an unvisited node ``sqrt(0) = 0``, so the move is
  by value alone (OpenR's greedy "rollout by initial critic value"); with
  ``select_by_prior`` it is a draw by prior instead (``_select_by_prior``; our
  per-problem RNG). A move into a node that is not terminal and has no children expands
  it, so every path descends, expanding as it goes, until a terminal node (our
  ``finished``), the depth cap ``tree_max_depth`` (``truncated``), or a dead end.
- Backup (``update_recursive``, ``play_with_bot_mode``): the path's end value (its mean
  value if visited before, else its initial value) is added to every node from the end
  up to the root, each visit count +1.
- Output: OpenR returns the ``num_path`` path texts (an end reached twice counts twice)
  and votes over them (``reason/evaluation/evaluator.py``, ``vote_utils.py``:
  majority, PRM-last/min vote and max). ``finalists: paths`` (default) gives our vote
  exactly those path ends, in path order; its ``majority`` is OpenR's majority vote,
  ``weighted_majority`` / ``best_of_n`` with ``search.aggregation=last`` (or ``min``)
  its ``prm_last_vote`` / ``prm_last_max`` (``prm_min_*``). ``finalists: tree``: every
  finished node the MCTS tree kept (our vote over everything found).

Our choices (the references leave them open or do not have them):

- Budget: ``num_path`` = ``search.width`` unless ``selector.num_path`` is set (OpenR's
  ``--num_sequence``). If the next expansion would exceed ``budget.max_nodes`` the
  search ends there (the path in progress is neither backed up nor a finalist;
  ``stopped_by_max_nodes`` in the record). ``tree_max_depth`` is also capped by
  ``search.max_depth`` (whose nodes the loop marks finished, reason ``depth``).
- Dead end (every continuation dropped): OpenR regenerates up to 3 times and then ends
  the path there (``NoLegalActionException`` → terminated). Our request seeds are per
  node, so a retry would draw the same continuations: the node is marked a dead end at
  once, and a path reaching it ends there (value backed up as for any end). A dead root
  ends the search with no finalist (OpenR raises ``ResetException``).
- Root Dirichlet noise and visit-count sampling (``get_next_action``) are not part of
  ``vanila_mcts`` and are not implemented.
- KV: MCTS keeps its whole tree (OpenR keeps every node): ``kv_nodes`` are the open
  nodes of the kept tree with no open child (:func:`ets.selectors.mcts_common.open_leaves`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from ets.core.tree import Node, Tree
from ets.protocols import Budget
from ets.schema import Component, choice, num, schema
from ets.selectors.mcts_common import (
    GeneratorStrategy,
    Search,
    check_counts,
    check_temperature,
    expandable,
    one_of,
)
from ets.types import Problem

FINALISTS = ("paths", "tree")
TRUNCATED = ("length", "context")  # engine finish reasons of a cut-off step


@dataclass(eq=False)
class PUCTNode:
    """One kept step in OpenR's tree: prior, initial value, visits and value sum."""

    node: Node
    parent: PUCTNode | None
    prior: float = 1.0
    initial_value: float = 0.0
    visits: int = 0
    value_sum: float = 0.0
    children: list[PUCTNode] = field(default_factory=list)
    expanded: bool = False  # its children were generated (OpenR: not ``is_leaf``)
    dead: bool = False  # its expansion kept no child

    @property
    def kids(self) -> list[PUCTNode]:
        return self.children

    @property
    def value(self) -> float:
        """OpenR ``Node.value``: the initial value until visited, then the mean."""
        return self.initial_value if self.visits == 0 else self.value_sum / self.visits


def puct_score(parent_visits: int, child_visits: int, q: float, prior: float,
               pb_c_base: float = 19652, pb_c_init: float = 1.25) -> float:
    """OpenR ``_ucb_score``: ``Q + (ln((N+base+1)/base) + init) * sqrt(N)/(n+1) * P``."""
    c = math.log((parent_visits + pb_c_base + 1) / pb_c_base) + pb_c_init
    return q + c * math.sqrt(parent_visits) / (child_visits + 1) * prior


def priors(nodes: list[Node]) -> list[float]:
    """``exp(mean token logprob)`` of each step, normalised to sum 1 over the siblings."""
    raw = [math.exp(n.logprob / max(1, n.n_tokens)) for n in nodes]
    total = sum(raw)
    return [r / total for r in raw]


def legal_children(kids: list[Node], dedup: bool = True, drop_truncated: bool = True) -> list[Node]:
    """OpenR's legal actions among the generated children, in generation order."""
    out, seen = [], set()
    for k in kids:
        if not k.text or (drop_truncated and k.stop_reason in TRUNCATED):
            continue
        if dedup and k.text in seen:
            continue
        seen.add(k.text)
        out.append(k)
    return out


class PUCTStrategy(GeneratorStrategy):
    """One problem's OpenR ``vanila_mcts`` (module docstring)."""

    name = "mcts_puct"

    def __init__(self, tree: Tree, budget: Budget, rng: random.Random, *, num_path: int,
                 tree_max_width: int, tree_max_depth: int, pb_c_base: float, pb_c_init: float,
                 temperature: float | None, select_by_prior: bool, dedup: bool,
                 drop_truncated: bool, finalists: str) -> None:
        self.tree, self.budget, self.rng = tree, budget, rng
        self.num_path, self.width = num_path, tree_max_width
        self.depth_cap = min(tree_max_depth, budget.max_depth)
        self.pb_c_base, self.pb_c_init = pb_c_base, pb_c_init
        self.temperature, self.select_by_prior = temperature, select_by_prior
        self.dedup, self.drop_truncated, self.finalist_rule = dedup, drop_truncated, finalists
        self.root = PUCTNode(tree.root, None)
        self.nodes: list[PUCTNode] = [self.root]
        self.path_ends: list[PUCTNode] = []
        self.path_values: list[float] = []
        self.dropped = 0
        self._start()

    # -- the search ----------------------------------------------------------------------
    def _search(self) -> Search:
        if not (yield from self._expand(self.root)) or not self.root.children:
            return
        for _ in range(self.num_path):
            node = self.root
            while True:
                node = self.select_child(node)
                done = node.node.finished or node.dead or node.node.depth >= self.depth_cap
                if not done and not expandable(node.node, self.budget):
                    done = True  # a custom finisher left a capped node open
                if not done and not node.expanded:
                    if not (yield from self._expand(node)):
                        return
                    done = node.dead
                if done:
                    break
            value = node.value
            self.backup(node, value)
            self.path_ends.append(node)
            self.path_values.append(value)

    def _expand(self, m: PUCTNode) -> Search:
        kids = yield from self._generate(m.node, self.width)
        if kids is None:
            return False
        kept = legal_children(kids, self.dedup, self.drop_truncated)
        self.dropped += len(kids) - len(kept)
        m.expanded = True
        if kept:
            m.children = [PUCTNode(k, m, prior=p, initial_value=k.score if k.score is not None else 0.0)
                          for k, p in zip(kept, priors(kept), strict=True)]
            self.nodes.extend(m.children)
        else:
            m.dead = True
        return True

    def select_child(self, m: PUCTNode) -> PUCTNode:
        """OpenR ``_select_child`` (first maximum wins), or ``_select_by_prior`` at an
        unvisited node when ``select_by_prior``."""
        if self.select_by_prior and m.visits == 0:
            return self.rng.choices(m.children, weights=[c.prior for c in m.children])[0]
        best, best_score = m.children[0], -math.inf
        for c in m.children:
            s = puct_score(m.visits, c.visits, c.value, c.prior, self.pb_c_base, self.pb_c_init)
            if s > best_score:
                best, best_score = c, s
        return best

    @staticmethod
    def backup(m: PUCTNode | None, value: float) -> None:
        """OpenR ``update_recursive`` (``play_with_bot_mode``): the same value up to the root."""
        while m is not None:
            m.visits += 1
            m.value_sum += value
            m = m.parent

    # -- the loop's view -------------------------------------------------------------------
    def finalists(self) -> list[Node]:
        if self.finalist_rule == "tree":
            return [m.node for m in self.nodes if m.node.finished]
        return [m.node for m in self.path_ends if m.node.finished]

    def _mcts_nodes(self) -> list[Any]:
        return self.nodes

    def stats(self) -> dict[str, float]:
        return {**self._base_stats(), "paths": float(len(self.path_ends)),
                "root_visits": float(self.root.visits), "dropped": float(self.dropped),
                "dead_ends": float(sum(m.dead for m in self.nodes)),
                "tree_nodes": float(len(self.nodes) - 1)}


class MCTSPUCTStrategies:
    """Factory of :class:`PUCTStrategy` (``selector=mcts_puct``).

    Args:
        num_path: Paths (OpenR ``num_path``); ``None``: ``search.width``.
        tree_max_width: Continuations sampled per expansion (OpenR 4).
        tree_max_depth: Depth cap of a path (OpenR 50; also capped by ``search.max_depth``).
        pb_c_base, pb_c_init: PUCT constants (19652, 1.25).
        temperature: Sampling temperature of expansions (OpenR's script: 0.7); ``None``:
            the policy's.
        select_by_prior: At an unvisited node, draw the child by prior (OpenR's option,
            off in its evaluation).
        dedup: Drop continuations identical to an earlier sibling (OpenR: always).
        drop_truncated: Drop continuations cut by the token limit (OpenR: always).
        finalists: ``paths`` (OpenR's output) or ``tree``.
    """

    uses_step_logprobs = True  # its priors (:class:`ets.protocols.UsesStepLogprobs`)

    def __init__(self, num_path: int | None = None, tree_max_width: int = 4, tree_max_depth: int = 50,
                 pb_c_base: float = 19652, pb_c_init: float = 1.25, temperature: float | None = 0.7,
                 select_by_prior: bool = False, dedup: bool = True, drop_truncated: bool = True,
                 finalists: str = "paths") -> None:
        check_counts(num_path=num_path, tree_max_width=tree_max_width, tree_max_depth=tree_max_depth)
        if not pb_c_base > 0:
            raise ValueError(f"pb_c_base={pb_c_base} is invalid: must be > 0")
        if not pb_c_init >= 0:
            raise ValueError(f"pb_c_init={pb_c_init} is invalid: must be >= 0")
        check_temperature(temperature)
        finalists = one_of("finalists", finalists, FINALISTS)
        self.kw: dict[str, Any] = dict(
            tree_max_width=tree_max_width, tree_max_depth=tree_max_depth, pb_c_base=pb_c_base,
            pb_c_init=pb_c_init, temperature=temperature, select_by_prior=select_by_prior,
            dedup=dedup, drop_truncated=drop_truncated, finalists=finalists)
        self.num_path = num_path

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> PUCTStrategy:
        return PUCTStrategy(tree, budget, rng, num_path=self.num_path or budget.width, **self.kw)


@schema("selector", "mcts_puct", MCTSPUCTStrategies)
class MCTSPUCTConf(Component):
    """``selector=mcts_puct`` (OpenR ``vanila_mcts``); defaults from ``MCTSPUCTStrategies``."""

    num_path: int | None = num(ge=1)  # None: search.width
    tree_max_width: int = num(ge=1)
    tree_max_depth: int = num(ge=1)
    pb_c_base: float = num(gt=0)
    pb_c_init: float = num(ge=0)
    temperature: float | None = num(ge=0)  # None: the policy's
    select_by_prior: bool
    dedup: bool
    drop_truncated: bool
    finalists: str = choice("paths", "tree")
