"""The search core (issue 9): the loop, the tree, and what the loop is made of.

- :mod:`ets.core.search`: the loop and its two schedulers (``lockstep`` and ``async``).
- :mod:`ets.core.tree`: the search tree (:class:`~ets.core.tree.Node`, :class:`~ets.core.tree.Tree`).
- :mod:`ets.core.answers`: answer extraction, path-score aggregation and the final vote.
- :mod:`ets.core.finish`: finish classification and answer extraction (configured with the
  policy's answer markers and step tag and the search's caps).
- :mod:`ets.core.width`: the adapter strategy that runs every ``Selector`` (width
  allocation over this depth's new children) on the :class:`~ets.protocols.SearchStrategy`
  protocol.
- :mod:`ets.core.lookahead`: look-ahead rollouts for the width selectors (beam search, DVTS).
- :mod:`ets.core.engines`: how the scheduler talks to a policy (one batch of what is
  ready, or a streaming policy that returns requests as they finish).
- :mod:`ets.core.checks`: validation of what strategies return.

The protocols themselves live in :mod:`ets.protocols`.
"""
