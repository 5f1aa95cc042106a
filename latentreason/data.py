"""Input/output pairs: reading them, tokenizing them with aligned labels, batching them.

(Over 400 lines on purpose: reading, label alignment and collation are one pipeline of one row format,
and `latentreason.data.load_pairs`, `PairEncoder` and `collate` are the documented import paths.)

    pairs = load_pairs("train.jsonl")                        # Dataset with columns "input", "output"
    labels = infer_label_names(pairs, "aligned")             # ["1", "2", ..., "9"]
    encoder = PairEncoder(tokenizer, "aligned", labels, max_length=128)
    encoded = encoder.encode_dataset(pairs)                  # + input_ids, attention_mask, labels, cell_positions
    batch = collate([encoded[i] for i in range(8)], tokenizer.pad_token_id)

Three kinds of output:
- `aligned`: the output has one cell per input cell (cells are whitespace-separated: a Sudoku grid,
  a list to sort). Each cell's label sits on the first token of that cell; the cell -> token map
  comes from the tokenizer's character offsets, so it is right for WordPiece, byte-level BPE and
  SentencePiece alike (a cell may split into several tokens; its other tokens get -100).
- `label`: one class per example (the output is a class name).
- `text`: free text answers, handled by the LM output paths (`latentreason.heads.lm`, `latentreason.text_pairs`).

Design choices:
- Every row is checked when it is read. A bad row raises `DataError` naming the file and the
  1-based line (JSONL line; CSV line counting the header) and how to fix it. `skip_bad_rows=True`
  skips bad rows instead, logs how many and records the count (`skipped_rows(dataset)`); nothing
  is ever dropped silently, and nothing is ever truncated (too long raises too).
- Fingerprints are deterministic: a dataset read from a file is fingerprinted by the file's bytes,
  and an encoded dataset by its source and the tokenizer, so the feature cache
  (`latentreason.features`) hits again in a new process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import datasets
import torch
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value
from datasets.table import InMemoryTable

from .config import OutputKind
from .losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

OUTPUT_KINDS: tuple[str, ...] = ("aligned", "label", "text")

POSITION_PADDING = -1  # padding of `cell_positions` in a batch

# Bump when the way pairs are read or encoded changes: it is part of every fingerprint made here.
DATA_FORMAT_VERSION = "1"

_SKIPPED_PREFIX = "latentreason: skipped bad rows = "
_CELL = re.compile(r"\S+")
_INTEGER = re.compile(r"[+-]?\d+")
# Marks that tokenizers write for whitespace: SentencePiece's word start, byte-level BPE's space and newline.
_BLANK_MARKS = "\u2581\u0120\u010a \t\n\r"


class DataError(ValueError):
    """A problem with the data itself: the message names where (file and line, or row) and the fix."""


# --- reading pairs ---------------------------------------------------------------------------------


def load_pairs(
    source: str | os.PathLike | Dataset | DatasetDict,
    *,
    input_column: str = "input",
    output_column: str = "output",
    split: str = "train",
    skip_bad_rows: bool = False,
) -> Dataset:
    """Read input/output pairs into a `Dataset` with exactly the string columns "input" and "output".

    Args:
        source: a `.jsonl` / `.json` file (JSON lines, or one JSON array of objects), a `.csv` file with
            a header, a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a
            `Dataset` / `DatasetDict` object.
        input_column, output_column: the names of the two columns in the source (other columns are dropped).
        split: which split to take from a `DatasetDict` (or a folder holding one).
        skip_bad_rows: skip malformed rows instead of raising; their number is logged as a warning and
            recorded in the dataset (read it with `skipped_rows(dataset)`).

    Values may be strings, numbers or (nested) lists of numbers/strings: numbers become their
    decimal text and lists become their cells joined by single spaces (`[[1, 2], [3, 4]]` -> `"1 2 3 4"`).
    A row is malformed when its JSON is invalid, a column is missing, a value is empty or None, or a
    value has another type (an object, say); it raises `DataError` naming the file and line.

    Example:
        >>> pairs = load_pairs(Dataset.from_dict({"question": ["3 1 2"], "answer": [[1, 2, 3]]}),
        ...                    input_column="question", output_column="answer")
        >>> pairs[0]
        {'input': '3 1 2', 'output': '1 2 3'}
    """
    if input_column == output_column:
        raise ValueError(f"input_column and output_column are both {input_column!r}: name two different columns.")
    columns = (input_column, output_column)
    if isinstance(source, (Dataset, DatasetDict)):
        dataset = _pick_split(source, split, "the given DatasetDict")
        name = "the given Dataset"
        rows = _dataset_rows(dataset, columns, name)
        identity = f"dataset:{dataset._fingerprint}"
    else:
        path = os.fspath(source)
        if os.path.isdir(path):
            dataset = _pick_split(datasets.load_from_disk(path), split, path)
            name = path
            rows = _dataset_rows(dataset, columns, name)
            identity = f"dataset:{dataset._fingerprint}"
        elif os.path.isfile(path):
            name = path
            rows = _file_rows(path, columns)
            identity = f"file:{_file_digest(path)}"
        else:
            raise FileNotFoundError(
                f"{path} does not exist: pass a .jsonl, .json or .csv file, a folder written by save_to_disk, or a Dataset."
            )

    inputs: list[str] = []
    outputs: list[str] = []
    origins: list[int] = []  # the line (file) or row (Dataset) number of each kept pair
    unit = "row"
    skipped = 0
    for where, values in rows:
        try:
            if isinstance(values, Exception):
                raise values
            text_in, text_out = (_as_text(values, column, where) for column in columns)
        except DataError as error:
            if not skip_bad_rows:
                raise
            skipped += 1
            logger.debug("skipping bad row: %s", error)
            continue
        inputs.append(text_in)
        outputs.append(text_out)
        unit, number = where.rsplit(" ", 2)[1:]
        origins.append(int(number))

    if skipped:
        logger.warning("%s: skipped %d bad row(s) of %d (skip_bad_rows=True).", name, skipped, skipped + len(inputs))
    if not inputs:
        raise DataError(
            f"{name} holds no usable pairs" + (f" ({skipped} bad rows skipped)" if skipped else "")
            + f": it needs rows with non-empty {input_column!r} and {output_column!r} values."
        )
    fingerprint = _digest(DATA_FORMAT_VERSION, identity, *columns, str(skip_bad_rows))
    info = DatasetInfo(description=f"{_SKIPPED_PREFIX}{skipped}")
    info.features = Features({"input": Value("string"), "output": Value("string")})
    table = InMemoryTable.from_pydict({"input": inputs, "output": outputs})
    dataset = Dataset(table, info=info, fingerprint=fingerprint)
    _ORIGINS[fingerprint] = (name, unit, origins)
    return dataset


# fingerprint of a dataset load_pairs made -> (source name, "line" or "row", the number of each pair in it)
_ORIGINS: dict[str, tuple[str, str, list[int]]] = {}


def row_origin(dataset: Dataset, index: int) -> str:
    """Where pair `index` of `dataset` came from: "data.jsonl, line 7" (the file's own numbering) for a
    dataset that `load_pairs` made, else "row 8" (1-based)."""
    origin = _ORIGINS.get(dataset._fingerprint)
    if origin is None:
        return f"row {index + 1}"
    name, unit, numbers = origin
    return f"{name}, {unit} {numbers[index]}"


def row_origins(dataset: Dataset, indices: Sequence[int], limit: int = 5) -> str:
    """`data.jsonl, line 7` or `data.jsonl, lines 7, 9, 12 and 3 more`."""
    if not indices:
        return "no rows"
    origin = _ORIGINS.get(dataset._fingerprint)
    if origin is None:
        name, unit, numbers = None, "row", [index + 1 for index in range(max(indices) + 1)]
    else:
        name, unit, numbers = origin
    shown = ", ".join(str(numbers[index]) for index in indices[:limit])
    more = f" and {len(indices) - limit} more" if len(indices) > limit else ""
    where = f"{unit} {shown}" if len(indices) == 1 else f"{unit}s {shown}{more}"
    return f"{name}, {where}" if name else where


def skipped_rows(dataset: Dataset) -> int:
    """How many bad rows `load_pairs(..., skip_bad_rows=True)` skipped to make `dataset` (0 if unknown)."""
    description = dataset.info.description or ""
    if description.startswith(_SKIPPED_PREFIX):
        return int(description[len(_SKIPPED_PREFIX):].split()[0])
    return 0


Row = tuple[str, "dict[str, Any] | DataError"]  # (where, e.g. "data.jsonl, line 7"; the row or why it is bad)


def _pick_split(source: Dataset | DatasetDict, split: str, name: str) -> Dataset:
    if isinstance(source, DatasetDict):
        if split not in source:
            raise DataError(f"{name} has no split {split!r}; its splits are {sorted(source)}. Pass split=... to choose one.")
        return source[split]
    return source


def _dataset_rows(dataset: Dataset, columns: Sequence[str], name: str) -> Iterator[Row]:
    missing = [column for column in columns if column not in dataset.column_names]
    if missing:
        raise DataError(
            f"{name} has no column(s) {missing}; its columns are {dataset.column_names}. "
            "Pass input_column=... and output_column=... to name the right ones."
        )
    for index, row in enumerate(dataset.select_columns(list(columns))):
        yield f"{name}, row {index + 1}", row


def _file_rows(path: str, columns: Sequence[str]) -> Iterator[Row]:
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".csv":
        return _csv_rows(path, columns)
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        if suffix == ".json" and text.lstrip().startswith("["):
            return _json_array_rows(path, text)
        return _json_lines_rows(path, text.splitlines())
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .csv (or a folder written by save_to_disk).")


def _json_lines_rows(path: str, lines: Iterable[str]) -> Iterator[Row]:
    """The rows of JSON lines (a file's text split, or its open handle: read one line at a time)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            yield where, DataError(f"{where}: invalid JSON ({error.msg} at column {error.colno}). Fix or remove the line.")
            continue
        if not isinstance(row, dict):
            yield where, DataError(f"{where}: expected a JSON object like {{\"input\": ..., \"output\": ...}}, got {_short(row)}.")
            continue
        yield where, row


def _json_array_rows(path: str, text: str) -> Iterator[Row]:
    """The objects of one JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    whitespace = re.compile(r"\s*")
    while True:
        position = whitespace.match(text, position).end()
        if position < len(text) and text[position] == "]":
            return
        line = text.count("\n", 0, position) + 1
        where = f"{path}, line {line}"
        try:
            row, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            # A broken array can't be resynchronised: this is fatal even with skip_bad_rows.
            raise DataError(
                f"{path}, line {error.lineno}: invalid JSON ({error.msg} at column {error.colno}). "
                "Fix the file (a JSON-lines .jsonl file lets skip_bad_rows skip a broken line)."
            ) from error
        if isinstance(row, dict):
            yield where, row
        else:
            yield where, DataError(f"{where}: expected a JSON object like {{\"input\": ..., \"output\": ...}}, got {_short(row)}.")
        position = whitespace.match(text, position).end()
        if position < len(text) and text[position] == ",":
            position += 1
        elif position < len(text) and text[position] == "]":
            return
        else:
            raise DataError(f"{path}, line {text.count(chr(10), 0, position) + 1}: expected ',' or ']' in the JSON array.")


def _csv_rows(path: str, columns: Sequence[str]) -> Iterator[Row]:
    """The rows of a CSV file with a header, read one line at a time."""
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise DataError(f"{path} is empty: a CSV file needs a header line naming its columns.")
        missing = [column for column in columns if column not in header]
        if missing:
            raise DataError(
                f"{path}, line 1: the header {header} has no column(s) {missing}. "
                "Pass input_column=... and output_column=... to name the right ones."
            )
        for cells in reader:
            where = f"{path}, line {reader.line_num}"
            if not cells:
                continue
            if len(cells) != len(header):
                yield where, DataError(
                    f"{where}: {len(cells)} field(s) where the header has {len(header)}. "
                    "Quote values that contain commas and give every column a value."
                )
                continue
            yield where, dict(zip(header, cells))


def _as_text(row: dict[str, Any], column: str, where: str) -> str:
    """One value as text: strings as they are, numbers as decimals, lists as space-separated cells."""
    if column not in row:
        raise DataError(f"{where}: no {column!r} value (the row has {sorted(row)}). Add it or fix the column name.")
    value = row[column]
    if isinstance(value, (list, tuple)):
        cells = list(_flatten(value, column, where))
        text = " ".join(cells)
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = str(value)
    elif value is None:
        raise DataError(f"{where}: {column!r} is null. Give it a value or remove the row.")
    else:
        raise DataError(
            f"{where}: {column!r} is a {type(value).__name__} ({_short(value)}); expected a string, a number or a list of them."
        )
    if not text.strip():
        raise DataError(f"{where}: {column!r} is empty. Give it a value or remove the row.")
    return text


def _flatten(values: Iterable[Any], column: str, where: str) -> Iterator[str]:
    for value in values:
        if isinstance(value, (list, tuple)):
            yield from _flatten(value, column, where)
        elif isinstance(value, bool):
            yield "true" if value else "false"
        elif isinstance(value, (int, float)):
            yield str(value)
        elif isinstance(value, str) and value.strip() and not any(c.isspace() for c in value):
            yield value
        else:
            raise DataError(
                f"{where}: {column!r} holds {_short(value)} in its list; list cells must be numbers or strings without spaces."
            )


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


# --- label vocabularies ------------------------------------------------------------------------


def infer_label_names(dataset: Dataset, output_kind: OutputKind) -> list[str]:
    """The sorted vocabulary of the outputs: cells ("aligned") or whole outputs ("label").

    Integers sort numerically (`"2"` before `"10"`), before any other name, which sorts as text.

    Example:
        >>> infer_label_names(Dataset.from_dict({"input": ["a b c"], "output": ["10 2 x"]}), "aligned")
        ['2', '10', 'x']
    """
    outputs = dataset["output"]
    if output_kind == "aligned":
        names = {cell for output in outputs for cell in output.split()}
    elif output_kind == "label":
        names = {output.strip() for output in outputs}
    elif output_kind == "text":
        raise ValueError("output_kind='text' has no label vocabulary: text answers use the language model's own tokens.")
    else:
        raise ValueError(f"output_kind must be one of {OUTPUT_KINDS}, got {output_kind!r}.")
    return sort_label_names(names)


def sort_label_names(names: Iterable[str]) -> list[str]:
    """Label names in their one order: integers numerically (`"2"` before `"10"`), before any other name (as text)."""
    return sorted(names, key=_label_sort_key)


def _label_sort_key(name: str) -> tuple[int, int, str]:
    return (0, int(name), name) if _INTEGER.fullmatch(name) else (1, 0, name)


# --- tokenizing with labels --------------------------------------------------------------------


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
