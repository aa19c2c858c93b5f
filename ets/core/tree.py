"""The search tree: a root (the prompt) and one node per reasoning step."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any


@dataclass(eq=False)
class Node:
    """One reasoning step (or the root, which holds the prompt).

    Attributes:
        id: Index in ``Tree.nodes`` (root is 0).
        parent: Parent node, ``None`` for the root.
        depth: 0 for the root, 1 for its children, ...
        text: The step text (the prompt for the root).
        token_ids: The step's tokens (the prompt's for the root).
        cum_tokens: Generated tokens on the path root..node (prompt excluded).
        score: PRM score of the path ending here (``None`` for the root).
        finished: The trajectory ended at this node.
        finish_reason: ``answer``, ``eos``, ``length`` (token cap) or ``depth``.
        answer: Extracted final answer, if any.
        logprob: Policy log-probability of the step's tokens.
        cluster: ETS cluster label of the node when it was a candidate (tree pages).
        stop_reason: Why the engine ended this step's generation (``stop``, ``eos``,
            ``length``, ``context``; ``None`` for the root): methods that drop truncated
            steps (OpenR's MCTS) read it.
    """

    id: int
    parent: Node | None
    depth: int
    text: str
    token_ids: tuple[int, ...]
    cum_tokens: int = 0
    score: float | None = None
    finished: bool = False
    finish_reason: str | None = None
    answer: str | None = None
    logprob: float = 0.0
    cluster: int | None = None
    stop_reason: str | None = None
    children: list[Node] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)

    def path(self) -> list[Node]:
        """Nodes from the first step to this one (root excluded)."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def ancestors(self) -> Iterator[Node]:
        """Strict ancestors, nearest first, root last."""
        node = self.parent
        while node is not None:
            yield node
            node = node.parent

    def step_scores(self) -> list[float]:
        return [n.score for n in self.path() if n.score is not None]


class Tree:
    """A search tree for one problem."""

    def __init__(self, prompt_text: str, prompt_ids: tuple[int, ...]) -> None:
        self.root = Node(id=0, parent=None, depth=0, text=prompt_text, token_ids=tuple(prompt_ids))
        self.nodes: list[Node] = [self.root]
        # Look-ahead rollouts: scored, chainable, but not children of their parent
        # (not in ``nodes``, the record, the width or the KV); ids -1, -2, ...
        self.rollouts: dict[int, Node] = {}

    def add_child(self, parent: Node, text: str, token_ids: tuple[int, ...], **kw: Any) -> Node:
        node = Node(
            id=len(self.nodes),
            parent=parent,
            depth=parent.depth + 1,
            text=text,
            token_ids=tuple(token_ids),
            cum_tokens=parent.cum_tokens + len(token_ids),
            **kw,
        )
        parent.children.append(node)
        self.nodes.append(node)
        return node

    def add_rollout(self, parent: Node, text: str, token_ids: tuple[int, ...], **kw: Any) -> Node:
        """A rollout node below ``parent`` (a tree node or another rollout)."""
        node = Node(
            id=-(len(self.rollouts) + 1),
            parent=parent,
            depth=parent.depth + 1,
            text=text,
            token_ids=tuple(token_ids),
            cum_tokens=parent.cum_tokens + len(token_ids),
            **kw,
        )
        self.rollouts[node.id] = node
        return node

    def owns(self, node: Node) -> bool:
        """``node`` is this tree's node or one of its rollouts."""
        if node.id >= 0:
            return node.id < len(self.nodes) and self.nodes[node.id] is node
        return self.rollouts.get(node.id) is node

    def context(self, node: Node) -> tuple[str, tuple[int, ...]]:
        """Prompt plus every step up to ``node``: the text and the token ids."""
        path = node.path()
        text = self.root.text + "".join(n.text for n in path)
        ids = self.root.token_ids + tuple(chain.from_iterable(n.token_ids for n in path))
        return text, ids

    def finished(self) -> list[Node]:
        return [n for n in self.nodes if n.finished]

    def to_records(self) -> list[dict[str, Any]]:
        """The whole tree as JSON-ready rows (root first)."""
        return [
            {
                "id": n.id,
                "parent": None if n.parent is None else n.parent.id,
                "depth": n.depth,
                "tokens": n.n_tokens,
                "score": n.score,
                "finished": n.finished,
                "finish_reason": n.finish_reason,
                "answer": n.answer,
                "text": n.text,
                **({"cluster": n.cluster} if n.cluster is not None else {}),
            }
            for n in self.nodes
        ]
