"""Saving, loading and publishing reasoner adapters (`latentreason.hub`), offline.

Base models are tiny random checkpoints saved to temporary folders, so loading by path (and, for
the Hub tests, by repo id from a hand-built Hub cache) works with no network. The Hub itself is
never called: `HfApi.create_repo` / `upload_folder` are replaced by recorders, and the tests assert
exactly what would have been handed to them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
import yaml
from conftest import padded_batch, reasoner_config
from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoTokenizer, LlamaConfig

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner, hub
from latentreason import model as model_module
from latentreason.hub import CONFIG_NAME, EVAL_RESULTS_NAME, LORA_DIR, MODEL_CARD_NAME, WEIGHTS_NAME
from latentreason.hub import save as hub_save
from latentreason.testing import save_tiny_backbone

LABELS = ["zero", "one", "two", "three", "four"]
EVAL_RESULTS = {
    "accuracy": 0.75,
    "exact_match": 0.25,
    "mean_steps": 2.5,
    "per_step": [{"step": 1, "accuracy": 0.5, "exact_match": 0.1}, {"step": 2, "accuracy": 0.75, "exact_match": 0.25}],
}


# --- helpers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bases")


def base_path(base_dir: Path, arch: str, causal_lm: bool = False) -> str:
    """A tiny base model (with a tokenizer) saved once per module, loadable by path."""
    path = base_dir / (arch + ("-causal" if causal_lm else ""))
    if not path.exists():
        save_tiny_backbone(arch, path, causal_lm=causal_lm)
    return str(path)


def build(base: str, seed: int = 0, **changes: Any) -> LatentReasonerModel:
    torch.manual_seed(seed)
    return attach_reasoner(base, reasoner_config(**changes)).eval()


def outputs(model: LatentReasonerModel, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone features, the logits after refinement steps 1 and 2, and the first step's halting logits."""
    features = model.encode(**batch)
    step_logits = torch.stack(model.refine(attention_mask=batch["attention_mask"], features=features, steps=2).step_logits)
    return features, step_logits, model(attention_mask=batch["attention_mask"], features=features).halt_logits


