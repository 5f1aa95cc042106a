"""Tokenizing pairs with aligned labels (`PairEncoder`) and batching them (`collate`).

- `aligned`: the output has one cell per input cell (cells are whitespace-separated: a Sudoku grid,
  a list to sort). Each cell's label sits on the first token of that cell; the cell -> token map
  comes from the tokenizer's character offsets, so it is right for WordPiece, byte-level BPE and
  SentencePiece alike (a cell may split into several tokens; its other tokens get -100).
- `label`: one class per example (the output is a class name).
Nothing is truncated (too long raises). An encoded dataset is fingerprinted by its source and the
tokenizer, so the feature cache hits again in a new process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

import datasets
import torch
from datasets import Dataset, Features, Value

from ..config import OutputKind
from ..losses import IGNORE_INDEX
from .reading import _CELL, DATA_FORMAT_VERSION, OUTPUT_KINDS, DataError, _digest, _short

POSITION_PADDING = -1  # padding of `cell_positions` in a batch
_BLANK_MARKS = "\u2581\u0120\u010a \t\n\r"


class Encoder(Protocol):
    """What the run pipeline asks of an encoder; `PairEncoder` (labels) and `text_pairs.TextPairEncoder`
    (text answers of the LM paths) both are one, so no caller needs to know which it has."""

    tokenizer: Any
    max_length: int | None

    def encode(self, pair: dict[str, Any], index: int | None = None) -> dict[str, Any]: ...

    def encode_input(self, text: str) -> dict[str, Any]: ...

    def encode_dataset(self, pairs: Dataset, desc: str = "Tokenizing") -> Dataset: ...



class PairEncoder:
    """Turns a pair into token ids and labels for one output kind.

    Args:
        tokenizer: a fast Hugging Face tokenizer (its character offsets give the cell -> token map).
        output_kind: "aligned" (one label per input cell), "label" (one per example) or "text".
        label_names: the class names, index-aligned with the head's classes (see `infer_label_names`).
        max_length: longest input in tokens (special tokens included); longer rows raise `DataError`.

    Example:
        >>> encoder = PairEncoder(tokenizer, "aligned", ["1", "2", "3"])          # doctest: +SKIP
        >>> row = encoder.encode({"input": "3 1 2", "output": "1 2 3"})            # doctest: +SKIP
        >>> encoder.decode(torch.tensor(row["labels"]).clamp(min=0), row["cell_positions"])  # doctest: +SKIP
        '1 2 3'
    """

    def __init__(self, tokenizer: Any, output_kind: OutputKind, label_names: list[str] | None = None, max_length: int | None = None) -> None:
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}.")
        if output_kind != "text" and not label_names:
            raise ValueError(
                f"output_kind={output_kind!r} needs label_names (the class names); "
                "get them from the training data with infer_label_names(dataset, output_kind)."
            )
        if output_kind == "aligned" and not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"{type(tokenizer).__name__} is a slow tokenizer: aligned outputs need a fast one (character offsets). "
                "Load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
            )
        if max_length is not None and max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}.")
        self.tokenizer = tokenizer
        self.output_kind = output_kind
        self.label_names = list(label_names) if label_names else []
        self.label_ids = {name: index for index, name in enumerate(self.label_names)}
        if len(self.label_ids) != len(self.label_names):
            raise ValueError(f"label_names has duplicates: {self.label_names}.")
        self.max_length = max_length

    def encode(self, example: dict[str, Any], index: int | None = None, *, where: str | None = None) -> dict[str, Any]:
        """Tokenize one pair: input_ids, attention_mask, labels and cell_positions.

        `index` (0-based row number) or `where` ("data.jsonl, line 7") only make error messages name the row.
        """
        if self.output_kind == "text":
            raise NotImplementedError("output_kind='text' (free text answers) is handled by the LM output paths (latentreason.heads.lm, latentreason.text_pairs).")
        if where is None:
            where = f"row {index + 1}" if index is not None else f"the example with input {_short(example.get('input'), 40)}"
        row, input_cells = self._encode_input(example["input"], where)
        if self.output_kind == "label":
            return {"input_ids": row["input_ids"], "attention_mask": row["attention_mask"],
                    "labels": self._label_id(example["output"].strip(), where), "cell_positions": []}
        output_cells = example["output"].split()
        if len(input_cells) != len(output_cells):
            raise DataError(
                f"{where}: the input has {len(input_cells)} cells but the output has {len(output_cells)}; "
                "aligned outputs need one output cell per whitespace-separated input cell."
            )
        labels = [IGNORE_INDEX] * len(row["input_ids"])
        for position, cell in zip(row["cell_positions"], output_cells):
            labels[position] = self._label_id(cell, where)
        return {"input_ids": row["input_ids"], "attention_mask": row["attention_mask"], "labels": labels, "cell_positions": row["cell_positions"]}

    def encode_input(self, text: str) -> dict[str, Any]:
        """Tokenize an input whose answer is unknown (to predict it): input_ids, attention_mask, cell_positions."""
        if self.output_kind == "text":
            raise NotImplementedError("output_kind='text' (free text answers) is handled by the LM output paths (latentreason.heads.lm, latentreason.text_pairs).")
        return self._encode_input(text, f"the input {_short(text, 40)}")[0]

    def _encode_input(self, text: str, where: str) -> tuple[dict[str, Any], list[tuple[int, int]]]:
        """The input side of a row (cell_positions: the first token of each input cell, for "aligned"), and the cells' spans."""
        encoding = self.tokenizer(text, return_offsets_mapping=True, truncation=False)
        input_ids = list(encoding["input_ids"])
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise DataError(
                f"{where}: the input is {len(input_ids)} tokens long, more than max_length={self.max_length}. "
                f"Raise max_length to at least {len(input_ids)} or shorten/remove the row (nothing is truncated)."
            )
        row: dict[str, Any] = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "cell_positions": []}
        if self.output_kind == "label":
            return row, []
        input_cells = [match.span() for match in _CELL.finditer(text)]
        blank = [token.strip(_BLANK_MARKS) == "" for token in encoding.tokens()]
        row["cell_positions"] = _first_tokens(input_cells, encoding["offset_mapping"], blank, text, where)
        return row, input_cells

    def encode_dataset(self, dataset: Dataset, desc: str = "Tokenizing") -> Dataset:
        """Encode every row (`Dataset.map`), keeping "input" and "output"; the fingerprint is deterministic."""
        fingerprint = _digest(DATA_FORMAT_VERSION, dataset._fingerprint or "", self.fingerprint())
        labels = Value("int64") if self.output_kind == "label" else datasets.Sequence(Value("int64"))
        features = Features({
            **dataset.features,
            "input_ids": datasets.Sequence(Value("int32")),
            "attention_mask": datasets.Sequence(Value("int8")),
            "labels": labels,
            "cell_positions": datasets.Sequence(Value("int32")),
        })
        return dataset.map(self.encode, with_indices=True, desc=desc, features=features, new_fingerprint=fingerprint)

    def fingerprint(self) -> str:
        """A digest of everything that decides the encoding: tokenizer, output kind, labels, max_length."""
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        tokenizer_state = backend.to_str() if backend is not None else repr(self.tokenizer)
        return _digest(tokenizer_state, self.output_kind, json.dumps(self.label_names), str(self.max_length))

    def decode(self, predictions: torch.Tensor, cell_positions: list[int] | torch.Tensor) -> str:
        """The output string from predicted class ids: per token (L,) for "aligned", a scalar for "label".

        Logits work too: (L, C) for "aligned", (C,) for "label" are reduced with argmax.
        """
        if self.output_kind == "text":
            raise NotImplementedError("output_kind='text' (free text answers) is handled by the LM output paths (latentreason.heads.lm, latentreason.text_pairs).")
        predictions = torch.as_tensor(predictions)
        if self.output_kind == "label":
            if predictions.is_floating_point() and predictions.numel() > 1:
                predictions = predictions.argmax()
            if predictions.numel() != 1:
                raise ValueError(f"output_kind='label' decodes one class id per example, got a tensor of shape {tuple(predictions.shape)}.")
            return self._label_name(int(predictions.reshape(-1)[0]))
        if predictions.dim() == 2:
            predictions = predictions.argmax(-1)
        positions = [int(p) for p in torch.as_tensor(cell_positions).reshape(-1).tolist() if int(p) != POSITION_PADDING]
        return " ".join(self._label_name(int(predictions[p])) for p in positions)

    def _label_id(self, name: str, where: str) -> int:
        if name not in self.label_ids:
            known = self.label_names if len(self.label_names) <= 30 else self.label_names[:30] + ["..."]
            raise DataError(
                f"{where}: unknown label {name!r}; the known labels are {known}. "
                "Build label_names from all splits (infer_label_names) or fix the row."
            )
        return self.label_ids[name]

    def _label_name(self, index: int) -> str:
        if not 0 <= index < len(self.label_names):
            raise ValueError(f"predicted class id {index} is out of range for {len(self.label_names)} labels.")
        return self.label_names[index]


