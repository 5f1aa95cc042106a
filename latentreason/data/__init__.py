"""Input/output pairs: reading them (`reading`), tokenizing them with aligned labels and batching them (`encoding`).

    pairs = load_pairs("train.jsonl")                        # Dataset with columns "input", "output"
    labels = infer_label_names(pairs, "aligned")             # ["1", "2", ..., "9"]
    encoder = PairEncoder(tokenizer, "aligned", labels, max_length=128)
    encoded = encoder.encode_dataset(pairs)                  # + input_ids, attention_mask, labels, cell_positions
    batch = collate([encoded[i] for i in range(8)], tokenizer.pad_token_id)

`latentreason.data.load_pairs`, `PairEncoder` and `collate` are the documented import paths.

Three kinds of output:
- `aligned`: the output has one cell per input cell (cells are whitespace-separated: a Sudoku grid,
  a list to sort). Each cell's label sits on the first token of that cell (see `encoding`).
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

from ..losses import IGNORE_INDEX
from .encoding import POSITION_PADDING, Encoder, PairEncoder, collate, torch_format
from .reading import (
    DATA_FORMAT_VERSION,
    OUTPUT_KINDS,
    DataError,
    infer_label_names,
    load_pairs,
    row_origin,
    row_origins,
    skipped_rows,
    sort_label_names,
)

__all__ = [
    "DATA_FORMAT_VERSION",
    "IGNORE_INDEX",
    "OUTPUT_KINDS",
    "POSITION_PADDING",
    "DataError",
    "Encoder",
    "PairEncoder",
    "collate",
    "infer_label_names",
    "load_pairs",
    "row_origin",
    "row_origins",
    "skipped_rows",
    "sort_label_names",
    "torch_format",
]
