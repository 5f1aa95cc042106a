"""Tiny models and tokenizers built locally, offline: for tests, examples and smoke runs.

Every architecture here builds from a tiny random config (hidden 64, 2 layers, vocab 128), so the
whole compatibility matrix runs in seconds on a CPU with no Hub access.

    from latentreason.testing import tiny_backbone, TINY_ARCHITECTURES
    model = tiny_backbone("llama")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
from transformers import AutoModel, AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

VOCAB = 128
HIDDEN = 64

_COMMON: dict[str, Any] = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB)
_SPECIAL = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)


def _configs() -> dict[str, Callable[[], Any]]:
    import transformers as t

    return {
        # decoder-only (causal LMs)
        "llama": lambda: t.LlamaConfig(**_COMMON, num_key_value_heads=2, **_SPECIAL),
        "qwen2": lambda: t.Qwen2Config(**_COMMON, num_key_value_heads=2, **_SPECIAL),
        "qwen3": lambda: t.Qwen3Config(**_COMMON, num_key_value_heads=2, head_dim=16, **_SPECIAL),
        "mistral": lambda: t.MistralConfig(**_COMMON, num_key_value_heads=2, **_SPECIAL),
        "gemma": lambda: t.GemmaConfig(**_COMMON, num_key_value_heads=2, head_dim=16, **_SPECIAL),
        "gemma2": lambda: t.Gemma2Config(**_COMMON, num_key_value_heads=2, head_dim=16, **_SPECIAL),
        "phi3": lambda: t.Phi3Config(**_COMMON, num_key_value_heads=2, **_SPECIAL),
        "gpt2": lambda: t.GPT2Config(n_embd=HIDDEN, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=256, **_SPECIAL),
        "gpt_neox": lambda: t.GPTNeoXConfig(**_COMMON, **_SPECIAL),
        "opt": lambda: t.OPTConfig(hidden_size=HIDDEN, ffn_dim=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                                   vocab_size=VOCAB, word_embed_proj_dim=HIDDEN, **_SPECIAL),
        "falcon": lambda: t.FalconConfig(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=4, vocab_size=VOCAB, **_SPECIAL),
        "phi": lambda: t.PhiConfig(**_COMMON, **_SPECIAL),
        # encoder-only
        "bert": lambda: t.BertConfig(**_COMMON, pad_token_id=0),
        "roberta": lambda: t.RobertaConfig(**_COMMON, pad_token_id=1, bos_token_id=0, eos_token_id=2, max_position_embeddings=130),
        "distilbert": lambda: t.DistilBertConfig(dim=HIDDEN, hidden_dim=2 * HIDDEN, n_layers=2, n_heads=4, vocab_size=VOCAB, pad_token_id=0),
        "modernbert": lambda: t.ModernBertConfig(**_COMMON, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=3, sep_token_id=4),
        # encoder-decoder: the encoder is read
        "t5": lambda: t.T5Config(d_model=HIDDEN, d_ff=2 * HIDDEN, num_layers=2, num_heads=4, d_kv=16, vocab_size=VOCAB, pad_token_id=0, eos_token_id=2, decoder_start_token_id=0),
    }


TINY_ARCHITECTURES: tuple[str, ...] = tuple(_configs())
DECODER_ARCHITECTURES: tuple[str, ...] = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox", "opt", "falcon", "phi")
ENCODER_ARCHITECTURES: tuple[str, ...] = ("bert", "roberta", "distilbert", "modernbert")
ENCODER_DECODER_ARCHITECTURES: tuple[str, ...] = ("t5",)


def tiny_config(arch: str):
    configs = _configs()
    if arch not in configs:
        raise ValueError(f"Unknown tiny architecture {arch!r}; choose from {sorted(configs)}.")
    return configs[arch]()


def tiny_backbone(arch: str = "llama", *, causal_lm: bool = False, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised tiny model of the given architecture (the causal-LM class when asked)."""
    torch.manual_seed(seed)
    config = tiny_config(arch)
    auto = AutoModelForCausalLM if causal_lm else AutoModel
    return auto.from_config(config).eval()


def save_tiny_backbone(arch: str, path: str | os.PathLike, *, causal_lm: bool = False, seed: int = 0) -> str:
    """Save a tiny model (and a matching tokenizer) to `path`, so it loads with `from_pretrained(path)`."""
    tiny_backbone(arch, causal_lm=causal_lm, seed=seed).save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


def tiny_tokenizer(vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer built locally: one token per character, a space included.

    Its alphabet is printable ASCII plus tab, newline and carriage return (other characters become
    `<unk>`), and it has no merges, so its 104 ids stay below `vocab_size` (the tiny models' vocabulary).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<pad>", "<s>", "</s>", "<cls>", "<sep>", "<unk>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    corpus = ["0 1 2 3 4 5 6 7 8 9 . # the answer is"]
    # The byte-level symbols of printable ASCII, tab, newline and carriage return (GPT-2's byte -> char map).
    alphabet = [chr(b) for b in range(33, 127)] + [chr(256 + b) for b in (9, 10, 13, 32)]
    if vocab_size < len(special) + len(alphabet):
        raise ValueError(f"vocab_size must be >= {len(special) + len(alphabet)} (special tokens + ASCII alphabet), got {vocab_size}.")
    trainer = trainers.BpeTrainer(vocab_size=len(special) + len(alphabet), special_tokens=special, initial_alphabet=alphabet)
    tokenizer.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        cls_token="<cls>", sep_token="<sep>",
    )
