"""The frozen-feature cache: right features, hits without the backbone, invalidation, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import reasoner_config, shared_backbone
from datasets import Dataset

from latentreason import attach_reasoner
from latentreason.backbone import count_calls
from latentreason.data import collate
from latentreason.features import FEATURES_FILE, FeatureCache
from latentreason.testing import VOCAB, tiny_backbone


def encoded_dataset(lengths: tuple[int, ...] = (5, 9, 3, 12, 7, 4, 10), seed: int = 0) -> Dataset:
    """An encoded dataset as PairEncoder makes it: token ids (avoiding special ids 0-4), all-ones masks."""
    generator = torch.Generator().manual_seed(seed)
    ids = [torch.randint(5, VOCAB, (length,), generator=generator).tolist() for length in lengths]
    return Dataset.from_dict({"input": [f"row {i}" for i in range(len(ids))], "input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})


def tiny_model(arch: str = "bert", **changes):
    return attach_reasoner(shared_backbone(arch), reasoner_config(**changes))


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_features_equal_encode_per_example(tmp_path: Path, arch: str) -> None:
    model, dataset = tiny_model(arch), encoded_dataset()
    cached = FeatureCache(tmp_path).features_for(model, dataset, batch_size=3, progress=False)
    assert cached.column_names == ["input", "input_ids", "attention_mask", "features"]
    assert cached.features["features"].dtype == "float16"
    rows = cached.with_format("torch")
    for index in range(len(dataset)):
        ids = torch.tensor(dataset[index]["input_ids"])[None]
        expected = model.encode(ids, torch.ones_like(ids))[0]  # alone, unpadded
        stored = rows[index]["features"]
        assert stored.shape == (len(ids[0]), model.backbone.hidden_size)
        torch.testing.assert_close(stored, expected, atol=2e-2, rtol=1e-2)  # float16 storage, batched with padding


def test_second_call_hits_the_cache_without_the_backbone(tmp_path: Path) -> None:
    model, dataset = tiny_model(), encoded_dataset()
    with count_calls(model.backbone) as calls:
        first = FeatureCache(tmp_path).features_for(model, dataset, batch_size=4, progress=False)
    assert calls[0] == 2  # 7 rows in batches of 4
    with count_calls(model.backbone) as calls:
        second = FeatureCache(tmp_path).features_for(model, dataset, progress=False)  # a new cache object, same folder
    assert calls[0] == 0
    assert second["features"][:] == first["features"][:]
    entries = [path.name for path in tmp_path.iterdir()]
    assert entries == [FeatureCache(tmp_path).key(model, dataset)]

    batch = collate([second.with_format("torch")[i] for i in range(3)], pad_token_id=0)
    out = model(attention_mask=batch["attention_mask"], features=batch["features"])
    assert out.logits.shape == (3, 9, 5)


def test_any_change_of_what_the_features_depend_on_invalidates(tmp_path: Path) -> None:
    cache, dataset = FeatureCache(tmp_path), encoded_dataset()
    model = tiny_model()
    original = cache.features_for(model, dataset, progress=False)["features"][:]
    same = tiny_model(backbone_layer=2)  # -1 and 2 are the same hidden state of a 2-layer backbone
    assert cache.key(same, dataset) == cache.key(model, dataset)

    other_revision = tiny_model()
    other_revision.config = other_revision.config.replace(base_model_revision="abc123")
    changed = {
        "layer": (tiny_model(backbone_layer=1), dataset),
        "revision": (other_revision, dataset),
        "max_length": (tiny_model(max_length=32), dataset),
        "dataset": (model, encoded_dataset(seed=1)),
        "backbone weights": (attach_reasoner(tiny_backbone("bert", seed=1), reasoner_config()), dataset),  # unnamed models
    }
    keys = {cache.key(model, dataset)}
    for what, (other_model, other_data) in changed.items():
        with count_calls(other_model.backbone) as calls:
            features = cache.features_for(other_model, other_data, progress=False)
        assert calls[0] > 0, f"changing the {what} must recompute"
        keys.add(cache.key(other_model, other_data))
        if what in ("layer", "dataset", "backbone weights"):  # (same weights under another revision name give the same numbers)
            assert features["features"][:] != original, f"changing the {what} must change the features"
    assert len(keys) == 1 + len(changed)
    assert FeatureCache(tmp_path, dtype=torch.float32).key(model, dataset) not in keys


def test_disabled_cache_computes_every_time_and_writes_nothing(tmp_path: Path) -> None:
    model, dataset = tiny_model(), encoded_dataset()
    cache = FeatureCache(tmp_path / "cache", enabled=False)
    for _ in range(2):
        with count_calls(model.backbone) as calls:
            features = cache.features_for(model, dataset, batch_size=8, progress=False)
        assert calls[0] == 1
    assert not (tmp_path / "cache").exists()
    enabled = FeatureCache(tmp_path / "other").features_for(model, dataset, progress=False)
    assert features["features"][:] == enabled["features"][:]


def test_a_crashed_write_is_ignored(tmp_path: Path) -> None:
    model, dataset = tiny_model(), encoded_dataset()
    cache = FeatureCache(tmp_path)
    key = cache.key(model, dataset)
    leftover = tmp_path / f"{key}.tmp-crashed"  # what an interrupted write leaves behind
    leftover.mkdir()
    (leftover / FEATURES_FILE).write_bytes(b"half an arrow file")
    with count_calls(model.backbone) as calls:
        features = cache.features_for(model, dataset, progress=False)
    assert calls[0] > 0
    assert [path.name for path in (tmp_path / key).glob("rows-*/" + FEATURES_FILE)] == [FEATURES_FILE]
    reference = FeatureCache(enabled=False).features_for(model, dataset, progress=False)
    assert features["features"][:] == reference["features"][:]
    with count_calls(model.backbone) as calls:
        cache.features_for(model, dataset, progress=False)
    assert calls[0] == 0


def test_a_failing_backbone_leaves_no_entry(tmp_path: Path) -> None:
    model, dataset = tiny_model(), encoded_dataset()

    def explode(*_):
        raise RuntimeError("out of memory")

    handle = model.backbone.register_forward_pre_hook(explode)
    with pytest.raises(RuntimeError, match="out of memory"):
        FeatureCache(tmp_path).features_for(model, dataset, progress=False)
    handle.remove()
    assert list(tmp_path.iterdir()) == []


def test_trainable_backbone_refuses_the_cache(tmp_path: Path) -> None:
    model = attach_reasoner(tiny_backbone("bert", seed=2), reasoner_config())
    next(model.backbone.parameters()).requires_grad_(True)  # as LoRA would
    with pytest.raises(ValueError, match="trainable weights.*can't be precomputed or cached"):
        FeatureCache(tmp_path).features_for(model, encoded_dataset(), progress=False)
    with pytest.raises(ValueError, match="needs an encoded dataset"):
        FeatureCache(tmp_path).features_for(tiny_model(), Dataset.from_dict({"input": ["a"]}), progress=False)


def test_a_shuffled_subset_gets_its_own_matching_features(tmp_path: Path) -> None:
    model, dataset = tiny_model(), encoded_dataset()
    cache = FeatureCache(tmp_path)
    full = cache.features_for(model, dataset, progress=False).with_format("torch")
    subset = dataset.select([6, 0, 3])
    assert cache.key(model, subset) != cache.key(model, dataset)
    rows = cache.features_for(model, subset, progress=False).with_format("torch")
    for row, source in zip(rows, (6, 0, 3)):
        assert row["input_ids"].tolist() == dataset[source]["input_ids"]
        torch.testing.assert_close(row["features"], full[source]["features"])


@pytest.mark.parametrize("damage", ["truncated", "flipped byte", "no integrity record"])
def test_a_damaged_entry_is_recomputed_with_a_warning_never_read(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    import json

    from latentreason.features import SHARD_FILE

    model, dataset = tiny_model(), encoded_dataset()
    cache = FeatureCache(tmp_path)
    good = cache.features_for(model, dataset, progress=False)["features"][:]
    entry = cache.path(model, dataset)
    (shard,) = entry.glob("rows-*")
    file = shard / FEATURES_FILE
    data = file.read_bytes()
    if damage == "truncated":
        file.write_bytes(data[: len(data) // 2])
    elif damage == "flipped byte":  # same length, one feature value changed
        middle = len(data) - 64
        file.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    else:
        record = json.loads((shard / SHARD_FILE).read_text())
        del record["integrity"]
        (shard / SHARD_FILE).write_text(json.dumps(record))
    with count_calls(model.backbone) as calls, caplog.at_level("WARNING", logger="latentreason.features"):
        again = cache.features_for(model, dataset, progress=False)
    assert calls[0] > 0  # recomputed, not read
    assert "damaged" in caplog.text and str(entry) in caplog.text
    assert again["features"][:] == good
    assert [path.name for path in tmp_path.iterdir()] == [entry.name]
    assert sorted(path.name for path in entry.iterdir()) == sorted(["key.json", shard.name])  # the damaged copy is gone


def test_features_are_extracted_on_the_device_this_process_trains_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The backbone loads on the CPU; under a GPU process the cache must run it on that GPU, not where it loaded.

    No GPU here: the process's device is reported as cuda, and `model.to` is watched (the move itself is torch's).
    """
    from accelerate import PartialState

    from latentreason import features
    from latentreason.training.config import TrainingConfig

    class OnDevice:  # this process's state, but on `device`
        def __init__(self, device: torch.device) -> None:
            self.device = device

        def __getattr__(self, name: str):
            return getattr(PartialState(), name)

    model, dataset = tiny_model(), encoded_dataset()
    moved: list[torch.device] = []
    monkeypatch.setattr(model, "to", lambda device: moved.append(device) or model)
    monkeypatch.setattr(features, "PartialState", lambda: OnDevice(torch.device("cuda", 1)))
    training = TrainingConfig(output_dir=str(tmp_path / "run"), cache_dir=str(tmp_path / "cache"))
    assert features.cached_features(model, dataset, training) is not None
    assert moved == [torch.device("cuda", 1)]

    moved.clear()  # on the CPU it stays where it is
    monkeypatch.setattr(features, "PartialState", lambda: OnDevice(torch.device("cpu")))
    features.cached_features(model, dataset, training)
    assert moved == []
