"""MCTS with UCT as in RAP / llm-reasoners (``selector=mcts_uct``; ALGORITHMS.md §7).

Where each rule comes from (maitrix-org/llm-reasoners, commit f94e5ac,
``reasoners/algorithm/mcts.py``, class ``MCTS`` and its defaults; the RAP GSM8k example
``examples/RAP/gsm8k/`` for the action count and temperature):

- A node is an action (here: a generated step) with a ``fast_reward`` known when it is
  generated (here: the PRM score of the step) and a *state* computed only when the
  node is first expanded (``_expand``: ``world_model.step``, then ``reward`` and
  ``is_terminal``). Here the step is already generated, so expanding a node means: its
  ``reward`` (the PRM score again: our reward is the fast reward), ``is_terminal``
  (our ``finished``), and, if it is not terminal, its children: ``n_actions`` sampled
  continuations (``get_actions``; RAP's ``n_action`` 4, ``temperature`` 0.8; RAP
  de-duplicates them, ``dedup``).
- One iteration (``iterate``): ``_select`` descends from the root while the node has
  children and is not terminal nor at ``depth_limit``, by ``_uct_select``:
  ``argmax Q + w_exp·sqrt(ln N_parent / max(1, N_child))`` where ``N`` = the number of
  backed-up returns (``len(cum_rewards)``) and ``Q`` = ``calc_q(cum_rewards)`` (mean),
  or the fast reward while the node is unexpanded (``uct_with_fast_reward=True``; with
  ``False`` the unexpanded children go first, the one with the best fast reward). The
  first maximum wins (Python ``max``).
- Then, unless the last node is terminal or at the depth limit, it is expanded and
  ``_simulate`` runs: repeatedly expand the node if unexpanded, stop at a terminal
  node, the depth limit or no children, else move to the child with the best fast
  reward (``simulate_strategy='max'``, ``np.argmax``: first maximum; ``random``: a
  uniform draw by our per-problem RNG). Simulated steps are tree nodes, as in
  llm-reasoners (they are appended to the path and kept in the tree). As there, a
  node reached at the depth limit during simulation is expanded before the limit is
  checked (its children are generated but never used); ``expand_at_depth_limit=false``
  skips that expansion (our option).
- ``_back_propagate``: walking the path from its end to the root, each node appends
  ``cum_reward(rewards of the path from it to the end)`` (default ``sum``; the root's
  reward is 0) to its ``cum_rewards``.
- Output (``output_strategy``): ``max_reward`` (default; ``_dfs_max_reward``: over
  expanded nodes, the terminal path with the largest ``cum_reward`` of its rewards, root
  excluded), ``max_iter`` (the iteration's terminal path with the best return),
  ``last_terminal_iter``, ``aggregate`` (``MCTSAggregation``, ``weight_policy='edge'``,
  which RAP's GSM8k example turns on: each answer gets the rewards of its terminal nodes
  and of every node above them, once per node), and ``vote`` (ours: every iteration's
  terminal path end, an end reached twice counting twice, for the ``search.aggregation``
  weighted vote). The first four hand our vote one finished node (so every vote rule
  gives the reference's answer).

Our choices:

- Budget: ``n_iters`` = ``search.width`` unless ``selector.n_iters`` is set (the
  reference's default is 10). If the next expansion would exceed ``budget.max_nodes``
  the search ends there (the iteration in progress is not backed up;
  ``stopped_by_max_nodes`` in the record).
- RAP's GSM8k example overrides ``cum_reward=mean``, ``calc_q=max``: both are keys.
- A node whose children were generated is not generated again (the reference would
  regenerate an expanded node that got no action; our request seeds are per node, so
  that would repeat the same draw).
- KV: MCTS keeps its whole tree: ``kv_nodes`` are its open nodes with no open child
  (:func:`ets.selectors.mcts_common.open_leaves`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
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

OUTPUT_STRATEGIES = ("max_reward", "max_iter", "last_terminal_iter", "aggregate", "vote")
CUM_REWARDS: dict[str, Callable[[list[float]], float]] = {
    "sum": sum, "mean": lambda xs: sum(xs) / len(xs), "max": max}
CALC_Q: dict[str, Callable[[list[float]], float]] = {
    "mean": lambda xs: sum(xs) / len(xs), "max": max}
SIMULATE = ("max", "random")


@dataclass(eq=False)
class UCTNode:
    """llm-reasoners ``MCTSNode``: ``expanded`` stands for ``state is not None``."""

    node: Node
    parent: UCTNode | None
    fast_reward: float = 0.0
    reward: float = 0.0
    expanded: bool = False
    is_terminal: bool = False
    children: list[UCTNode] | None = None
    cum_rewards: list[float] = field(default_factory=list)

    @property
    def kids(self) -> list[UCTNode]:
        return self.children or []

    @property
    def depth(self) -> int:
        return self.node.depth


class UCTStrategy(GeneratorStrategy):
    """One problem's llm-reasoners ``MCTS.search`` (module docstring)."""

    name = "mcts_uct"

    def __init__(self, tree: Tree, budget: Budget, rng: random.Random, *, n_iters: int, n_actions: int,
                 depth_limit: int, w_exp: float, cum_reward: str, calc_q: str, simulate_strategy: str,
                 output_strategy: str, uct_with_fast_reward: bool, expand_at_depth_limit: bool,
                 dedup: bool, temperature: float | None) -> None:
        self.tree, self.budget, self.rng = tree, budget, rng
        self.n_iters, self.n_actions, self.depth_limit, self.w_exp = n_iters, n_actions, depth_limit, w_exp
        self.cum_reward, self.calc_q = CUM_REWARDS[cum_reward], CALC_Q[calc_q]
        self.simulate_strategy, self.output_strategy = simulate_strategy, output_strategy
        self.uct_with_fast_reward, self.expand_at_depth_limit = uct_with_fast_reward, expand_at_depth_limit
        self.dedup, self.temperature = dedup, temperature
        self.root = UCTNode(tree.root, None, expanded=True)  # the root's state is the question
        self.nodes: list[UCTNode] = [self.root]
        self.iter_paths: list[list[UCTNode]] = []
        self.iter_returns: list[float] = []
        self._start()

    # -- the search ----------------------------------------------------------------------
    def _search(self) -> Search:
        for _ in range(self.n_iters):
            path = self.select(self.root)
            if not self.terminal_with_depth_limit(path[-1]):
                if not (yield from self._expand(path[-1])):
                    return
                if not (yield from self._simulate(path)):
                    return
            self.iter_returns.append(self.back_propagate(path))
            self.iter_paths.append(path)

    def terminal_with_depth_limit(self, m: UCTNode) -> bool:
        return m.is_terminal or m.depth >= self.depth_limit

    def q(self, m: UCTNode) -> float:
        """``MCTSNode.Q``: the fast reward while unexpanded, else ``calc_q(cum_rewards)``."""
        if not m.expanded or not m.cum_rewards:
            return m.fast_reward
        return self.calc_q(m.cum_rewards)

    def uct(self, m: UCTNode) -> float:
        assert m.parent is not None
        n_parent = len(m.parent.cum_rewards)
        explore = math.sqrt(math.log(n_parent) / max(1, len(m.cum_rewards))) if n_parent else 0.0
        return self.q(m) + self.w_exp * explore

    def uct_select(self, m: UCTNode) -> UCTNode:
        kids = m.kids
        if self.uct_with_fast_reward or all(c.expanded for c in kids):
            return max(kids, key=self.uct)
        return max((c for c in kids if not c.expanded), key=lambda c: c.fast_reward)

    def select(self, m: UCTNode) -> list[UCTNode]:
        path = []
        while True:
            path.append(m)
            if not m.kids or self.terminal_with_depth_limit(m):
                return path
            m = self.uct_select(m)

    def _expand(self, m: UCTNode) -> Search:
        if not m.expanded:
            m.expanded = True
            m.reward = m.fast_reward
            m.is_terminal = m.node.finished or not expandable(m.node, self.budget)
        if m.is_terminal or m.children is not None:
            return True
        if not self.expand_at_depth_limit and m.depth >= self.depth_limit:
            return True
        kids = yield from self._generate(m.node, self.n_actions)
        if kids is None:
            return False
        if self.dedup:
            seen: set[str] = set()
            kids = [k for k in kids if not (k.text in seen or seen.add(k.text))]
        m.children = [UCTNode(k, m, fast_reward=k.score if k.score is not None else 0.0) for k in kids]
        self.nodes.extend(m.children)
        return True

    def _simulate(self, path: list[UCTNode]) -> Search:
        m = path[-1]
        while True:
            if not m.expanded:
                if not (yield from self._expand(m)):
                    return False
            if self.terminal_with_depth_limit(m) or not m.kids:
                return True
            if self.simulate_strategy == "random":
                m = m.kids[self.rng.randrange(len(m.kids))]
            else:
                rewards = [c.fast_reward for c in m.kids]
                m = m.kids[rewards.index(max(rewards))]
            path.append(m)

    def back_propagate(self, path: list[UCTNode]) -> float:
        rewards: list[float] = []
        cum = -math.inf
        for m in reversed(path):
            rewards.append(m.reward)
            cum = self.cum_reward(rewards[::-1])
            m.cum_rewards.append(cum)
        return cum

    # -- output ----------------------------------------------------------------------------
    def dfs_max_reward(self, path: list[UCTNode]) -> tuple[float, list[UCTNode]]:
        """llm-reasoners ``_dfs_max_reward``."""
        cur = path[-1]
        if cur.is_terminal:
            return self.cum_reward([m.reward for m in path[1:]]), path
        visited = [c for c in cur.kids if c.expanded]
        if cur.children is None or not visited:
            return -math.inf, path
        return max((self.dfs_max_reward([*path, c]) for c in visited), key=lambda x: x[0])

    def aggregate(self) -> Node | None:
        """llm-reasoners ``MCTSAggregation`` with ``weight_policy='edge'``: the winning
        answer's first terminal node (depth-first order)."""
        weight: dict[str, float] = {}
        first: dict[str, Node] = {}

        def visit(cur: UCTNode) -> list[str]:
            if not cur.expanded:
                return []
            if cur.is_terminal:
                answer = cur.node.answer
                if answer is None:
                    return []
                weight[answer] = weight.get(answer, 0.0) + cur.reward
                first.setdefault(answer, cur.node)
                return [answer]
            found: list[str] = []
            for child in cur.kids:
                found.extend(visit(child))
            for answer in dict.fromkeys(found):
                weight[answer] += cur.reward
            return found

        visit(self.root)
        if not weight:
            return None
        return first[max(weight, key=lambda a: weight[a])]

    def finalists(self) -> list[Node]:
        rule = self.output_strategy
        ends = [(p[-1], r) for p, r in zip(self.iter_paths, self.iter_returns, strict=True)
                if p[-1].is_terminal]
        if rule == "vote":
            out = [m.node for m, _ in ends]
        elif rule == "aggregate":
            best = self.aggregate()
            out = [] if best is None else [best]
        elif rule == "max_reward":
            value, path = self.dfs_max_reward([self.root])
            out = [] if value == -math.inf else [path[-1].node]
        elif rule == "max_iter":
            best_m, best_r = None, -math.inf
            for m, r in ends:
                if r > best_r:
                    best_m, best_r = m, r
            out = [] if best_m is None else [best_m.node]
        else:  # last_terminal_iter
            out = [ends[-1][0].node] if ends else []
        return [n for n in out if n.finished]

    def _mcts_nodes(self) -> list[Any]:
        return self.nodes

    def stats(self) -> dict[str, float]:
        return {**self._base_stats(), "iterations": float(len(self.iter_paths)),
                "terminal_iterations": float(sum(p[-1].is_terminal for p in self.iter_paths)),
                "tree_nodes": float(len(self.nodes) - 1)}


