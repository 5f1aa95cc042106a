"""The frozen-feature cache: run the backbone once per example, keep its hidden states on disk.

(The key, the shard plan and the integrity records are one on-disk format, read and written together;
how one row's features are stored, the storage dtypes, is `latentreason.feature_storage`.)

The backbone is frozen and deep supervision revisits every example up to N_sup times per epoch, so
its hidden states are computed once, stored in Arrow files (float16 by default), and memory-mapped back:

    cache = FeatureCache()                                  # $LATENTREASON_CACHE/features or ~/.cache/latentreason/features
    train = cache.features_for(model, encoded_train)        # + a "features" column, (length, width) per example
    rows = decoded(train)                                   # what the trainer reads (feature_storage.decoded): float32 tensors
    batch = collate([rows[i] for i in range(8)], pad_token_id)
    out = model(attention_mask=batch["attention_mask"], labels=batch["labels"], features=batch["features"])

An entry is keyed by everything the features depend on (`FeatureCache.key`): the base model
(id, revision, layer, hidden size, type, dtype), the model's input width (a fixed random projection,
`ReasonerConfig.feature_projection`, is part of the model, so `model.encode` gives the projected
features and the cache stores those), the reasoner's max_length, the encoded dataset's fingerprint,
the storage dtype and `CACHE_FORMAT_VERSION`. Any change gives a new key, so a stale entry is never read.

An entry is a folder of **shards**, each holding a contiguous range of rows (`rows-000000000-000000512`).
The shard plan depends on the dataset's length only, never on the number of processes: under
Accelerate or torchrun every process computes its share of the missing shards (shard i goes to process
i mod N) and then reads them all, so the cache a 2-process run writes is the one a 1-process run
writes, bit for bit, and either reads the other's. Each shard is written to a temporary folder and
renamed into place (`os.replace`) with its integrity record (rows, and each file's length and
SHA-256, checked at every open): a killed extraction leaves only complete shards and temporary
folders that are never read, and the next run computes only the missing rows. A damaged shard (a bad
disk, a copy cut short) is recomputed with a warning, never trained on.

Storage dtypes (`dtype`, the recipe's `training.cache_dtype`): float16 (the default), bfloat16, float32
and int8 with a scale per token; `latentreason.feature_storage` stores and decodes them.

With trainable backbone weights (LoRA) features change while training, so caching is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
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
from accelerate.utils import gather_object
from datasets import Dataset, Features
from datasets.arrow_writer import ArrowWriter
from tqdm.auto import tqdm

from .data import collate
from .feature_storage import (
    FEATURES_COLUMN,
    SCALES_COLUMN,
    bytes_per_token,
    encode_rows,
    storage_columns,
    storage_name,
)
from .storage import explain_disk_full

if TYPE_CHECKING:
    from .model import LatentReasonerModel

logger = logging.getLogger(__name__)

# Bump when the stored layout or the way features are computed changes: old entries are then ignored.
CACHE_FORMAT_VERSION = "3"  # 2: entries record their file's length and SHA-256; 3: an entry is a folder of row shards

FEATURES_FILE = "features.arrow"
METADATA_FILE = "key.json"  # in the entry: what the key was made of (for people inspecting the cache)
SHARD_FILE = "shard.json"  # in each shard: its rows, who computed it, and its file's integrity record
SHARD_PREFIX = "rows-"
_TEMPORARY_MARK = ".tmp-"
_BATCHES_PER_CHUNK = 64  # rows held in memory at once while computing: batch_size x this
SHARDS_PER_ENTRY = 16  # enough to spread over a few processes...
MIN_SHARD_ROWS = 64  # ...without shards too small to batch well
MAX_SHARD_ROWS = 4096  # a killed extraction loses at most this many rows of work

def default_cache_dir() -> Path:
    """`$LATENTREASON_CACHE/features` if that variable is set, else `~/.cache/latentreason/features`."""
    root = os.environ.get("LATENTREASON_CACHE")
    return Path(root) / "features" if root else Path.home() / ".cache" / "latentreason" / "features"


def shard_rows_for(rows: int) -> int:
    """Rows per shard for a dataset of `rows` rows: about SHARDS_PER_ENTRY shards, within [MIN, MAX]_SHARD_ROWS."""
    return min(MAX_SHARD_ROWS, max(MIN_SHARD_ROWS, math.ceil(rows / SHARDS_PER_ENTRY)))


def shard_name(start: int, stop: int) -> str:
    return f"{SHARD_PREFIX}{start:09d}-{stop:09d}"


class FeatureCache:
    """Backbone hidden states per example, computed once and stored on disk in row shards.

    Args:
        cache_dir: where entries live (default: `default_cache_dir()`).
        dtype: storage dtype of the features: float16 (the default), bfloat16, float32 or int8 (a torch
            dtype or its name; see the module docstring for what each keeps).
        enabled: False computes the features every time and never writes anything.
        shard_rows: rows per shard (default: `shard_rows_for(len(dataset))`); only how the work is split.

    Example:
        >>> cache = FeatureCache("/tmp/features", dtype="int8")            # doctest: +SKIP
        >>> encoded = cache.features_for(model, encoded)                   # doctest: +SKIP
        >>> decoded(encoded)[0]["features"].shape                          # doctest: +SKIP
        torch.Size([41, 384])
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, dtype: str | torch.dtype = "float16", enabled: bool = True,
                 shard_rows: int | None = None) -> None:
        if shard_rows is not None and shard_rows < 1:
            raise ValueError(f"shard_rows must be >= 1, got {shard_rows}.")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.dtype = storage_name(dtype)
        self.enabled = enabled
        self.shard_rows = shard_rows

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
            "feature_projection": _projection_fields(model),
            "max_length": config.max_length,
            "dataset_fingerprint": dataset._fingerprint,
            "dtype": self.dtype,
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
        """`dataset` with a "features" column: per example the model's input features of its tokens, (length, width).

        `dataset` is an encoded dataset (input_ids, attention_mask, ...; see `PairEncoder.encode_dataset`).
        The column holds the stored values (int8 storage adds a "feature_scales" column; bfloat16 is kept as
        raw int16 bits): read rows through `decoded(...)`. On a cache hit the features are memory-mapped from
        disk and the backbone does not run. In a multi-process run (Accelerate, torchrun) every process must
        call this: each computes its share of the missing shards, then all read the whole entry. Entries
        are found again across processes when the dataset's fingerprint is deterministic, as it is for
        `load_pairs` + `PairEncoder.encode_dataset` (a `Dataset.from_dict` made in memory gets a random
        fingerprint: correct, but then each process computes an entry of its own, with a warning).
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
        if len(dataset) == 0:
            raise ValueError("features_for got an empty dataset: there is nothing to compute features for.")
        stale = [column for column in (FEATURES_COLUMN, SCALES_COLUMN) if column in dataset.column_names]
        dataset = dataset.remove_columns(stale) if stale else dataset  # (removing none would change the fingerprint)

        if not self.enabled:
            with tempfile.TemporaryDirectory() as scratch:
                file = Path(scratch) / FEATURES_FILE
                self._compute(model, dataset, file, batch_size, progress)
                features = Dataset.from_file(str(file), in_memory=True)
            return _join(dataset, features)

        state = PartialState()
        entry = self.path(model, dataset)
        rows = len(dataset)
        state.wait_for_everyone()  # nobody reads the entry while another process still changes it
        done, damaged = _scan(entry, rows)
        state.wait_for_everyone()  # every process has the same view before anything moves
        for shard, problem in damaged.items():
            if state.is_main_process:
                logger.warning("The feature cache shard %s is damaged (%s): recomputing it.", shard, problem)
                _remove(shard)
        plan = _plan(done, rows, self.shard_rows or shard_rows_for(rows))
        mine = plan[state.process_index :: state.num_processes] if _same_entry_everywhere(entry, state) else plan
        failure = None
        if mine:
            try:
                self._write_shards(model, dataset, entry, mine, batch_size, progress, state)
            except Exception as error:
                if state.num_processes == 1:
                    raise
                failure = error  # reach the check below, or the other processes would wait for this one forever
        failed = _failed_processes(state, failure is not None)
        if failure is not None:
            raise failure
        if failed:
            raise RuntimeError(
                f"Feature extraction failed in process {', '.join(map(str, failed))} of {state.num_processes} (its error is in "
                f"that process's output). The shards every process finished are kept in {entry}: run again and only the "
                "missing rows are computed.")
        state.wait_for_everyone()
        problem = damage(entry, rows) if plan else None  # (a hit was checked by the scan already)
        if problem:
            raise RuntimeError(f"The feature cache entry {entry} is damaged right after it was written ({problem}): "
                               f"check the disk under {self.cache_dir}, or set training.use_feature_cache=false.")
        if plan and state.is_main_process:
            logger.info("Cached backbone features of %d examples in %s", rows, entry)
        return _join(dataset, read_entry(entry))

    def _write_shards(self, model: LatentReasonerModel, dataset: Dataset, entry: Path, ranges: list[tuple[int, int]],
                      batch_size: int, progress: bool, state: PartialState) -> None:
        """Compute each row range into a temporary folder inside `entry`, then rename it into place (atomic)."""
        created = not entry.exists()
        entry.mkdir(parents=True, exist_ok=True)
        lengths = [len(ids) for ids in dataset["input_ids"]]
        tokens = sum(sum(lengths[start:stop]) for start, stop in ranges)
        needed = tokens * bytes_per_token(_feature_width(model), self.dtype)
        try:
            with explain_disk_full(self.cache_dir, "the feature cache entry", needed):
                _write_json(entry / METADATA_FILE, self.key_fields(model, dataset))
                for start, stop in ranges:
                    final = entry / shard_name(start, stop)
                    temporary = Path(tempfile.mkdtemp(prefix=final.name + _TEMPORARY_MARK, dir=entry))
                    try:
                        self._compute(model, dataset.select(range(start, stop)), temporary / FEATURES_FILE, batch_size, progress)
                        record = {"start": start, "stop": stop, "computed_by": {"process": state.process_index, "processes": state.num_processes},
                                  "integrity": _integrity(temporary / FEATURES_FILE, stop - start)}
                        _write_json(temporary / SHARD_FILE, record)
                        try:
                            os.replace(temporary, final)
                        except OSError:
                            if not (final / FEATURES_FILE).is_file():  # not a lost race with another writer: a real failure
                                raise
                    finally:
                        shutil.rmtree(temporary, ignore_errors=True)
        except BaseException:
            if created and not any(path.name.startswith(SHARD_PREFIX) and _TEMPORARY_MARK not in path.name for path in entry.iterdir()):
                shutil.rmtree(entry, ignore_errors=True)  # nothing complete was written: leave no entry behind
            raise

    @torch.no_grad()
    def _compute(self, model: LatentReasonerModel, dataset: Dataset, file: Path, batch_size: int, progress: bool) -> None:
        """Run the backbone over `dataset` and stream the unpadded features to an Arrow `file`.

        Rows go in chunks (bounded memory); inside a chunk, batches group rows of similar length (little padding).
        """
        width = _feature_width(model)
        storage = Features(storage_columns(self.dtype, width))
        device = model.backbone.device
        pad_token_id = getattr(model.backbone.model.config, "pad_token_id", None) or 0
        tokens = dataset.select_columns(["input_ids", "attention_mask"])
        chunk_size = batch_size * _BATCHES_PER_CHUNK
        bar = tqdm(total=len(dataset), desc="Backbone features", unit="example", disable=not (progress and sys.stderr.isatty()))
        with ArrowWriter(features=storage, path=str(file)) as writer:
            for chunk_start in range(0, len(dataset), chunk_size):
                chunk = tokens[chunk_start : chunk_start + chunk_size]
                rows = [dict(zip(chunk, values)) for values in zip(*chunk.values())]
                order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
                results: list[dict[str, np.ndarray]] = [{}] * len(rows)
                for start in range(0, len(order), batch_size):
                    indices = order[start : start + batch_size]
                    batch = collate([rows[i] for i in indices], pad_token_id)
                    features = model.encode(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (B, L, width)
                    for row, index in enumerate(indices):
                        length = len(rows[index]["input_ids"])  # unpad: keep the example's own tokens
                        results[index] = encode_rows(features[row, :length].float().cpu(), self.dtype)
                    bar.update(len(indices))
                writer.write_batch({column: [result[column] for result in results] for column in storage})
            writer.finalize()
        bar.close()


def _same_entry_everywhere(entry: Path, state: PartialState) -> bool:
    """Whether every process asks for this entry (one process: yes). A dataset with a random fingerprint (made with
    `Dataset.from_dict` in each process) gives each process its own key: then each computes its whole entry."""
    if state.num_processes == 1:
        return True
    names = gather_object([entry.name])
    if len(set(names)) == 1:
        return True
    if state.is_main_process:
        logger.warning("The processes asked the feature cache for %d different entries (datasets with random fingerprints, e.g. "
                       "Dataset.from_dict in each process): each process computes all of its own, nothing is shared. Save the "
                       "dataset once (save_to_disk / JSONL) so that every process reads the same fingerprint.", len(set(names)))
    return False


def _failed_processes(state: PartialState, failed: bool) -> list[int]:
    """The indices of the processes whose extraction failed (every process must call this: a collective)."""
    if state.num_processes == 1:
        return []
    return [index for index, failed_there in gather_object([(state.process_index, failed)]) if failed_there]


# --- the shards of an entry --------------------------------------------------------------------------
def _shards(entry: Path) -> list[Path]:
    """The complete shards of `entry` (temporary folders are never read), in row order."""
    if not entry.is_dir():
        return []
    return sorted(path for path in entry.iterdir() if path.name.startswith(SHARD_PREFIX) and _TEMPORARY_MARK not in path.name)


def _scan(entry: Path, rows: int) -> tuple[list[tuple[int, int]], dict[Path, str]]:
    """The row ranges of `entry` that are complete and sound, and the shards that are damaged (with why)."""
    done: list[tuple[int, int]] = []
    damaged: dict[Path, str] = {}
    for shard in _shards(entry):
        problem, span = _shard_damage(shard, rows)
        if problem:
            damaged[shard] = problem
        elif all(span[1] <= start or stop <= span[0] for start, stop in done):  # overlaps can't come from one plan; keep the first
            done.append(span)
    return sorted(done), damaged


def _plan(done: list[tuple[int, int]], rows: int, shard_rows: int) -> list[tuple[int, int]]:
    """The row ranges still to compute: every gap between the `done` ranges, cut into `shard_rows` pieces."""
    plan: list[tuple[int, int]] = []
    position = 0
    for start, stop in [*done, (rows, rows)]:
        for piece in range(position, start, shard_rows):
            plan.append((piece, min(piece + shard_rows, start)))
        position = max(position, stop)
    return plan


def _shard_damage(shard: Path, rows: int) -> tuple[str | None, tuple[int, int]]:
    try:
        record = json.loads((shard / SHARD_FILE).read_text(encoding="utf-8"))
        start, stop = int(record["start"]), int(record["stop"])
        integrity = record["integrity"]
        expected_rows, expected_bytes, expected_digest = int(integrity["rows"]), int(integrity["bytes"]), str(integrity["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"no readable integrity record in {SHARD_FILE}: {error}", (0, 0)
    if shard.name != shard_name(start, stop) or not 0 <= start < stop <= rows or expected_rows != stop - start:
        return f"rows {start}..{stop} ({expected_rows} recorded) do not fit a dataset of {rows} rows", (0, 0)
    file = shard / FEATURES_FILE
    size = file.stat().st_size if file.is_file() else -1
    if size != expected_bytes:
        return f"{FEATURES_FILE} is {size} bytes, {expected_bytes} were written", (0, 0)
    if _integrity(file, expected_rows)["sha256"] != expected_digest:
        return f"{FEATURES_FILE} does not match the SHA-256 recorded when it was written", (0, 0)
    return None, (start, stop)


def damage(entry: Path, rows: int) -> str | None:
    """Why the cache entry `entry` can't be trusted for a dataset of `rows` rows, or None if it can.

    Every shard is checked against the integrity record written with it (its rows, then its file's
    length, which catches a truncated file, then its SHA-256, which catches flipped bytes), and the
    shards must cover rows 0..rows exactly once.
    """
    done, damaged = _scan(entry, rows)
    if damaged:
        shard, problem = next(iter(damaged.items()))
        return f"shard {shard.name}: {problem}"
    covered = 0
    for start, stop in done:
        if start != covered:
            return f"rows {covered}..{start} are in no shard"
        covered = stop
    return None if covered == rows else f"rows {covered}..{rows} are in no shard"


def read_entry(entry: Path) -> Dataset:
    """The stored columns of a complete entry, its shards in row order (memory-mapped)."""
    return datasets.concatenate_datasets([Dataset.from_file(str(shard / FEATURES_FILE)) for shard in _shards(entry)])


def shard_records(entry: Path) -> list[dict[str, Any]]:
    """Each complete shard's record (rows, who computed it, integrity), in row order."""
    return [json.loads((shard / SHARD_FILE).read_text(encoding="utf-8")) for shard in _shards(entry)]