def assert_same_outputs(a: LatentReasonerModel, b: LatentReasonerModel, batch: dict[str, torch.Tensor]) -> None:
    for x, y in zip(outputs(a, batch), outputs(b, batch)):
        assert torch.equal(x, y)


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def front_matter(card_text: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", card_text, re.DOTALL)
    assert match, "the model card has no YAML front matter"
    return yaml.safe_load(match.group(1))


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path, commit: str) -> None:
    """Lay a folder out as huggingface_hub's cache does: blobs by hash, snapshot symlinks, refs/main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for file in sorted(folder.rglob("*")):
        if file.is_file():
            blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, blob)
            link = repo / "snapshots" / commit / file.relative_to(folder)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.fixture(scope="module")
def saved(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LatentReasonerModel, Path]:
    """A llama-based reasoner saved once; tests that damage it work on a copy (`copy_of_saved`)."""
    model = build(base_path(base_dir, "llama"), label_names=LABELS)
    folder = tmp_path_factory.mktemp("saved") / "reasoner"
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture
def copy_of_saved(saved: tuple[LatentReasonerModel, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[1], tmp_path / "reasoner"))


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """Record what would go to the Hub; `uploaded` receives the files that upload_folder would send."""
    record: dict[str, Any] = {"whoami": [], "create_repo": [], "create_branch": [], "upload_folder": [], "uploaded": tmp_path / "uploaded"}

    def whoami(self: HfApi, token: Any = None, **kwargs: Any) -> dict[str, str]:
        record["whoami"].append(self.token)
        return {"name": "user"}

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> str:
        record["create_repo"].append({"repo_id": repo_id, "token": self.token, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def create_branch(self: HfApi, repo_id: str, **kwargs: Any) -> None:
        record["create_branch"].append({"repo_id": repo_id, **kwargs})

    def upload_folder(self: HfApi, **kwargs: Any) -> str:
        record["upload_folder"].append(kwargs)
        folder = Path(kwargs["folder_path"])
        paths = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
        for relative in filter_repo_objects(paths, allow_patterns=kwargs.get("allow_patterns")):
            target = record["uploaded"] / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(folder / relative, target)
        return "commit"

    monkeypatch.setattr(HfApi, "whoami", whoami)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "create_branch", create_branch)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return record


# --- round trips --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arch, output",
    [("llama", "token_classification"), ("bert", "token_classification"), ("t5", "token_classification"),
     ("gpt2", "sequence_classification"), ("llama", "lm_head")],
)
def test_round_trip_gives_identical_outputs(base_dir: Path, tmp_path: Path, arch: str, output: str) -> None:
    causal = output == "lm_head"
    changes = {"output": output, "num_labels": None if causal else 5}
    model = build(base_path(base_dir, arch, causal_lm=causal), **changes)
    batch = padded_batch()
    model.save_pretrained(tmp_path / "reasoner")

    assert sorted(files_in(tmp_path / "reasoner")) == sorted([CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME])
    weights = load_file(tmp_path / "reasoner" / WEIGHTS_NAME)
    assert weights.keys() == model.adapter_state_dict().keys()
    assert not any(name.startswith("backbone.") for name in weights)

    loaded = LatentReasonerModel.from_pretrained(str(tmp_path / "reasoner"))
    assert loaded.config == model.config
    assert_same_outputs(model, loaded, batch)


def test_a_fresh_reasoner_answers_differently(saved: tuple[LatentReasonerModel, Path]) -> None:
    """So the equal outputs of the round trips come from the loaded weights, not from the seed."""
    model, _ = saved
    fresh = build(model.config.base_model_name_or_path, seed=1, label_names=LABELS)
    batch = padded_batch()
    assert not torch.equal(outputs(fresh, batch)[1], outputs(model, batch)[1])


def test_config_file_is_the_config_plus_versions(saved: tuple[LatentReasonerModel, Path]) -> None:
    model, folder = saved
    text = (folder / CONFIG_NAME).read_text()
    values = json.loads(text)
    assert text == json.dumps(values, indent=2, sort_keys=True) + "\n"
    assert values.pop("library_version") == __import__("latentreason").__version__
    assert values.pop("format_version") == hub.FORMAT_VERSION
    assert values == model.config.to_dict()
    assert values["label_names"] == LABELS and values["backbone_model_type"] == "llama" and values["backbone_hidden_size"] == 64
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # the staging folder renamed into place is not private


def test_load_by_repo_id_from_the_hub_cache_offline(base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    base_commit, adapter_commit = "b" * 40, "a" * 40
    put_in_hub_cache(cache, "tiny-org/tiny-llama", Path(base_path(base_dir, "llama")), base_commit)

    torch.manual_seed(0)
    model = attach_reasoner("tiny-org/tiny-llama", reasoner_config()).eval()
    assert model.config.base_model_revision == base_commit  # pinned to the commit, not to "main"
    model.save_pretrained(tmp_path / "saved")
    put_in_hub_cache(cache, "tiny-org/sudoku-reasoner", tmp_path / "saved", adapter_commit)
    shutil.rmtree(tmp_path / "saved")  # only the cache is left
    # The base repo moves on: its main branch now points at other weights. The reasoner must not follow.
    save_tiny_backbone("llama", tmp_path / "newer-base", seed=1)
    put_in_hub_cache(cache, "tiny-org/tiny-llama", tmp_path / "newer-base", "c" * 40)

    batch = padded_batch()
    for revision in (None, adapter_commit):
        loaded = LatentReasonerModel.from_pretrained("tiny-org/sudoku-reasoner", revision=revision)
        assert loaded.config == model.config
        assert_same_outputs(model, loaded, batch)
    on_main = attach_reasoner("tiny-org/tiny-llama", reasoner_config())
    assert on_main.config.base_model_revision == "c" * 40
    on_main.load_adapter_state_dict(model.adapter_state_dict())
    assert not torch.equal(outputs(on_main, batch)[1], outputs(model, batch)[1])  # so the pin is what made them equal
    card = (cache / "models--tiny-org--sudoku-reasoner" / "snapshots" / adapter_commit / MODEL_CARD_NAME).read_text()
    assert front_matter(card)["base_model"] == "tiny-org/tiny-llama"

    with pytest.raises(FileNotFoundError, match=r"'tiny-org/no-such-reasoner' is neither a local folder .*HF_HUB_OFFLINE=1"):
        LatentReasonerModel.from_pretrained("tiny-org/no-such-reasoner")


def test_lora_is_saved_in_peft_format_and_reloaded(base_dir: Path, tmp_path: Path) -> None:
    model = build(base_path(base_dir, "llama"))
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # random B: LoRA changes outputs
    model.backbone.model = get_peft_model(model.backbone.model, lora)
    folder = tmp_path / "reasoner"
    model.save_pretrained(folder)
    assert {"lora/adapter_config.json", "lora/adapter_model.safetensors"} <= set(files_in(folder))
    assert not any(name.startswith("backbone.") for name in load_file(folder / WEIGHTS_NAME))

    loaded = LatentReasonerModel.from_pretrained(folder)
    assert isinstance(loaded.backbone.model, PeftModel)
    batch = padded_batch()
    assert_same_outputs(model, loaded, batch)
    without_lora = build(base_path(base_dir, "llama"))
    without_lora.load_adapter_state_dict(load_file(folder / WEIGHTS_NAME))
    assert not torch.equal(outputs(without_lora, batch)[1], outputs(model, batch)[1])

    # Saving a model without LoRA over it removes the stale adapter, which would otherwise be loaded.
    without_lora.save_pretrained(folder)
    assert not (folder / LORA_DIR).exists()
    assert_same_outputs(without_lora, LatentReasonerModel.from_pretrained(folder), batch)


def test_ema_weights_given_as_state_dict_are_the_ones_saved(base_dir: Path, tmp_path: Path) -> None:
    model = build(base_path(base_dir, "bert"))
    ema = {name: tensor + 0.25 for name, tensor in model.adapter_state_dict().items()}
    # An EMA copy's full state_dict also holds the frozen backbone: those tensors are not saved.
    full = {**ema, **{f"backbone.{name}": tensor for name, tensor in model.backbone.state_dict().items()}}
    model.save_pretrained(tmp_path / "reasoner", state_dict=full)

    saved_weights = load_file(tmp_path / "reasoner" / WEIGHTS_NAME)
    assert saved_weights.keys() == ema.keys()
    assert all(torch.equal(saved_weights[name], ema[name]) for name in ema)
    assert not torch.equal(saved_weights["input_proj.weight"], model.adapter_state_dict()["input_proj.weight"])
    ema_model = build(base_path(base_dir, "bert"))
    ema_model.load_adapter_state_dict(ema)
    assert_same_outputs(ema_model, LatentReasonerModel.from_pretrained(tmp_path / "reasoner"), padded_batch())

    missing = {name: tensor for name, tensor in ema.items() if name != "input_proj.weight"}
    with pytest.raises(ValueError, match=r"missing tensors \['input_proj.weight'\]"):
        model.save_pretrained(tmp_path / "other", state_dict=missing)
    with pytest.raises(ValueError, match=r"'input_proj.weight' has shape \(3, 3\)"):
        model.save_pretrained(tmp_path / "other", state_dict={**ema, "input_proj.weight": torch.zeros(3, 3)})
    assert not (tmp_path / "other").exists()


# --- atomic saves ---------------------------------------------------------------------------------------


def _fail_writing_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(tensors: dict[str, torch.Tensor], filename: str | os.PathLike, metadata: Any = None) -> None:
        Path(filename).write_bytes(b"\x00" * 100)  # part of the file is on disk when the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(hub_save, "save_file", half_written)


def _fail_writing_card(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(self: Any, path: Any) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(huggingface_hub.ModelCard, "save", crash)


@pytest.mark.parametrize("fail", [_fail_writing_weights, _fail_writing_card], ids=["in-weights", "in-card"])
def test_a_crash_mid_save_leaves_the_previous_save_intact(base_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail: Any) -> None:
    first = build(base_path(base_dir, "llama"))
    folder = tmp_path / "reasoner"
    first.save_pretrained(folder)
    before = files_in(folder)

    second = build(base_path(base_dir, "llama"), seed=1)
    with monkeypatch.context() as patch:
        fail(patch)
        with pytest.raises(OSError, match="No space left"):
            second.save_pretrained(folder)
        with pytest.raises(OSError, match="No space left"):
            second.save_pretrained(tmp_path / "fresh")
    assert files_in(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reasoner"]  # no staging folder left, no half-made "fresh"
    assert_same_outputs(first, LatentReasonerModel.from_pretrained(folder), padded_batch())


def test_saving_into_a_run_folder_keeps_its_files_and_reads_its_eval_results(base_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "checkpoints" / "step_10").mkdir(parents=True)
    (run / "checkpoints" / "step_10" / "model.safetensors").write_bytes(b"checkpoint")
    (run / "recipe.yaml").write_text("model:\n  base: tiny\n")
    (run / EVAL_RESULTS_NAME).write_text(json.dumps(EVAL_RESULTS))
    before = files_in(run)

    build(base_path(base_dir, "llama")).save_pretrained(run)
    after = files_in(run)
    assert {name: after[name] for name in before} == before
    assert set(after) == set(before) | {CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME}
    card = (run / MODEL_CARD_NAME).read_text()
    assert "| 2 | 0.7500 | 0.2500 |" in card
    metrics = front_matter(card)["model-index"][0]["results"][0]["metrics"]
    assert {m["type"]: m["value"] for m in metrics} == {"accuracy": 0.75, "exact_match": 0.25}


# --- bad input --------------------------------------------------------------------------------------------


def _pickle_only(folder: Path) -> None:
    torch.save(load_file(folder / WEIGHTS_NAME), folder / "reasoner.bin")
    (folder / WEIGHTS_NAME).unlink()


def _truncate(folder: Path) -> None:
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(data[: len(data) // 2])


def _reshape_tensor(folder: Path) -> None:
    weights = load_file(folder / WEIGHTS_NAME)
    weights["head.classifier.weight"] = torch.zeros(6, 32)
    save_file(weights, folder / WEIGHTS_NAME)


def _drop_tensor(folder: Path) -> None:
    weights = load_file(folder / WEIGHTS_NAME)
    del weights["input_proj.weight"]
    save_file(weights, folder / WEIGHTS_NAME)


def _edit_config(**changes: Any) -> Any:
    def edit(folder: Path) -> None:
        values = json.loads((folder / CONFIG_NAME).read_text())
        (folder / CONFIG_NAME).write_text(json.dumps({**values, **changes}))

    return edit


def _lora_pickle_only(folder: Path) -> None:
    (folder / LORA_DIR).mkdir()
    (folder / LORA_DIR / "adapter_config.json").write_text("{}")
    (folder / LORA_DIR / "adapter_model.bin").write_bytes(b"pickle")


BAD_FOLDERS = {
    "pickle-only": (_pickle_only, ValueError, r"only \['reasoner.bin'\]\. Those are pickle files.*never opens them"),
    "missing-weights": (lambda f: (f / WEIGHTS_NAME).unlink(), FileNotFoundError, r"reasoner.safetensors not found"),
    "truncated-weights": (_truncate, ValueError, r"reasoner.safetensors is truncated or corrupt"),
    "wrong-shape": (_reshape_tensor, ValueError, r"reasoner.safetensors: tensor 'head.classifier.weight' has shape \(6, 32\), the model expects \(5, 32\)"),
    "missing-tensor": (_drop_tensor, ValueError, r"reasoner.safetensors does not match this reasoner: missing tensors \['input_proj.weight'\]"),
    "missing-config": (lambda f: (f / CONFIG_NAME).unlink(), FileNotFoundError, r"reasoner_config.json not found"),
    "corrupt-json": (lambda f: (f / CONFIG_NAME).write_text('{"hidden_size": 32,'), ValueError, r"reasoner_config.json is not valid JSON"),
    "unknown-key": (_edit_config(reasoning_budget=3), ValueError, r"reasoner_config.json has unknown keys \['reasoning_budget'\]"),
    "invalid-value": (_edit_config(latent_steps=0), ValueError, r"reasoner_config.json: invalid reasoner config: `latent_steps` must be >= 1"),
    "newer-format": (_edit_config(format_version=99), ValueError, r"reasoner_config.json has format_version 99.*upgrade latentreason"),
    "lora-pickle": (_lora_pickle_only, ValueError, r"lora/adapter_model.safetensors: it holds only \['adapter_model.bin'\]"),
}


@pytest.mark.parametrize("damage, error, message", BAD_FOLDERS.values(), ids=BAD_FOLDERS.keys())
def test_a_damaged_folder_fails_with_the_file_and_the_key(
    copy_of_saved: Path, monkeypatch: pytest.MonkeyPatch, damage: Any, error: type[Exception], message: str
) -> None:
    damage(copy_of_saved)

    def no_unpickling(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("torch.load must never be called on a reasoner folder")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(error, match=message):
        LatentReasonerModel.from_pretrained(copy_of_saved)


def test_the_other_files_are_checked_before_the_base_model_loads(copy_of_saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _truncate(copy_of_saved)
    monkeypatch.setattr(model_module, "attach_reasoner", lambda *a, **k: pytest.fail("the base model was loaded before the weights were read"))
    with pytest.raises(ValueError, match="truncated"):
        LatentReasonerModel.from_pretrained(copy_of_saved)


def test_a_base_model_of_another_hidden_size_or_type_is_refused_naming_both(saved: tuple[LatentReasonerModel, Path], tmp_path: Path, base_dir: Path) -> None:
    narrow = AutoModel.from_config(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128))
    narrow.save_pretrained(tmp_path / "narrow-llama")
    with pytest.raises(ValueError, match=r"hidden size 64 \(llama\), but the given backbone llama has hidden size 32"):
        LatentReasonerModel.from_pretrained(saved[1], base_model=str(tmp_path / "narrow-llama"))
    with pytest.raises(ValueError, match=r"built for a llama backbone .* but the given backbone is a bert"):
        LatentReasonerModel.from_pretrained(saved[1], base_model=base_path(base_dir, "bert"))


def test_a_base_copy_at_another_revision_warns_and_keeps_the_pinned_one(
    copy_of_saved: Path, saved: tuple[LatentReasonerModel, Path], tmp_path: Path
) -> None:
    pinned, other = "a" * 40, "c" * 40
    _edit_config(base_model_revision=pinned)(copy_of_saved)
    model = saved[0]
    # A copy of the base taken from a Hub cache at another commit (the same weights, for the output check).
    copy_path = shutil.copytree(model.config.base_model_name_or_path, tmp_path / "models--tiny-org--tiny-llama" / "snapshots" / other)
    for base in (str(copy_path), AutoModel.from_pretrained(copy_path)):
        with pytest.warns(UserWarning, match=f"at revision {pinned}, but the base model given is at revision {other}"):
            loaded = LatentReasonerModel.from_pretrained(copy_of_saved, base_model=base)
        assert loaded.config.base_model_revision == pinned
        assert loaded.config.base_model_name_or_path == model.config.base_model_name_or_path
        assert_same_outputs(model, loaded, padded_batch())


def test_a_local_base_that_is_not_on_this_machine_asks_for_base_model(copy_of_saved: Path, saved: tuple[LatentReasonerModel, Path]) -> None:
    _edit_config(base_model_name_or_path="/data/models/tiny-llama")(copy_of_saved)
    with pytest.raises(FileNotFoundError, match=r"local model at /data/models/tiny-llama, which is not on this machine: pass base_model="):
        LatentReasonerModel.from_pretrained(copy_of_saved)
    loaded = LatentReasonerModel.from_pretrained(copy_of_saved, base_model=saved[0].config.base_model_name_or_path)
    assert loaded.config.base_model_name_or_path == "/data/models/tiny-llama"
    assert_same_outputs(saved[0], loaded, padded_batch())


def test_remote_code_runs_only_when_asked(saved: tuple[LatentReasonerModel, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    assert inspect.signature(LatentReasonerModel.from_pretrained).parameters["trust_remote_code"].default is False
    seen: list[bool] = []
    real_attach = model_module.attach_reasoner

    def spy(*args: Any, **kwargs: Any) -> LatentReasonerModel:
        seen.append(kwargs["trust_remote_code"])
        return real_attach(*args, **kwargs)

    monkeypatch.setattr(model_module, "attach_reasoner", spy)
    LatentReasonerModel.from_pretrained(saved[1])
    LatentReasonerModel.from_pretrained(saved[1], trust_remote_code=True)
    assert seen == [False, True]


def test_pickle_serialization_is_refused(saved: tuple[LatentReasonerModel, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only as safetensors"):
        saved[0].save_pretrained(tmp_path / "reasoner", safe_serialization=False)


# --- model card -------------------------------------------------------------------------------------------


def test_model_card_has_hub_metadata_and_the_eval_per_step(saved: tuple[LatentReasonerModel, Path], tmp_path: Path) -> None:
    saved[0].save_pretrained(tmp_path / "reasoner", eval_results=EVAL_RESULTS, dataset_name="tiny-org/sudoku-6x6")
    card = (tmp_path / "reasoner" / MODEL_CARD_NAME).read_text()
    metadata = front_matter(card)
    assert metadata["library_name"] == "latentreason"
    assert set(metadata["tags"]) == {"latentreason", "recursive-reasoning", "trm", "token_classification"}
    assert metadata["datasets"] == ["tiny-org/sudoku-6x6"]
    assert "base_model" not in metadata  # the base is a local folder here, not a Hub id
    (result,) = metadata["model-index"][0]["results"]
    assert result["dataset"]["type"] == "tiny-org/sudoku-6x6"
    assert {m["type"]: m["value"] for m in result["metrics"]} == {"accuracy": 0.75, "exact_match": 0.25}
    assert "| 1 | 0.5000 | 0.1000 |" in card and "| 2 | 0.7500 | 0.2500 |" in card
    assert "| `latent_steps` | `2` |" in card
    assert json.loads((tmp_path / "reasoner" / EVAL_RESULTS_NAME).read_text()) == EVAL_RESULTS


def _snippet(card: str) -> str:
    (code,) = re.findall(r"```python\n(.*?)```", card, re.DOTALL)
    return code


@pytest.mark.parametrize("output", ["token_classification", "sequence_classification", "lm_head"])
def test_the_cards_usage_snippet_runs_as_pasted(base_dir: Path, tmp_path: Path, output: str, capsys: pytest.CaptureFixture[str]) -> None:
    causal = output == "lm_head"
    changes = {"output": output, "num_labels": None if causal else 5, "label_names": None if causal else LABELS}
    model = build(base_path(base_dir, "llama", causal_lm=causal), **changes)
    model.save_pretrained(tmp_path / "reasoner")
    exec(_snippet((tmp_path / "reasoner" / MODEL_CARD_NAME).read_text()), {})
    printed = capsys.readouterr().out

    tokenizer = AutoTokenizer.from_pretrained(model.config.base_model_name_or_path)
    inputs = tokenizer(["5 3 0 0 7 0"], return_tensors="pt")
    if output == "token_classification":  # one label per input cell: none for the special or the space tokens
        from latentreason.data import PairEncoder

        row = PairEncoder(tokenizer, "aligned", LABELS).encode_input("5 3 0 0 7 0")
        per_token = model.refine(torch.tensor([row["input_ids"]]), halt=True).logits.argmax(-1)[0]
        expected = " ".join(LABELS[per_token[position]] for position in row["cell_positions"])
        assert printed.splitlines()[0] == expected and len(expected.split()) == 6
    elif output == "sequence_classification":
        expected = LABELS[model.refine(inputs["input_ids"], inputs["attention_mask"], halt=True).logits.argmax(-1)[0].item()]
        assert printed.splitlines()[0] == expected
    else:
        expected = tokenizer.batch_decode(model.generate(inputs["input_ids"], inputs["attention_mask"]), skip_special_tokens=True)
        assert printed.splitlines()[0] == str(expected)


# --- publishing --------------------------------------------------------------------------------------------


def test_push_to_hub_hands_over_exactly_our_files(saved: tuple[LatentReasonerModel, Path], fake_hub: dict[str, Any]) -> None:
    model = saved[0]
    assert model.push_to_hub("user/sudoku-reasoner", private=True, token="hf_test", eval_results=EVAL_RESULTS, allow_local_base=True) == "commit"
    assert fake_hub["whoami"] == ["hf_test"]  # the token is checked before anything is created

    assert fake_hub["create_repo"] == [{"repo_id": "user/sudoku-reasoner", "token": "hf_test", "private": True, "exist_ok": True, "repo_type": "model"}]
    assert fake_hub["create_branch"] == []
    (call,) = fake_hub["upload_folder"]
    assert call["repo_id"] == "user/sudoku-reasoner" and call["revision"] is None
    assert call["allow_patterns"] == list(hub.HUB_FILES)
    uploaded = fake_hub["uploaded"]
    assert sorted(files_in(uploaded)) == sorted([CONFIG_NAME, EVAL_RESULTS_NAME, MODEL_CARD_NAME, WEIGHTS_NAME])
    assert _snippet((uploaded / MODEL_CARD_NAME).read_text()).count("from_pretrained('user/sudoku-reasoner')") == 1
    assert_same_outputs(model, LatentReasonerModel.from_pretrained(uploaded), padded_batch())


def test_a_training_run_folder_is_pushable_as_is(base_dir: Path, tmp_path: Path, fake_hub: dict[str, Any]) -> None:
    run = tmp_path / "run"
    model = build(base_path(base_dir, "llama"))
    model.backbone.model = get_peft_model(model.backbone.model, LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False))
    (run / "checkpoints" / "step_10").mkdir(parents=True)
    (run / "checkpoints" / "step_10" / "optimizer.bin").write_bytes(b"state")
    (run / "recipe.yaml").write_text("model:\n  base: tiny\n")
    (run / EVAL_RESULTS_NAME).write_text(json.dumps(EVAL_RESULTS))
    model.save_pretrained(run, dataset_name="tiny-org/sudoku-6x6")

    hub.push_folder(run, "user/sudoku-reasoner", revision="v1", commit_message="first version", allow_local_base=True)
    assert fake_hub["create_branch"] == [{"repo_id": "user/sudoku-reasoner", "branch": "v1", "exist_ok": True, "repo_type": "model"}]
    (call,) = fake_hub["upload_folder"]
    assert call["revision"] == "v1" and call["commit_message"] == "first version"
    uploaded = files_in(fake_hub["uploaded"])
    assert set(uploaded) == {CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, EVAL_RESULTS_NAME,
                             "lora/adapter_config.json", "lora/adapter_model.safetensors", "lora/README.md"}
    assert uploaded[WEIGHTS_NAME] == (run / WEIGHTS_NAME).read_bytes()
    metadata = front_matter(uploaded[MODEL_CARD_NAME].decode())
    assert metadata["datasets"] == ["tiny-org/sudoku-6x6"]  # kept from the run's own card
    assert_same_outputs(model, LatentReasonerModel.from_pretrained(fake_hub["uploaded"]), padded_batch())


def test_a_broken_folder_never_reaches_the_hub(copy_of_saved: Path, fake_hub: dict[str, Any]) -> None:
    _truncate(copy_of_saved)
    with pytest.raises(ValueError, match="reasoner.safetensors is truncated or corrupt"):
        hub.push_folder(copy_of_saved, "user/sudoku-reasoner")
    assert fake_hub["create_repo"] == [] and fake_hub["upload_folder"] == []


def test_weights_that_do_not_fit_the_config_are_refused_before_upload(copy_of_saved: Path, saved: tuple[LatentReasonerModel, Path], fake_hub: dict[str, Any]) -> None:
    _edit_config(backbone_hidden_size=48)(copy_of_saved)
    with pytest.raises(ValueError, match=r"tensor 'input_proj.weight' has shape \(32, 64\), but reasoner_config.json implies \(32, 48\)"):
        hub.push_folder(copy_of_saved, "user/sudoku-reasoner")
    assert fake_hub["create_repo"] == []


def test_saved_files_all_get_the_usual_permissions(saved: tuple[LatentReasonerModel, Path]) -> None:
    folder = saved[1]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in folder.iterdir() if path.is_file()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes  # safetensors alone would write reasoner.safetensors 0600


def test_a_token_embedding_reasoner_pushes_its_own_card(tmp_path: Path, fake_hub: dict[str, Any]) -> None:
    config = ReasonerConfig(input="token_embeddings", vocab_size=11, hidden_size=16, num_heads=2, latent_steps=2, cycles=2, num_labels=11)
    model = LatentReasonerModel.from_config(config)
    model.push_to_hub("user/trm-sudoku", token="hf_test")
    uploaded = fake_hub["uploaded"]
    assert sorted(files_in(uploaded)) == sorted([CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME])
    card = (uploaded / MODEL_CARD_NAME).read_text()
    assert "base_model:" not in card and "learned token embeddings (11 token ids)" in card
    ids = torch.randint(0, 11, (2, 5))
    assert torch.equal(LatentReasonerModel.from_pretrained(uploaded).refine(ids).logits, model.eval().refine(ids).logits)
