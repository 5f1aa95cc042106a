"""Text pairs for the LM output paths: `TextPairEncoder` turns `{"input", "output"}` pairs into
input_ids / attention_mask / labels for `lm_head` or `latent_prefix` (right padding for training, left
padding for generation) and decodes generated token ids back to text.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import nn

from .heads.lm import TextOutput
from .losses import IGNORE_INDEX


class TextPairEncoder:
    """Turns `{"input": ..., "output": ...}` text pairs into model inputs for the LM output paths, and back.

    The prompt is the input text, tokenized as the tokenizer does by default (its special tokens
    included). The answer is the output text without special tokens, followed by the end token
    (the tokenizer's eos), so that answers shorter than the slots, or than `max_new_tokens`, are exact.
    Prompts are never truncated: one longer than `max_length` tokens raises a `ValueError`.

    Args:
        tokenizer: the LM's tokenizer (it must have an eos token; a missing pad token falls back to eos).
        output: "lm_head" (labels padded to `num_slots`; an answer must fit in them with its end token)
            or "latent_prefix" (labels as long as the answer).
        num_slots: the model's answer slots (`config.answer_slots`).
        max_length: the longest prompt in tokens.

    Example:
        >>> encoder = TextPairEncoder(tokenizer, "latent_prefix", num_slots=8, max_length=64)  # doctest: +SKIP
        >>> batch = encoder([{"input": "two plus three", "output": "five"}])           # right-padded, for training
        >>> prompts = encoder.prompts(["two plus three"])                               # left-padded, for generate
        >>> encoder.decode(model.generate(**prompts, max_new_tokens=4))                 # ['five']
    """

    def __init__(self, tokenizer: Any, output: TextOutput, num_slots: int = 8, max_length: int = 128) -> None:
        if output not in ("lm_head", "latent_prefix"):
            raise ValueError(f"TextPairEncoder encodes text answers for output 'lm_head' or 'latent_prefix', got {output!r}.")
        if num_slots < 1:
            raise ValueError(f"num_slots must be >= 1, got {num_slots}.")
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        if tokenizer.eos_token_id is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has no eos token, which ends every answer: set tokenizer.eos_token "
                "(e.g. to the token the LM ends its turns with)."
            )
        self.tokenizer = tokenizer
        self.output = output
        self.num_slots = num_slots
        self.max_length = max_length
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    @classmethod
    def for_model(cls, tokenizer: Any, model: nn.Module, max_length: int = 128) -> TextPairEncoder:
        """An encoder matching a model's output path and answer slots."""
        config = model.config
        return cls(tokenizer, config.output, num_slots=config.answer_slots, max_length=config.max_length or max_length)

    # --- one example ----------------------------------------------------------------------------
    def encode_prompt(self, text: str, index: int | None = None) -> list[int]:
        where = f"pair {index}" if index is not None else f"prompt {text[:40]!r}"
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}: the input must be a non-empty string, got {text!r}.")
        ids = list(self.tokenizer(text, truncation=False)["input_ids"])
        if len(ids) > self.max_length:
            raise ValueError(
                f"{where}: the prompt is {len(ids)} tokens long, more than max_length={self.max_length}. "
                "Shorten it or raise max_length; prompts are never truncated (a cut question has another answer)."
            )
        return ids

    def encode_answer(self, text: str, index: int | None = None) -> list[int]:
        """The answer's token ids plus the end token; for lm_head, padded with -100 to `num_slots`."""
        where = f"pair {index}" if index is not None else f"answer {text[:40]!r}"
        if not isinstance(text, str):
            raise ValueError(f"{where}: the output must be a string, got {type(text).__name__}.")
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.eos_token_id]
        if self.output == "lm_head":
            if len(ids) > self.num_slots:
                raise ValueError(
                    f"{where}: the answer is {len(ids) - 1} tokens + 1 end token, more than the {self.num_slots} answer "
                    "slots of output='lm_head' (one token per slot). Raise num_answer_slots or use output='latent_prefix'."
                )
            ids += [IGNORE_INDEX] * (self.num_slots - len(ids))
        return ids

    def encode(self, pair: Mapping[str, str], index: int | None = None) -> dict[str, list[int]]:
        """One pair -> {"input_ids", "attention_mask", "labels"} (lists; `data.collate` or `collate` batch them)."""
        for key in ("input", "output"):
            if key not in pair:
                raise ValueError(f"pair {index if index is not None else ''} has no {key!r} field; text pairs need 'input' and 'output'.")
        input_ids = self.encode_prompt(pair["input"], index)
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": self.encode_answer(pair["output"], index)}

    def encode_input(self, text: str) -> dict[str, list[int]]:
        """An input whose answer is unknown (to predict it): {"input_ids", "attention_mask"}."""
        input_ids = self.encode_prompt(text)
        return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids)}

    def encode_dataset(self, pairs: Any, desc: str = "Tokenizing") -> Any:
        """Encode every pair of a `datasets.Dataset` (`Dataset.map`); the text columns are dropped."""
        return pairs.map(self.encode, with_indices=True, remove_columns=pairs.column_names, desc=desc)

    # --- batches --------------------------------------------------------------------------------
    def collate(self, examples: Sequence[Mapping[str, Sequence[int]]], padding_side: Literal["left", "right"] = "right") -> dict[str, torch.Tensor]:
        """Pad encoded examples into tensors: prompts on `padding_side`, labels always on the right with -100."""
        if not examples:
            raise ValueError("collate got no examples.")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        length = max(len(example["input_ids"]) for example in examples)
        input_ids, attention_mask = [], []
        for example in examples:
            ids = list(example["input_ids"])
            pad = length - len(ids)
            if padding_side == "right":
                input_ids.append(ids + [self.pad_token_id] * pad)
                attention_mask.append([1] * len(ids) + [0] * pad)
            else:
                input_ids.append([self.pad_token_id] * pad + ids)
                attention_mask.append([0] * pad + [1] * len(ids))
        batch = {"input_ids": torch.tensor(input_ids), "attention_mask": torch.tensor(attention_mask)}
        if "labels" in examples[0]:
            width = max(len(example["labels"]) for example in examples)
            batch["labels"] = torch.tensor([list(e["labels"]) + [IGNORE_INDEX] * (width - len(e["labels"])) for e in examples])
        return batch

    def __call__(self, pairs: Sequence[Mapping[str, str]], padding_side: Literal["left", "right"] = "right") -> dict[str, torch.Tensor]:
        """Encode and batch pairs (right padding: for training and evaluation)."""
        return self.collate([self.encode(pair, index) for index, pair in enumerate(pairs)], padding_side)

    def prompts(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Left-padded input_ids and attention_mask for `model.generate`."""
        return self.collate([{"input_ids": self.encode_prompt(text, index)} for index, text in enumerate(texts)], "left")

    def decode(self, token_ids: torch.Tensor | Sequence[Sequence[int]]) -> list[str]:
        """Generated (or label) token ids -> answer texts: cut at the first end token, special tokens and -100 dropped."""
        texts = []
        for row in torch.as_tensor(token_ids).tolist():
            row = [token for token in row if token != IGNORE_INDEX]
            if self.eos_token_id in row:
                row = row[: row.index(self.eos_token_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts
