"""What the two MCTS strategies share (:mod:`ets.selectors.mcts_puct`,
:mod:`ets.selectors.mcts_uct`): a search written as one sequential generator, and the
KV nodes of a tree that is kept whole.

Both references are sequential loops that call the LLM in the middle of an iteration
(OpenR ``SearchTree.vanila_mcts``; llm-reasoners ``MCTS.iterate``). We keep them as such:
the strategy's ``_search`` is a generator that ``yield``\\ s the node it wants expanded
and receives the new children; :class:`GeneratorStrategy` turns that into the loop's
propose/observe protocol (one expansion per round: sequential MCTS). Problems still
batch with each other through the scheduler.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable
from typing import Any

from ets.core.tree import Node, Tree
from ets.protocols import Budget, Expansion

# The generator yields (node, n) and is sent the n generated children.
Search = Generator[tuple[Node, int], list[Node], None]


def open_leaves(nodes: Iterable[Any]) -> list[Node]:
    """The open nodes of an MCTS tree none of whose children is open (``nodes``: the
    MCTS nodes, each with ``.node``, its tree node, and ``.kids``, its MCTS children).

    MCTS may return to any node of its tree in a later iteration, so it keeps the whole
    tree (OpenR keeps every ``LanguageNode``; llm-reasoners every ``MCTSNode``): the
    union of the root paths of these nodes is every open node of the tree. Finished
    steps are left out (the loop's KV nodes are open nodes; a finished step is never
    extended), and so are generated children that the method dropped (duplicates,
    truncated steps).
    """
    out = []
    for m in nodes:
        if m.node.finished:
            continue
        if not any(not k.node.finished for k in m.kids):
            out.append(m.node)
    return sorted(out, key=lambda n: n.id)


class GeneratorStrategy:
    """Drives ``self._search()`` (a :data:`Search` generator) through propose/observe.

    Subclasses set ``tree``, ``budget``, ``temperature`` and call :meth:`_start` at the
    end of ``__init__``; inside ``_search`` they get children with
    ``kids = yield from self._generate(node, n)`` (``None``: the node budget is spent and
    the search must end).
    """

    name = "mcts"
    tree: Tree
    budget: Budget
    temperature: float | None

    def _start(self) -> None:
        self.generated = 0  # tree nodes generated so far (budget.max_nodes)
        self.expansions = 0
        self.stopped_by_budget = False
        self._gen = self._search()
        self._want: tuple[Node, int] | None = self._advance(None)

    def _search(self) -> Search:  # pragma: no cover - overridden
        raise NotImplementedError

    def _advance(self, kids: list[Node] | None) -> tuple[Node, int] | None:
        try:
            return next(self._gen) if kids is None else self._gen.send(kids)
        except StopIteration:
            return None

    def _generate(self, node: Node, n: int) -> Generator[tuple[Node, int], list[Node], list[Node] | None]:
        """Ask the loop for ``n`` children of ``node``; ``None`` if that would exceed
        ``budget.max_nodes`` (the search then ends: our rule, the references have no
        node budget)."""
        if self.generated + n > self.budget.max_nodes:
            self.stopped_by_budget = True
            return None
        kids = yield node, n
        return kids

    def propose(self) -> list[Expansion]:
        if self._want is None:
            return []
        node, n = self._want
        return [Expansion(node, n, temperature=self.temperature)]

    def observe(self, results: list[tuple[Expansion, list[Node]]]) -> None:
        kids = [c for _, cs in results for c in cs]
        self.generated += len(kids)
        self.expansions += 1
        self._want = self._advance(kids)

    def kv_nodes(self) -> list[Node]:
        """The open nodes of the kept tree with no open child (:func:`open_leaves`)."""
        return open_leaves(self._mcts_nodes())

    def _mcts_nodes(self) -> list[Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def done(self) -> bool:
        return self._want is None

    def _base_stats(self) -> dict[str, Any]:
        return {"expansions": float(self.expansions),
                "stopped_by_max_nodes": float(self.stopped_by_budget)}


def expandable(node: Node, budget: Budget) -> bool:
    """The loop may expand ``node`` (open, under the depth and token caps)."""
    return (not node.finished and node.depth < budget.max_depth
            and node.cum_tokens < budget.max_tokens)


# ---- constructor checks shared by the MCTS factories ----------------------------------------
def check_counts(**values: int | None) -> None:
    """Each value is ``None`` or an integer >= 1 (the message names the key)."""
    for key, value in values.items():
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{key}={value!r} is invalid: must be an integer >= 1")


def check_temperature(temperature: float | None) -> None:
    if temperature is not None and not temperature >= 0:
        raise ValueError(f"temperature={temperature} is invalid: must be >= 0 or null")


def one_of(key: str, value: Any, allowed: Iterable[str]) -> str:
    """``value`` (a string or a str Enum member) as a string, if it is one of ``allowed``."""
    value, allowed = str(getattr(value, "value", value)), tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{key}={value!r} is invalid; allowed: {', '.join(allowed)}")
    return value
