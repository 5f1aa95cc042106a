"""The frozen-feature cache: run the backbone once per example, keep its hidden states on disk.

The backbone is frozen and deep supervision revisits every example up to N_sup times per epoch, so
its hidden states are computed once, stored as float16 in an Arrow file, and memory-mapped back:

    cache = FeatureCache()                                  # $LATENTREASON_CACHE/features or ~/.cache/latentreason/features
    train = cache.features_for(model, encoded_train)        # + a "features" column, (length, hidden) per example
    batch = collate([train[i] for i in range(8)], pad_token_id)
    out = model(attention_mask=batch["attention_mask"], labels=batch["labels"], features=batch["features"])

An entry is keyed by everything the features depend on (`FeatureCache.key`): the base model
(id, revision, layer, hidden size, type, dtype), the reasoner's max_length, the encoded dataset's
fingerprint, the storage dtype and `CACHE_FORMAT_VERSION`. Any change gives a new key, so a stale
entry is never read. Entries are written to a temporary folder beside the final one and renamed
into place (`os.replace`), so an interrupted write leaves only a temporary folder that is never
read. The entry records its file's length and SHA-256 at write time and both are checked at open: a
truncated or corrupted file (a bad disk, a copy cut short) is recomputed with a warning, never trained
on. The cache stores only the features; they are joined to the given dataset column-wise.

With trainable backbone weights (LoRA) features change while training, so caching is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
import torch
from accelerate import PartialState
from datasets import Array2D, Dataset, Features
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from .data import collate
from .storage import explain_disk_full

if TYPE_CHECKING:
    from .model import LatentReasonerModel

logger = logging.getLogger(__name__)

# Bump when the stored layout or the way features are computed changes: old entries are then ignored.
CACHE_FORMAT_VERSION = "2"  # 2: entries record their file's length and SHA-256

FEATURES_COLUMN = "features"
FEATURES_FILE = "features.arrow"
METADATA_FILE = "key.json"  # what the key was made of (for people inspecting the cache) and the file's integrity record
_TEMPORARY_MARK = ".tmp-"
_BATCHES_PER_CHUNK = 64  # rows held in memory at once while computing: batch_size x this


def default_cache_dir() -> Path:
    """`$LATENTREASON_CACHE/features` if that variable is set, else `~/.cache/latentreason/features`."""
    root = os.environ.get("LATENTREASON_CACHE")
    return Path(root) / "features" if root else Path.home() / ".cache" / "latentreason" / "features"


class FeatureCache:
    """Backbone hidden states per example, computed once and stored on disk.

    Args:
        cache_dir: where entries live (default: `default_cache_dir()`).
        dtype: storage dtype of the features: float16 (half the disk, plenty for frozen features) or float32.
        enabled: False computes the features every time and never writes anything.

    Example:
        >>> cache = FeatureCache("/tmp/features")                          # doctest: +SKIP
        >>> encoded = cache.features_for(model, encoded)                   # doctest: +SKIP
        >>> encoded.with_format("torch")[0]["features"].shape              # doctest: +SKIP
        torch.Size([41, 384])
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, dtype: torch.dtype = torch.float16, enabled: bool = True) -> None:
        if dtype not in (torch.float16, torch.float32):
            raise ValueError(f"FeatureCache stores float16 or float32 features, got dtype={dtype}.")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dtype = dtype
        self.enabled = enabled

    # --- the key ---------------------------------------------------------------------------------
    def key_fields(self, model: LatentReasonerModel, dataset: Dataset) -> dict[str, Any]:
        """Everything the features depend on, as a JSON-able dict (hashed by `key`)."""
        backbone = model.backbone
        config = model.config
        fields: dict[str, Any] = {
            "base_model_name_or_path": config.base_model_name_or_path,
            "base_model_revision": config.base_model_revision,
            # -1 and num_layers read the same hidden state: normalise so they share an entry.
            "backbone_layer": backbone.layer % (backbone.num_layers + 1),
            "backbone_hidden_size": backbone.hidden_size,
            "backbone_model_type": backbone.model_type,
            "backbone_dtype": str(backbone.dtype),
            "max_length": config.max_length,
            "dataset_fingerprint": dataset._fingerprint,
            "dtype": str(self.dtype),
            "cache_format_version": CACHE_FORMAT_VERSION,
        }
        if not config.base_model_name_or_path:
            # A model built in memory has no name to tell it apart: its weights must.
            fields["backbone_weights"] = _weights_digest(backbone)
        return fields

    def key(self, model: LatentReasonerModel, dataset: Dataset) -> str:
        """The entry's name: a hash of `key_fields`. Any change of model, layer, length or data changes it."""
        text = json.dumps(self.key_fields(model, dataset), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def path(self, model: LatentReasonerModel, dataset: Dataset) -> Path:
        """The folder of the entry for this model and dataset (it may not exist yet)."""
        return self.cache_dir / self.key(model, dataset)

    # --- computing or loading ----------------------------------------------------------------------
    def features_for(self, model: LatentReasonerModel, dataset: Dataset, batch_size: int = 32, progress: bool = True) -> Dataset:
        """`dataset` with a "features" column: per example the backbone's hidden states of its tokens, (length, D).

        `dataset` is an encoded dataset (input_ids, attention_mask, ...; see `PairEncoder.encode_dataset`).
        On a cache hit the features are memory-mapped from disk and the backbone does not run. Entries
        are found again across processes when the dataset's fingerprint is deterministic, as it is
        for `load_pairs` + `PairEncoder.encode_dataset` (a `Dataset.from_dict` made in memory gets a
        random fingerprint: correct, but a new entry per process). In a multi-process run, let the
        main process fill the cache first (`with accelerator.main_process_first(): ...`) and pass
        `progress=accelerator.is_main_process`.
        """
        if model.backbone_trains:
            raise ValueError(
                "The backbone has trainable weights (LoRA?): its features change while training, so they can't be "
                "precomputed or cached. Don't use the feature cache with it: pass input_ids to the model so the backbone "
                "runs at every step (or freeze the backbone)."
            )
        missing = [column for column in ("input_ids", "attention_mask") if column not in dataset.column_names]
        if missing:
            raise ValueError(f"features_for needs an encoded dataset; it has no {missing}. Encode it with PairEncoder.encode_dataset first.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        dataset = dataset.remove_columns([FEATURES_COLUMN]) if FEATURES_COLUMN in dataset.column_names else dataset

        if not self.enabled:
            with tempfile.TemporaryDirectory() as scratch:
                file = Path(scratch) / FEATURES_FILE
                self._compute(model, dataset, file, batch_size, progress)
                features = Dataset.from_file(str(file), in_memory=True)
            return _join(dataset, features)

        entry = self.path(model, dataset)
        if (entry / FEATURES_FILE).is_file():
            problem = damage(entry, len(dataset))
            if problem:
                logger.warning("The feature cache entry %s is damaged (%s): recomputing it.", entry, problem)
                _remove(entry)
        if not (entry / FEATURES_FILE).is_file():
            self._write_entry(model, dataset, entry, batch_size, progress)
            problem = damage(entry, len(dataset))
            if problem:
                raise RuntimeError(f"The feature cache entry {entry} is damaged right after it was written ({problem}): "
                                   f"check the disk under {self.cache_dir}, or set training.use_feature_cache=false.")
        return _join(dataset, Dataset.from_file(str(entry / FEATURES_FILE)))

    def _write_entry(self, model: LatentReasonerModel, dataset: Dataset, entry: Path, batch_size: int, progress: bool) -> None:
        """Compute into a temporary folder beside `entry`, then rename it into place (atomic)."""
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=entry.name + _TEMPORARY_MARK, dir=self.cache_dir))
        tokens = sum(len(ids) for ids in dataset["input_ids"])
        needed = tokens * model.backbone.hidden_size * torch.empty((), dtype=self.dtype).element_size()
        with explain_disk_full(self.cache_dir, "the feature cache entry", needed):
            try:
                self._compute(model, dataset, temporary / FEATURES_FILE, batch_size, progress)
                record = self.key_fields(model, dataset) | {"integrity": _integrity(temporary / FEATURES_FILE, len(dataset))}
                (temporary / METADATA_FILE).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
                try:
                    os.replace(temporary, entry)
                except OSError:
                    if not (entry / FEATURES_FILE).is_file():  # not a lost race with another writer: a real failure
                        raise
            finally:
                shutil.rmtree(temporary, ignore_errors=True)
        logger.info("Cached backbone features of %d examples in %s", len(dataset), entry)

    @torch.no_grad()
    def _compute(self, model: LatentReasonerModel, dataset: Dataset, file: Path, batch_size: int, progress: bool) -> None:
        """Run the backbone over `dataset` and stream the unpadded features to an Arrow `file`.

        Rows go in chunks (bounded memory); inside a chunk, batches group rows of similar length (little padding).
        """
        numpy_dtype = np.dtype(np.float16 if self.dtype == torch.float16 else np.float32)
        storage = Features({FEATURES_COLUMN: Array2D(shape=(None, model.backbone.hidden_size), dtype=numpy_dtype.name)})
        device = next(model.backbone.parameters()).device
        pad_token_id = getattr(model.backbone.model.config, "pad_token_id", None) or 0
        tokens = dataset.select_columns(["input_ids", "attention_mask"])
        chunk_size = batch_size * _BATCHES_PER_CHUNK
        bar = tqdm(total=len(dataset), desc="Backbone features", unit="example", disable=not (progress and sys.stderr.isatty()))
        with ArrowWriter(features=storage, path=str(file)) as writer:
            for chunk_start in range(0, len(dataset), chunk_size):
                chunk = tokens[chunk_start : chunk_start + chunk_size]
                rows = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
                order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
                results: list[np.ndarray] = [np.empty(0)] * len(rows)
                for start in range(0, len(order), batch_size):
                    indices = order[start : start + batch_size]
                    batch = collate([rows[i] for i in indices], pad_token_id)
                    features = model.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (B, L, D)
                    for row, index in enumerate(indices):
                        length = len(rows[index]["input_ids"])  # unpad: keep the example's own tokens
                        results[index] = features[row, :length].to("cpu", self.dtype).numpy()
                    bar.update(len(indices))
                writer.write_batch({FEATURES_COLUMN: results})
            writer.finalize()
        bar.close()