class MCTSUCTStrategies:
    """Factory of :class:`UCTStrategy` (``selector=mcts_uct``).

    Args:
        n_iters: MCTS iterations; ``None``: ``search.width`` (llm-reasoners: 10).
        n_actions: Continuations per expansion (RAP GSM8k ``n_action`` 4).
        depth_limit: No node at this depth is selected through or simulated past (5).
        w_exp: UCT exploration weight (1).
        cum_reward: ``sum`` (default), ``mean`` (RAP GSM8k) or ``max``.
        calc_q: ``mean`` (default) or ``max`` (RAP GSM8k).
        simulate_strategy: ``max`` (default) or ``random``.
        output_strategy: One of :data:`OUTPUT_STRATEGIES` (default ``max_reward``).
        uct_with_fast_reward: Unexpanded children compete in UCT with their fast reward (True).
        expand_at_depth_limit: Simulation expands a node reached at the depth limit, as
            the reference does (True).
        dedup: Drop continuations identical to an earlier sibling (RAP's ``get_actions``).
        temperature: Sampling temperature of expansions (RAP: 0.8); ``None``: the policy's.
    """

    def __init__(self, n_iters: int | None = None, n_actions: int = 4, depth_limit: int = 5,
                 w_exp: float = 1.0, cum_reward: str = "sum", calc_q: str = "mean",
                 simulate_strategy: str = "max", output_strategy: str = "max_reward",
                 uct_with_fast_reward: bool = True, expand_at_depth_limit: bool = True,
                 dedup: bool = True, temperature: float | None = 0.8) -> None:
        check_counts(n_iters=n_iters, n_actions=n_actions, depth_limit=depth_limit)
        if not w_exp >= 0:
            raise ValueError(f"w_exp={w_exp} is invalid: must be >= 0")
        check_temperature(temperature)
        values = {"cum_reward": one_of("cum_reward", cum_reward, CUM_REWARDS),
                  "calc_q": one_of("calc_q", calc_q, CALC_Q),
                  "simulate_strategy": one_of("simulate_strategy", simulate_strategy, SIMULATE),
                  "output_strategy": one_of("output_strategy", output_strategy, OUTPUT_STRATEGIES)}
        self.n_iters = n_iters
        self.kw: dict[str, Any] = dict(
            n_actions=n_actions, depth_limit=depth_limit, w_exp=w_exp, **values,
            uct_with_fast_reward=uct_with_fast_reward, expand_at_depth_limit=expand_at_depth_limit,
            dedup=dedup, temperature=temperature)

    def __call__(self, problem: Problem, tree: Tree, rng: random.Random, budget: Budget) -> UCTStrategy:
        return UCTStrategy(tree, budget, rng, n_iters=self.n_iters or budget.width, **self.kw)


@schema("selector", "mcts_uct", MCTSUCTStrategies)
class MCTSUCTConf(Component):
    """``selector=mcts_uct`` (llm-reasoners ``MCTS``); defaults from ``MCTSUCTStrategies``."""

    n_iters: int | None = num(ge=1)  # None: search.width
    n_actions: int = num(ge=1)
    depth_limit: int = num(ge=1)
    w_exp: float = num(ge=0)
    cum_reward: str = choice("sum", "mean", "max")
    calc_q: str = choice("mean", "max")
    simulate_strategy: str = choice("max", "random")
    output_strategy: str = choice("max_reward", "max_iter", "last_terminal_iter", "aggregate", "vote")
    uct_with_fast_reward: bool
    expand_at_depth_limit: bool
    dedup: bool
    temperature: float | None = num(ge=0)  # None: the policy's
