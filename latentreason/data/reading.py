"""Reading input/output pairs: JSONL, JSON arrays, CSV, a saved or in-memory `datasets` dataset.

Every row is checked when it is read. A bad row raises `DataError` naming the file and the 1-based
line (JSONL line; CSV line counting the header) and how to fix it. `skip_bad_rows=True` skips bad
rows instead, logs how many and records the count (`skipped_rows(dataset)`); nothing is ever dropped
silently. A dataset read from a file is fingerprinted by the file's bytes, so the feature cache
(`latentreason.features`) hits again in a new process. Label names are inferred here too.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import datasets
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Value
from datasets.table import InMemoryTable

from ..config import OutputKind

logger = logging.getLogger(__name__)

OUTPUT_KINDS: tuple[str, ...] = ("aligned", "label", "text")

# Bump when the way pairs are read or encoded changes: it is part of every fingerprint made here.
DATA_FORMAT_VERSION = "1"

_SKIPPED_PREFIX = "latentreason: skipped bad rows = "
_CELL = re.compile(r"\S+")
_INTEGER = re.compile(r"[+-]?\d+")
# Marks that tokenizers write for whitespace: SentencePiece's word start, byte-level BPE's space and newline.


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
