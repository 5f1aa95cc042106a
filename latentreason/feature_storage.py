"""How the feature cache stores one example's features: the storage dtypes and their codecs.

float16 (2 bytes a value; the default), bfloat16 (2 bytes, float32's range, 3 significant digits; kept
as its raw 16 bits since Arrow has no bfloat16), float32 (4 bytes, exact) and int8 (1 byte a value plus
one float32 scale per token: each token's vector is divided by its largest absolute value / 127 and
rounded, so every value is within that token's absmax / 254 of the backbone's). `encode_rows` writes
one example, `decode_rows` reads it back as float32, and `decoded` is the whole stored dataset as the
trainer reads it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from datasets import Array2D, Dataset, Sequence, Value

from .data import torch_format

FEATURES_COLUMN = "features"
SCALES_COLUMN = "feature_scales"  # int8 storage: one float32 scale per token
STORAGE_DTYPES = ("float16", "bfloat16", "float32", "int8")
_BYTES_PER_VALUE = {"float16": 2, "bfloat16": 2, "float32": 4, "int8": 1}
INT8_ERROR = 1 / 254  # int8 storage: |stored - exact| <= INT8_ERROR x the token vector's largest |value|


def storage_name(dtype: str | torch.dtype) -> str:
    """"float16", "bfloat16", "float32" or "int8" for a torch dtype or its name; ValueError for anything else."""
    name = str(dtype).removeprefix("torch.")
    if name not in STORAGE_DTYPES:
        raise ValueError(f"The feature cache stores {' | '.join(STORAGE_DTYPES)} features, got dtype={dtype!r}.")
    return name


def bytes_per_token(width: int, dtype: str | torch.dtype = "float16") -> int:
    """Cache bytes one token takes: width x bytes a value (+ a float32 scale for int8)."""
    name = storage_name(dtype)
    return width * _BYTES_PER_VALUE[name] + (4 if name == "int8" else 0)


def storage_columns(dtype: str, width: int) -> dict[str, Any]:
    """The Arrow columns an entry stores features of `width` in as `dtype` (raw bits for bfloat16, + scales for int8)."""
    arrow_dtype = {"float16": "float16", "bfloat16": "int16", "float32": "float32", "int8": "int8"}[dtype]
    columns: dict[str, Any] = {FEATURES_COLUMN: Array2D(shape=(None, width), dtype=arrow_dtype)}
    if dtype == "int8":
        columns[SCALES_COLUMN] = Sequence(Value("float32"))
    return columns


def encode_rows(features: torch.Tensor, dtype: str | torch.dtype) -> dict[str, np.ndarray]:
    """One example's float features (L, width) as stored: {"features": ...} (+ {"feature_scales": (L,)} for int8)."""
    name = storage_name(dtype)
    if name == "bfloat16":
        return {FEATURES_COLUMN: features.to(torch.bfloat16).view(torch.int16).numpy()}  # Arrow has no bfloat16: its raw bits
    if name == "int8":
        # Per token: the largest |value| maps to 127 (a token with all zeros keeps scale 0 and zeros).
        scales = features.abs().amax(dim=-1) / 127  # (L,)
        quantised = torch.round(features / scales.clamp(min=torch.finfo(torch.float32).tiny)[:, None]).clamp(-127, 127)
        return {FEATURES_COLUMN: quantised.to(torch.int8).numpy(), SCALES_COLUMN: scales.numpy()}
    return {FEATURES_COLUMN: features.to(getattr(torch, name)).numpy()}


def decode_rows(stored: torch.Tensor, dtype: str | torch.dtype, scales: torch.Tensor | None = None) -> torch.Tensor:
    """Stored features of one example (stored as `dtype`) back to float32 (L, width).

    bfloat16 arrive as their raw 16 bits and int8 with their per-token scales (readers may have widened
    the integers, e.g. datasets' torch format gives int64: only the values count).
    """
    name = storage_name(dtype)
    if name == "bfloat16":
        return stored.to(torch.int16).view(torch.bfloat16).float()
    if name == "int8":
        if scales is None:
            raise ValueError(f"int8 features need their {SCALES_COLUMN!r} to be read back.")
        return stored.float() * scales.float()[..., None]
    return stored.float()


class DecodedFeatures(torch.utils.data.Dataset):
    """A cached dataset whose rows come out as tensors with float32 "features" (whatever the storage dtype)."""

    def __init__(self, dataset: Dataset) -> None:
        columns = [name for name in ("input_ids", "attention_mask", "labels", "cell_positions", FEATURES_COLUMN, SCALES_COLUMN)
                   if name in dataset.column_names]
        self.dataset = dataset.with_format("torch", columns=columns)
        self.storage = {"int16": "bfloat16", "int8": "int8"}[dataset.features[FEATURES_COLUMN].dtype]
        self.column_names = [name for name in columns if name != SCALES_COLUMN]

    def __len__(self) -> int:
        return len(self.dataset)

    def with_format(self, type: str | None = None, columns: list[str] | None = None) -> Any:
        """"torch": itself (its rows are tensors already, so `torch_format(...)` of it is itself); any other format:
        the stored dataset in that format, features not decoded (for reading other columns, e.g. lengths)."""
        return self if type == "torch" else self.dataset.with_format(type, columns=columns)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = dict(self.dataset[index])
        row[FEATURES_COLUMN] = decode_rows(row[FEATURES_COLUMN], self.storage, row.pop(SCALES_COLUMN, None))
        return row


def decoded(dataset: Dataset | None) -> Dataset | DecodedFeatures | None:
    """What the trainer reads: the numeric columns as tensors, with "features" decoded to float.

    float16 and float32 entries stay a plain torch-formatted `datasets.Dataset` (`torch_format`); bfloat16
    and int8 entries are decoded row by row (`DecodedFeatures`). None stays None.
    """
    if dataset is None:
        return None
    if FEATURES_COLUMN in dataset.column_names and dataset.features[FEATURES_COLUMN].dtype in ("int8", "int16"):
        return DecodedFeatures(dataset)
    return torch_format(dataset)
