"""The feature cache in shards: two processes split the work and write what one process writes, bit for
bit; a killed extraction resumes with the missing shards only; each storage dtype round-trips; the
fixed random projection is the model's, so cached and raw-text inputs agree."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import reasoner_config
from datasets import Dataset, load_from_disk

from latentreason import LatentReasonerModel, attach_reasoner
from latentreason.backbone import count_calls
from latentreason.feature_storage import INT8_ERROR, bytes_per_token, decode_rows, decoded, encode_rows
from latentreason.features import FEATURES_FILE, FeatureCache, shard_records
from latentreason.testing import VOCAB, save_tiny_backbone
from latentreason.training.persistent import longest_examples

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)

REPO = Path(__file__).resolve().parents[1]
SHARD_ROWS = 4  # 14 rows: shards of 4, 4, 4 and 2 rows

# Every process of a torchrun launch extracts; PartialState(cpu=True) joins the gloo group first.
DRIVER = """
import json, sys
from accelerate import PartialState
state = PartialState(cpu=True)
import torch
from datasets import load_from_disk
from latentreason import ReasonerConfig, attach_reasoner
from latentreason.backbone import count_calls
from latentreason.features import FeatureCache
base, data, reasoner, shard_rows = sys.argv[1], load_from_disk(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
import os
if os.environ.get("FAIL_PROCESS") == str(state.process_index):  # this process's backbone fails on its second shard
    original, computed = FeatureCache._compute, []
    def failing(self, *args):
        if computed:
            raise RuntimeError("the backbone failed here on purpose")
        computed.append(1)
        original(self, *args)
    FeatureCache._compute = failing
model = attach_reasoner(base, ReasonerConfig(**reasoner))
for cache_dir in sys.argv[5:]:
    with count_calls(model.backbone) as calls:
        FeatureCache(cache_dir, shard_rows=shard_rows).features_for(model, data, batch_size=3, progress=False)
    print("EXTRACTED " + json.dumps({"process": state.process_index, "cache": cache_dir, "backbone_calls": calls[0]}), flush=True)
"""
REASONER = {"hidden_size": 32, "num_heads": 2, "num_layers": 2, "expansion": 2.0, "latent_steps": 2, "cycles": 2,
            "max_supervision_steps": 3, "num_labels": 5}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("shards")
    base = save_tiny_backbone("llama", root / "base")
    generator = torch.Generator().manual_seed(0)
    lengths = [3 + (5 * i) % 11 for i in range(14)]
    ids = [torch.randint(5, VOCAB, (length,), generator=generator).tolist() for length in lengths]
    data = Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]})
    data.save_to_disk(str(root / "data"))  # reloaded, it keeps its fingerprint: the same key in every process
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    return {"root": str(root), "base": base, "data": str(root / "data"), "driver": str(driver)}


def launch(workspace: dict[str, str], cache_dirs: list[Path], processes: int, **env: str) -> subprocess.CompletedProcess:
    """Extract into each of `cache_dirs` in turn with `processes` torchrun processes."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), workspace["driver"],
               workspace["base"], workspace["data"], json.dumps(REASONER), str(SHARD_ROWS), *map(str, cache_dirs)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true", **env}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def run_processes(workspace: dict[str, str], cache_dirs: list[Path], processes: int) -> dict[tuple[str, int], int]:
    """Extract into each of `cache_dirs` in turn with `processes` torchrun processes; backbone calls per (cache, process)."""
    completed = launch(workspace, cache_dirs, processes)
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [json.loads(found) for found in re.findall(r"EXTRACTED (\{[^}]*\})", completed.stdout)]  # lines may interleave
    assert len(lines) == processes * len(cache_dirs), completed.stdout
    return {(Path(line["cache"]).name, line["process"]): line["backbone_calls"] for line in lines}


def model_and_data(workspace: dict[str, str]) -> tuple[LatentReasonerModel, Dataset]:
    return attach_reasoner(workspace["base"], reasoner_config()), load_from_disk(workspace["data"])


def shard_files(entry: Path) -> dict[str, bytes]:
    return {shard.parent.name: shard.read_bytes() for shard in sorted(entry.glob("rows-*/" + FEATURES_FILE))}


def test_two_processes_write_what_one_writes_and_each_reads_the_other(workspace: dict[str, str]) -> None:
    root = Path(workspace["root"])
    model, data = model_and_data(workspace)
    single = FeatureCache(root / "one", shard_rows=SHARD_ROWS)
    expected = single.features_for(model, data, batch_size=3, progress=False)["features"][:]

    # Two processes read the 1-process entry (computing nothing), then extract a fresh one.
    calls = run_processes(workspace, [root / "one", root / "two"], 2)
    assert calls[("one", 0)] == calls[("one", 1)] == 0
    two = FeatureCache(root / "two", shard_rows=SHARD_ROWS)
    entry = two.path(model, data)
    assert entry.name == single.path(model, data).name  # the same key whatever the process count
    assert shard_files(entry) == shard_files(single.path(model, data))  # bit for bit, shard by shard
    records = shard_records(entry)
    assert [(r["start"], r["stop"]) for r in records] == [(0, 4), (4, 8), (8, 12), (12, 14)]
    rows_by_process = {0: 0, 1: 0}
    for record in records:
        assert record["computed_by"]["processes"] == 2
        rows_by_process[record["computed_by"]["process"]] += record["stop"] - record["start"]
    assert rows_by_process == {0: 8, 1: 6}  # about half each (shards 0, 2 and 1, 3)
    assert calls[("two", 0)] > 0 and calls[("two", 1)] > 0

    with count_calls(model.backbone) as calls_here:  # a later single process reads the 2-process entry
        read = two.features_for(model, data, progress=False)
    assert calls_here[0] == 0 and read["features"][:] == expected


def test_a_process_that_fails_stops_every_process_and_keeps_the_finished_shards(workspace: dict[str, str], tmp_path: Path) -> None:
    """Process 1 fails on its second shard: process 0 does not wait for it forever; both stop, process 0 naming process 1."""
    completed = launch(workspace, [tmp_path / "cache"], 2, FAIL_PROCESS="1")  # a hang would end in the 300 s timeout
    assert completed.returncode != 0
    output = completed.stdout + completed.stderr
    assert "the backbone failed here on purpose" in output  # process 1's own error
    assert "Feature extraction failed in process 1 of 2" in output and "run again and only the missing rows are computed" in output
    model, data = model_and_data(workspace)
    entry = FeatureCache(tmp_path / "cache", shard_rows=SHARD_ROWS).path(model, data)
    assert [(r["start"], r["stop"]) for r in shard_records(entry)] == [(0, 4), (4, 8), (8, 12)]  # all but process 1's second


def test_a_killed_extraction_resumes_with_the_missing_shards_only(workspace: dict[str, str], tmp_path: Path, monkeypatch) -> None:
    model, data = model_and_data(workspace)
    reference = FeatureCache(tmp_path / "reference", shard_rows=SHARD_ROWS).features_for(model, data, progress=False)["features"][:]
    computed: list[int] = []
    original = FeatureCache._compute

    def stop_after_one_shard(self, model, dataset, file, batch_size, progress):
        if computed:
            raise KeyboardInterrupt  # killed while computing the second shard
        computed.append(len(dataset))
        original(self, model, dataset, file, batch_size, progress)

    cache = FeatureCache(tmp_path / "cache", shard_rows=SHARD_ROWS)
    monkeypatch.setattr(FeatureCache, "_compute", stop_after_one_shard)
    with pytest.raises(KeyboardInterrupt):
        cache.features_for(model, data, progress=False)
    entry = cache.path(model, data)
    assert [(r["start"], r["stop"]) for r in shard_records(entry)] == [(0, 4)]  # one complete shard, no half one read

    def counting(self, model, dataset, file, batch_size, progress):
        computed.append(len(dataset))
        original(self, model, dataset, file, batch_size, progress)

    computed.clear()
    monkeypatch.setattr(FeatureCache, "_compute", counting)
    resumed = cache.features_for(model, data, progress=False)["features"][:]
    assert computed == [4, 4, 2]  # rows 4..14 only
    assert resumed == reference
    assert not [path for path in entry.iterdir() if ".tmp-" in path.name]  # the killed shard's temporary folder is gone


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "int8"])
def test_each_storage_dtype_round_trips(workspace: dict[str, str], tmp_path: Path, dtype: str) -> None:
    model, data = model_and_data(workspace)
    cached = decoded(FeatureCache(tmp_path, dtype=dtype).features_for(model, data, progress=False))
    exact = decoded(FeatureCache(tmp_path / "exact", dtype="float32").features_for(model, data, progress=False))
    for index in range(len(data)):
        stored, truth = cached[index]["features"], exact[index]["features"]
        assert stored.dtype == torch.float32 and stored.shape == truth.shape
        if dtype == "int8":  # the documented bound: each value within its token's largest |value| / 254
            bound = truth.abs().amax(dim=-1, keepdim=True) * INT8_ERROR
            assert ((stored - truth).abs() <= bound * (1 + 1e-5)).all()
            assert (stored - truth).abs().max() > 0  # it is quantised
        else:  # exactly the float32 features rounded to the storage dtype
            assert torch.equal(stored, truth.to(getattr(torch, dtype)).float())
    assert cached[0]["input_ids"].tolist() == data[0]["input_ids"]
    assert longest_examples(cached) == longest_examples(exact)  # what the persistent schedule reads of any storage


