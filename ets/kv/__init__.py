"""KV cache accounting backends (ALGORITHMS.md §6).

Each backend implements :class:`ets.protocols.KVBackend`: ``measure(tree, live)``
returns the KV cache size, in tokens, held by the root-to-node paths of the
frontier ``live``. They differ only in what counts as shared:

- :class:`PaperKV` (``paper``): step tokens over the union of the paths, shared
  at node boundaries only, prompt left out (the paper's reference number).
- :class:`RadixKV` (``radix``): a token-level prefix trie of the full sequences,
  prompt included (SGLang RadixAttention).
- :class:`PagedKV` (``paged``): blocks of ``block_size`` tokens with prefix
  caching; partial last blocks are private (vLLM).
"""

from ets.kv.paged import PagedKV
from ets.kv.paper import PaperKV
from ets.kv.radix import RadixKV

__all__ = ["PagedKV", "PaperKV", "RadixKV"]
