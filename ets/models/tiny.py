"""Tiny random Llamas with the SmolLM2 tokenizer: real-architecture test fixtures.

hidden 64 and 2 layers is ~3.3 M parameters (mostly the 49152 x 64 embedding), builds,
saves and generates in under a second; the folder has everything a server needs
(config, generation config, tokenizer with its chat template), so vLLM can serve it.
"""

from __future__ import annotations

from pathlib import Path

from ets.models.smollm2 import smollm2_path


def tiny_llama(
    path: str | Path, tokenizer_from: str | Path | None = None, hidden: int = 64, layers: int = 2,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised ``LlamaForCausalLM`` and a tokenizer into ``path``.

    Args:
        path: Output folder (created; existing files are overwritten).
        tokenizer_from: Folder or hub id to take the tokenizer (and special token ids)
            from; ``None`` = the SmolLM2 folder from :func:`smollm2_path`.
        hidden: Hidden size (attention heads are ``hidden // 16``, 2 key/value heads).
        layers: Number of decoder layers.
        seed: Weight initialisation seed (same seed = same weights).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from if tokenizer_from is not None else smollm2_path())
    heads = max(1, hidden // 16)
    eos = tokenizer.eos_token_id
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=min(2, heads),
        max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=eos, pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=eos, pad_token_id=config.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