def test_stored_values_decode_exactly() -> None:
    features = torch.randn(6, 10) * torch.logspace(-3, 3, 6)[:, None]  # tokens of very different scales
    features[2] = 0.0  # an all-zero token keeps scale 0
    for dtype, tolerance in (("float16", None), ("bfloat16", None), ("float32", None), ("int8", INT8_ERROR)):
        stored = {name: torch.from_numpy(value) for name, value in encode_rows(features, dtype).items()}
        values = stored["features"] if stored["features"].is_floating_point() else stored["features"].long()  # readers may widen integers
        back = decode_rows(values, dtype, stored.get("feature_scales"))
        if tolerance is None:
            assert torch.equal(back, features.to(getattr(torch, dtype)).float())
        else:
            assert ((back - features).abs() <= features.abs().amax(-1, keepdim=True) * tolerance * (1 + 1e-5)).all()
            assert torch.equal(back[2], torch.zeros(10))
    with pytest.raises(ValueError, match="float16 | bfloat16 | float32 | int8"):
        FeatureCache(dtype="float8")


def test_projection_is_the_models_input_path_cached_and_raw_alike(workspace: dict[str, str], tmp_path: Path) -> None:
    model, data = model_and_data(workspace)
    narrow = attach_reasoner(workspace["base"], reasoner_config(feature_projection=8, feature_projection_seed=3))
    cache = FeatureCache(tmp_path)
    assert cache.key(narrow, data) != cache.key(model, data)
    cached = decoded(cache.features_for(narrow, data, progress=False))
    ids = torch.tensor(data[0]["input_ids"])[None]
    raw = narrow.encode(ids, torch.ones_like(ids))[0]  # what predict on raw text computes
    assert cached[0]["features"].shape == (ids.shape[1], 8)
    torch.testing.assert_close(cached[0]["features"], raw, atol=2e-2, rtol=1e-2)  # float16 storage

    narrow.save_pretrained(tmp_path / "adapter")
    reloaded = LatentReasonerModel.from_pretrained(str(tmp_path / "adapter"))
    assert torch.equal(reloaded.feature_projector, narrow.feature_projector)  # rebuilt from the seed, not stored
    out = reloaded(attention_mask=torch.ones(1, ids.shape[1], dtype=torch.long), features=cached[0]["features"][None])
    assert out.logits.shape[:2] == (1, ids.shape[1])
    with pytest.raises(ValueError, match="feature_projection"):
        reasoner_config(feature_projection=8, input="token_embeddings", vocab_size=VOCAB)


def test_the_cache_sizes_in_the_training_guide_are_the_arithmetic() -> None:
    text = (REPO / "docs" / "training.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ([\w.-]+) \| (\d+) \| (\d+) KiB \| (\d+) KiB \| (\d+) KiB \| (\d+) KiB \|$", text, flags=re.MULTILINE)
    assert [row[0] for row in rows] == ["all-MiniLM-L6-v2", "SmolLM2-135M", "Qwen2.5-0.5B", "Llama-3-8B"]
    for _, hidden, float32, float16, int8, projected in rows:
        per_example = [512 * bytes_per_token(int(hidden), dtype) / 1024 for dtype in ("float32", "float16", "int8")]
        assert per_example + [512 * bytes_per_token(256, "float16") / 1024] == [int(float32), int(float16), int(int8), int(projected)]