def _integrity(file: Path, rows: int) -> dict[str, Any]:
    """What a shard's file must still be at open: its rows, its length in bytes and its SHA-256."""
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"rows": rows, "bytes": file.stat().st_size, "sha256": digest.hexdigest()}


def _write_json(path: Path, record: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file renamed into place): several processes may write the same one."""
    handle, temporary = tempfile.mkstemp(prefix=path.name + _TEMPORARY_MARK, dir=path.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as file:
        file.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def _remove(path: Path) -> None:
    """Move a damaged shard or entry aside (atomic: a reader never sees half of it), then delete it."""
    doomed = path.with_name(path.name + _TEMPORARY_MARK + "damaged-" + os.urandom(4).hex())
    try:
        os.replace(path, doomed)
    except OSError:
        return  # another process moved it first
    shutil.rmtree(doomed, ignore_errors=True)


def _join(dataset: Dataset, features: Dataset) -> Dataset:
    return datasets.concatenate_datasets([dataset, features], axis=1)


def _feature_width(model: LatentReasonerModel) -> int:
    """The width of `model.encode`'s features: the projection's when there is one, else the backbone's hidden size."""
    return getattr(model, "feature_size", model.backbone.hidden_size)


def _projection_fields(model: LatentReasonerModel) -> dict[str, int] | None:
    width = getattr(model.config, "feature_projection", None)
    return None if width is None else {"width": width, "seed": model.config.feature_projection_seed}


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


def to_process_device(model: LatentReasonerModel) -> None:
    """Move `model` to this process's device (its GPU, when it has one) unless a device map placed it.

    The backbone loads on the CPU; features are extracted (and layers probed) where the process will train."""
    device = PartialState().device
    if not model.device_mapped and model.backbone.device != device:
        model.to(device)


def cached_features(model: LatentReasonerModel, dataset: Dataset | None, training: Any) -> Dataset | None:
    """`dataset` with a "features" column from the cache in `training.cache_dir` (a `TrainingConfig`), stored as
    `training.cache_dtype`, when `training.use_feature_cache` is on and the backbone is frozen. Every process
    computes its share of the missing shards, then all read the whole entry. Read rows through `decoded`."""
    if dataset is None or not training.use_feature_cache:
        return dataset
    state = PartialState()
    if model.backbone_trains:
        if state.is_main_process:
            print(LORA_CACHE_OFF)
        return dataset
    to_process_device(model)
    cache = FeatureCache(training.cache_dir, dtype=getattr(training, "cache_dtype", "float16"))
    return cache.features_for(model, dataset, progress=state.is_local_main_process)