def _first_tokens(
    cells: list[tuple[int, int]], offsets: Sequence[Sequence[int]], blank: Sequence[bool], text: str, where: str
) -> list[int]:
    """For each cell (character span), the index of the first non-blank token whose characters overlap it.

    Blank tokens (a lone word-start mark) are skipped: SentencePiece's leading "▁" reports the
    offsets of the word's first character but carries none of it.
    """
    positions: list[int] = []
    token = 0
    for cell_index, (start, end) in enumerate(cells):
        while token < len(offsets) and (blank[token] or not _overlaps(offsets[token], start, end)):
            token += 1
        if token == len(offsets):
            raise DataError(f"{where}: no token covers input cell {cell_index + 1} ({text[start:end]!r}); the tokenizer dropped it.")
        if positions and positions[-1] == token:
            raise DataError(
                f"{where}: input cells {cell_index} and {cell_index + 1} share one token ({text[cells[cell_index - 1][0]:end]!r}), "
                "so their labels can't be told apart. Separate the cells so that the tokenizer splits them."
            )
        positions.append(token)
    return positions


def _overlaps(offset: Sequence[int], start: int, end: int) -> bool:
    token_start, token_end = offset
    return token_end > token_start and token_start < end and token_end > start


# --- batching --------------------------------------------------------------------------------------


