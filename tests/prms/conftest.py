"""Tiny random PRMs of the real architectures, with tokenizers that have the right special tokens.

Tokenizers are trained in milliseconds with ``tokenizers``: a sentencepiece-like one
(Metaspace, BOS added, every newline its own token — like Llama-2/Mistral's ``<0x0A>``)
for Math-Shepherd (Mistral) and Llemma (Llama), and byte-level ones (like Qwen2 and
Llama 3) with the chat tokens of each model. Weights are drawn with a large
initializer range so that scores differ clearly between positions: a test that reads
the wrong position or applies the wrong formula fails by far more than its tolerance.
"""

from __future__ import annotations

import string
from pathlib import Path

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from ets.core.tree import Node, Tree
from ets.types import Problem

QUESTION = "What is 2 + 3 - 1?"
STEPS = ["Step 1: 2 + 3 = 5\n\n", "Step 2: 5 - 1 = 4\n\n", "Step 3: The answer is 4\n\n"]
CORPUS = [
    QUESTION,
    *STEPS,
    "# Question\n\nWhat is 1 - 1?\n\n# Solution\n\nIt is 0.\n\n# Answer\n\n0",
    "Step 1: ok ки\nStep 2: The answer is 4 ки",
    "Please reason step by step, and put your final answer within",
    "Is the new step correct? Answer Yes or No. Problem: Earlier steps: New step: (none) yes no + -",
] * 4
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def sentencepiece_like(out: Path) -> PreTrainedTokenizerFast:
    """Llama-2/Mistral-like: ``▁`` word prefixes, newline tokens, BOS on encode, ``ки`` a token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex("\n"), "isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")]
    )
    tok.decoder = decoders.Metaspace()
    alphabet = [*string.printable, "к", "и", "▁"]
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<unk>", "<s>", "</s>"],
            initial_alphabet=alphabet,
            show_progress=False,
        ),
    )
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(out)
    return fast


def byte_level(
    out: Path, specials: list[str], chat_template: str, bos: str | None = None, words: tuple[str, ...] = ()
) -> PreTrainedTokenizerFast:
    """Qwen2/Llama-3-like byte-level BPE with the given special tokens and chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=500,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=specials[0], pad_token=specials[0]
    )
    fast.add_tokens(list(words))
    fast.chat_template = chat_template
    fast.save_pretrained(out)
    return fast


# The tiny architecture every PRM test model shares (random weights, spread-out logits).
TINY = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.5)


def causal_lm(kind: str, vocab: int, out: Path, seed: int = 0) -> torch.nn.Module:
    """A random 2-layer Llama or Mistral with hidden size 32, saved to ``out``."""
    from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    config_cls, model_cls = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
    }[kind]
    config = config_cls(vocab_size=vocab, tie_word_embeddings=False, **TINY)
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    model.save_pretrained(out)
    return model


def saved_causal_lm(kind: str, tokenizer, out: Path, seed: int = 0):
    """Save ``tokenizer`` and a tiny random ``kind`` model to ``out``; returns
    ``(out, the tokenizer as reloaded from out, model)``."""
    from transformers import AutoTokenizer

    tokenizer.save_pretrained(out)
    model = causal_lm(kind, len(tokenizer), out, seed=seed)
    return out, AutoTokenizer.from_pretrained(out), model


def saved_qwen_prm(out: Path, **config):
    """A tiny random Qwen2.5-Math-PRM written the way the hub checkpoint is laid out (``model.*``
    backbone weights, ``score.0.*`` / ``score.2.*`` head, ``architectures:
    [Qwen2ForProcessRewardModel]``) without using ets code; ``config``: ``Qwen2Config`` sizes.
    Returns ``(out, the tokenizer as reloaded from out, backbone, head weights)``."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen2Config, Qwen2Model

    tok = byte_level(out, ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<extra_0>"], CHATML)
    qwen_config = Qwen2Config(vocab_size=len(tok), **config)
    qwen_config.architectures = ["Qwen2ForProcessRewardModel"]
    torch.manual_seed(2)
    backbone = Qwen2Model(qwen_config).eval()
    h = qwen_config.hidden_size
    head = {
        f"score.{i}.{p}": torch.randn(shape) * 0.2
        for i, shape_w in ((0, (h, h)), (2, (2, h)))
        for p, shape in (("weight", shape_w), ("bias", shape_w[:1]))
    }
    weights = {f"model.{k}": v.contiguous() for k, v in backbone.state_dict().items()} | head
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    qwen_config.save_pretrained(out)
    # as loaded by AutoTokenizer next to a qwen2 config (Qwen2Tokenizer: its own pre-tokenizer)
    return out, AutoTokenizer.from_pretrained(out), backbone, head


def qwen_card_scores(qwen, text: str):
    """The card's ``make_step_rewards`` by hand: the head on the plain backbone, 2-class logits
    at every ``<extra_0>``, softmax, class 1. Returns ``(scores, logits of every token, <extra_0> mask)``."""
    _, tok, backbone, head = qwen
    ids = torch.tensor([tok.encode(text)])
    with torch.no_grad():
        hidden = backbone(ids).last_hidden_state[0]
    h = torch.relu(hidden @ head["score.0.weight"].T + head["score.0.bias"])
    logits = h @ head["score.2.weight"].T + head["score.2.bias"]
    sep = ids[0] == tok.convert_tokens_to_ids("<extra_0>")
    return logits[sep].softmax(-1)[:, 1].tolist(), logits, sep


def path_nodes(steps: list[str] = STEPS) -> tuple[Tree, list[Node]]:
    """A tree with one path through ``steps`` plus a short side branch; returns every step node."""
    tree = Tree("prompt", (0,))
    nodes, parent = [], tree.root
    for text in steps:
        parent = tree.add_child(parent, text, (1, 2))
        nodes.append(parent)
    nodes.append(tree.add_child(nodes[0], "Step 2: 5 + 5 = 10\n\n", (3,)))
    return tree, nodes


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One intra-op thread: for these tiny models thread hand-offs cost far more than they
    save — on a busy 2-core machine a batching check took 8 s with 2 threads, 0.13 s with 1."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def problem() -> Problem:
    return Problem(id="p0", question=QUESTION, gold="4")


@pytest.fixture(scope="session")
def sp_tokenizer(tmp_path_factory) -> tuple[Path, PreTrainedTokenizerFast]:
    out = tmp_path_factory.mktemp("sp_tok")
    return out, sentencepiece_like(out)


def check_batching(prm, problem: Problem, nodes: list[Node]) -> list[float]:
    """Scores one by one equal scores in batches of any size, either padding side, any order."""
    items = [(problem, n) for n in nodes]
    prm.batch_size, prm.padding_side = 1, "right"
    alone = [prm.score([item])[0] for item in items]
    for batch_size, side in [(2, "right"), (3, "left"), (16, "left"), (16, "right")]:
        prm.batch_size, prm.padding_side = batch_size, side
        assert prm.score(items) == pytest.approx(alone, abs=1e-5), (batch_size, side)
        assert prm.score(items[::-1]) == pytest.approx(alone[::-1], abs=1e-5), (batch_size, side)
    return alone


def spread(values) -> float:
    values = [float(v) for v in values]
    return max(values) - min(values)
