"""Pairs files larger than memory: read one line at a time, checked, tokenized and trained on as a stream.

    scan = scan_pairs("big.jsonl", tokenizer=tokenizer)                  # pass 1: check, count, labels, lengths
    pairs = stream_pairs("big.jsonl", keep=scan.keep("aligned"))          # a datasets.IterableDataset
    train = EncodedStream(pairs, encoder, scan.count("aligned"), shuffle_buffer=10_000, seed=0)
    DataLoader(train, batch_size=64, collate_fn=...)                      # what the trainer takes

What `load_pairs` learns by holding every row (the number of rows, the label vocabulary, the output kind,
the longest input), a stream learns in one **first pass** over the file (`scan_pairs`): every row is
read and checked (a malformed row stops it, naming the file and line, before the backbone loads), the
rows that line up cell for cell and those that do not are counted, and the labels and lengths are
collected. Only counters and the label vocabulary are kept, never the rows. Training then streams the
file again in each epoch.

Design choices:
- Reading is `datasets.IterableDataset.from_generator` over the file's lines (JSON lines or CSV; a JSON
  array must be read whole and is refused). The generator is this module's, not `load_dataset("json")`'s,
  so that a bad row names its file and line, as `load_pairs` does, and `skip_bad_rows` works the same.
- Order: a stream cannot be permuted as a whole. `shuffle_buffer` rows are shuffled at a time
  (`IterableDataset.shuffle`, reseeded every epoch); 0 keeps the file's order. With a buffer at least
  as large as the file every order is possible, but it is not the permutation the in-memory path draws.
- `EncodedStream` knows its length (from the first pass), so the trainer's epochs, schedule and resume
  work as for a map-style set; a file that changed between the passes is an error, not a silent skew.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from typing import Any, Literal

import datasets
import torch

from .data import DataError, Encoder, sort_label_names
from .data.reading import _as_text, _csv_rows, _json_lines_rows

Keep = Literal["all", "aligned", "unaligned"]  # which rows a stream keeps: every row, or only those of one output kind


def stream_pairs(
    path: str | os.PathLike,
    *,
    input_column: str = "input",
    output_column: str = "output",
    skip_bad_rows: bool = False,
    keep: Keep = "all",
) -> datasets.IterableDataset:
    """The pairs of a `.jsonl` / `.csv` file as a `datasets.IterableDataset`, read one line at a time.

    Rows are {"input", "output", "origin"} with `load_pairs`'s text rules; "origin" is "big.jsonl, line 7".
    A malformed row raises `DataError` naming the file and line when it is reached (or is skipped with
    `skip_bad_rows`). `keep="aligned"` keeps only the rows whose output has one cell per input cell and
    `keep="unaligned"` only the others (with `skip_bad_rows`; without it the first other row is an error).

    Example:
        >>> pairs = stream_pairs("train.jsonl")            # doctest: +SKIP
        >>> next(iter(pairs))                              # doctest: +SKIP
        {'input': '3 1 2', 'output': '1 2 3', 'origin': 'train.jsonl, line 1'}
    """
    path = os.fspath(path)
    _check_streamable(path)
    options = dict(path=path, input_column=input_column, output_column=output_column, skip_bad_rows=skip_bad_rows, keep=keep)
    return datasets.IterableDataset.from_generator(_stream_rows, gen_kwargs=options)


def _check_streamable(path: str) -> None:
    if os.path.isdir(path):
        raise DataError(f"{path} is a folder written by save_to_disk: it is memory-mapped already, so read it with data.streaming: false.")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: data.streaming reads a .jsonl or .csv file.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise DataError(f"{path}: unsupported file type {suffix!r}; data.streaming reads .jsonl (JSON lines) or .csv files.")
    if suffix == ".json":
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    if line.lstrip().startswith("["):
                        raise DataError(f"{path} holds one JSON array, which must be read whole: write it as JSON lines "
                                        "(one object per line, .jsonl) to stream it, or set data.streaming: false.")
                    break


def _pair_rows(path: str, columns: tuple[str, str]) -> Iterator[tuple[str, tuple[str, str] | DataError]]:
    """(where, (input text, output text)) for each row of the file, or (where, DataError) for a malformed one."""
    csv_file = path.lower().endswith(".csv")
    with open(path, encoding="utf-8", newline="" if csv_file else None) as handle:
        rows = _csv_rows(path, columns) if csv_file else _json_lines_rows(path, handle)
        for where, values in rows:
            try:
                if isinstance(values, Exception):
                    raise values
                yield where, tuple(_as_text(values, column, where) for column in columns)
            except DataError as error:
                yield where, error


def _stream_rows(path: str, input_column: str, output_column: str, skip_bad_rows: bool, keep: Keep) -> Iterator[dict[str, str]]:
    for where, pair in _pair_rows(path, (input_column, output_column)):
        if not isinstance(pair, DataError) and keep != "all" and _row_kind(*pair) not in (keep, "single"):
            if keep == "aligned":
                pair = DataError(f"{where}: the output has another number of cells than the input; aligned outputs need one output "
                                 "cell per whitespace-separated input cell. Fix or remove it, or set data.skip_bad_rows=true.")
            else:
                pair = DataError(f"{where}: the output lines up with the input cell for cell, unlike the other rows (output kind "
                                 "label). Set data.output_kind to say which kind is meant, or data.skip_bad_rows=true to skip it.")
        if isinstance(pair, DataError):
            if skip_bad_rows:
                continue
            raise pair
        yield {"input": pair[0], "output": pair[1], "origin": where}


def _cells(text: str) -> int:
    return len(text.split())


def _row_kind(text_in: str, text_out: str) -> str:
    """`aligned` (as many output cells as input cells, more than one), `unaligned` (another number), or `single`
    (one cell each: evidence for neither kind, kept by both)."""
    cells_in, cells_out = _cells(text_in), _cells(text_out)
    if cells_in != cells_out:
        return "unaligned"
    return "aligned" if cells_in > 1 else "single"


@dataclasses.dataclass
class PairScan:
    """What one pass over a pairs file learned, without keeping its rows."""

    path: str
    rows: int = 0  # well-formed rows
    skipped: int = 0  # malformed rows skipped (skip_bad_rows)
    aligned: int = 0  # rows that line up cell for cell, more than one cell
    misaligned: int = 0  # rows whose output has another number of cells than the input
    single: int = 0  # one input cell and one output cell: evidence for neither kind
    first_aligned: str | None = None  # where the first row of each kind is
    first_misaligned: str | None = None
    cells: set[str] = dataclasses.field(default_factory=set)  # output cells of the rows that line up (aligned labels)
    labels: set[str] = dataclasses.field(default_factory=set)  # whole outputs (label classes)
    longest_cells: int = 0
    longest_tokens: int = 0  # 0 when no tokenizer was given

    def kind(self, skip_bad_rows: bool) -> tuple[str, str]:
        """The output kind the rows show and the evidence; mixed rows raise naming the fix (or, with
        `skip_bad_rows`, take the majority: the stream then skips the others)."""
        if not self.aligned:
            return "label", f"no output lines up with its input cell for cell ({self.rows} rows read in a first pass)"
        if not self.misaligned:
            return "aligned", f"all {self.aligned} rows with more than one cell have one output cell per input cell"
        if not skip_bad_rows:
            raise DataError(
                f"{self.path}: the rows disagree on the output kind. {self.aligned} rows line up cell for cell (e.g. "
                f"{self.first_aligned}), {self.misaligned} do not (e.g. {self.first_misaligned}). Fix or remove the rows that are "
                "wrong, set data.output_kind=aligned or data.output_kind=label to say which is meant, or set data.skip_bad_rows=true "
                "to skip the rows of the rarer kind."
            )
        if self.aligned >= self.misaligned:
            return "aligned", f"{self.aligned} rows are aligned; {self.misaligned} rows that do not line up are skipped as they stream"
        return "label", f"{self.misaligned} rows are label; {self.aligned} rows that line up cell for cell are skipped as they stream"

    def keep(self, kind: str, guessed: bool) -> Keep:
        """Which rows the stream keeps for `kind`: aligned outputs need every row to line up; a guessed label kind
        skips the rows that line up (as `guess_output_kind` does); a label kind set by the recipe takes every row."""
        if kind == "aligned":
            return "aligned"
        return "unaligned" if guessed and self.aligned else "all"

    def count(self, keep: Keep) -> int:
        """How many rows a stream with this `keep` yields."""
        if keep == "aligned":
            return self.aligned + self.single  # one cell in and out lines up too
        if keep == "unaligned":
            return self.misaligned + self.single
        return self.rows

    def label_names(self, kind: str) -> list[str]:
        return sort_label_names(self.cells if kind == "aligned" else self.labels)


def scan_pairs(
    path: str | os.PathLike,
    *,
    input_column: str = "input",
    output_column: str = "output",
    skip_bad_rows: bool = False,
    tokenizer: Any = None,
) -> PairScan:
    """The first pass over a pairs file: every row read and checked, rows of each output kind counted, labels
    and lengths collected (token lengths only with a `tokenizer`). Holds one row at a time."""
    scan = PairScan(os.fspath(path))
    _check_streamable(scan.path)
    for where, pair in _pair_rows(scan.path, (input_column, output_column)):
        if isinstance(pair, DataError):
            if not skip_bad_rows:
                raise pair
            scan.skipped += 1
            continue
        text_in, text_out = pair
        scan.rows += 1
        cells_in, cells_out = _cells(text_in), _cells(text_out)
        if cells_in != cells_out:
            scan.misaligned += 1
            scan.first_misaligned = scan.first_misaligned or where
        else:
            scan.aligned += cells_in > 1
            scan.single += cells_in == 1
            if cells_in > 1:
                scan.first_aligned = scan.first_aligned or where
            scan.cells.update(text_out.split())
        scan.labels.add(text_out.strip())
        scan.longest_cells = max(scan.longest_cells, cells_in)
        if tokenizer is not None:
            scan.longest_tokens = max(scan.longest_tokens, len(tokenizer(text_in, truncation=False)["input_ids"]))
    if not scan.rows:
        raise DataError(f"{scan.path} holds no usable pairs" + (f" ({scan.skipped} bad rows skipped)" if scan.skipped else "")
                        + f": it needs rows with non-empty {input_column!r} and {output_column!r} values.")
    return scan


class EncodedStream(torch.utils.data.IterableDataset):
    """Encoded pairs from a stream, for a `DataLoader`: `length` rows an epoch (known from the first pass),
    shuffled `shuffle_buffer` rows at a time (0: the file's order), reseeded by `set_epoch`.

    Each row is `encoder.encode(pair)` (input_ids, attention_mask, labels, cell_positions); an encoding error
    names the row's file and line.
    """

    def __init__(self, pairs: datasets.IterableDataset, encoder: Encoder, length: int, *, shuffle_buffer: int = 0, seed: int = 0,
                 name: str = "the streamed file") -> None:
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0 (0: the file's order), got {shuffle_buffer}.")
        self.pairs, self.encoder, self.length, self.name = pairs, encoder, length, name
        self.shuffle_buffer, self.seed, self.epoch = shuffle_buffer, seed, 0

    def __len__(self) -> int:
        return self.length

    @property
    def column_names(self) -> list[str]:
        """The columns of every row, as a `Dataset`'s (no "features": a stream is never cached)."""
        return ["input_ids", "attention_mask", "labels", "cell_positions"]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pairs = self.pairs
        if self.shuffle_buffer:
            pairs = pairs.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            pairs.set_epoch(self.epoch)
        seen = 0
        for pair in pairs:
            seen += 1
            yield self.encoder.encode(pair, where=pair["origin"])
        if seen != self.length:
            raise DataError(f"{self.name}: {seen} rows streamed where the first pass counted "
                            f"{self.length}; the file changed while training. Train on a file that stays as it is.")