def collate(batch: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Stack encoded examples into a right-padded batch of tensors.

    input_ids are padded with `pad_token_id`, attention_mask with 0, per-token labels with -100,
    cell_positions with -1; per-example labels are stacked; "features" (L, D) are padded with zeros
    to (B, L_max, D) float32. String columns ("input", "output") are dropped; other numeric
    columns of one value per example are stacked.
    """
    if not batch:
        raise ValueError("collate got an empty batch.")
    if pad_token_id is None:
        raise ValueError("pad_token_id is None: the tokenizer has no padding token. Set tokenizer.pad_token (e.g. to its eos_token).")
    padding = {"input_ids": pad_token_id, "attention_mask": 0, "labels": IGNORE_INDEX, "cell_positions": POSITION_PADDING}
    result: dict[str, torch.Tensor] = {}
    for key in batch[0]:
        values = [example[key] for example in batch]
        if isinstance(values[0], str):
            continue
        if key == "features":
            result[key] = _pad([torch.as_tensor(v, dtype=torch.float32) for v in values], 0.0)
            continue
        tensors = [torch.as_tensor(v) for v in values]
        if tensors[0].dim() == 0:
            result[key] = torch.stack(tensors)
        elif key in padding:
            result[key] = _pad([t.long() for t in tensors], padding[key])
        else:
            raise ValueError(f"collate doesn't know how to pad column {key!r}; remove it from the dataset before batching.")
    return result


def _pad(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True, padding_value=value)


def torch_format(dataset: datasets.Dataset | None) -> datasets.Dataset | None:
    """The encoded columns as torch tensors (what the trainer and `collate` read); None stays None, and so does a
    stream (`latentreason.streaming.EncodedStream`: `collate` makes its tensors)."""
    if dataset is None or not isinstance(dataset, datasets.Dataset):
        return dataset
    numeric = [name for name in ("input_ids", "attention_mask", "labels", "cell_positions", "features") if name in dataset.column_names]
    return dataset.with_format("torch", columns=numeric)