def _integrity(file: Path, rows: int) -> dict[str, Any]:
    """What an entry's file must still be at open: its rows, its length in bytes and its SHA-256."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"rows": rows, "bytes": file.stat().st_size, "sha256": digest.hexdigest()}


def damage(entry: Path, rows: int) -> str | None:
    """Why the cache entry `entry` can't be trusted for a dataset of `rows` rows, or None if it can.

    Checks the integrity record written with it: the row count, then the file's length (cheap: catches
    a truncated file), then its SHA-256 (catches flipped bytes).
    """
    try:
        record = json.loads((entry / METADATA_FILE).read_text(encoding="utf-8"))["integrity"]
        expected_rows, expected_bytes, expected_digest = int(record["rows"]), int(record["bytes"]), str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"no readable integrity record in {METADATA_FILE}: {error}"
    if expected_rows != rows:
        return f"{expected_rows} rows recorded for a dataset of {rows}"
    file = entry / FEATURES_FILE
    size = file.stat().st_size
    if size != expected_bytes:
        return f"{FEATURES_FILE} is {size} bytes, {expected_bytes} were written"
    if _integrity(file, rows)["sha256"] != expected_digest:
        return f"{FEATURES_FILE} does not match the SHA-256 recorded when it was written"
    return None


def _remove(entry: Path) -> None:
    """Move a damaged entry aside (atomic: a reader never sees half of it), then delete it."""
    doomed = entry.with_name(entry.name + _TEMPORARY_MARK + "damaged-" + os.urandom(4).hex())
    try:
        os.replace(entry, doomed)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(doomed, ignore_errors=True)


def _join(dataset: Dataset, features: Dataset) -> Dataset:
    return datasets.concatenate_datasets([dataset, features], axis=1)


def _weights_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


LORA_CACHE_OFF = (
    "LoRA is on the backbone (model.lora): its weights train, so its features change at every step and cannot be cached. "
    "The feature cache is off for this run; the backbone runs on every supervision step (slower)."
)


def cached_features(model: LatentReasonerModel, dataset: Dataset | None, training: Any) -> Dataset | None:
    """`dataset` with a "features" column from the cache in `training.cache_dir` (a `TrainingConfig`), when
    `training.use_feature_cache` is on and the backbone is frozen; computed once per example (the main process
    writes the cache first, the others read it)."""
    if dataset is None or not training.use_feature_cache:
        return dataset
    state = PartialState()
    if model.backbone_trains:
        if state.is_main_process:
            print(LORA_CACHE_OFF)
        return dataset
    cache = FeatureCache(training.cache_dir)
    with state.main_process_first():
        return cache.features_for(model, dataset, progress=state.is_local_main_process)
