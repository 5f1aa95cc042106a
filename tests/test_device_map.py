"""Backbones larger than a device: `device_map` / `offload_folder` / `max_memory` and `dtype` at load time.

On this CPU-only machine a map splits the tiny backbone between "cpu" and "disk" (Accelerate's big-model
offload: disk modules keep their weights on disk and load them for each forward), or `auto` with a
`max_memory` too small for any of it sends the whole model to disk. The features must equal the unsplit
model's exactly (the same float32 kernels run on the same weights; only where the weights live differs).
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import padded_batch, reasoner_config, token_labels

from latentreason import LatentReasonerModel, attach_reasoner
from latentreason.recipe import RecipeError, load_recipe
from latentreason.testing import save_tiny_backbone
from latentreason.training import TrainingConfig
from latentreason.training.loop import train

pytestmark = pytest.mark.usefixtures("one_thread")

SPLIT = {"embed_tokens": "cpu", "layers.0": "cpu", "layers.1": "disk", "norm": "disk", "rotary_emb": "cpu"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_backbone("llama", tmp_path_factory.mktemp("device_map") / "base")


def _features(model: LatentReasonerModel) -> torch.Tensor:
    batch = padded_batch(batch=3, length=9)
    return model.encode(batch["input_ids"], batch["attention_mask"])


@pytest.mark.parametrize("placement", ["split", "auto_offload"])
def test_a_split_backbone_gives_the_unsplit_features_and_trains(base: str, tmp_path, placement: str) -> None:
    config = reasoner_config()
    whole = attach_reasoner(base, config)
    if placement == "split":
        split = attach_reasoner(base, config, device_map=SPLIT, offload_folder=str(tmp_path / "offload"))
        assert split.backbone.model.hf_device_map == SPLIT
    else:  # a memory limit that holds nothing: Accelerate offloads all of it
        split = attach_reasoner(base, config, device_map="auto", max_memory={"cpu": "10KB"}, offload_folder=str(tmp_path / "offload"))
        assert set(split.backbone.model.hf_device_map.values()) == {"disk"}
    assert any(p.device.type == "meta" for p in split.backbone.parameters())  # the disk part is not in memory
    assert split.reasoner_device == torch.device("cpu")  # the map's first device (disk computes on the CPU)
    torch.testing.assert_close(_features(split), _features(whole), rtol=0, atol=0)

    # The reasoner trains on them: weights move, the offloaded backbone stays as it was.
    batch = padded_batch(batch=4, length=9)
    rows = [{"input_ids": ids, "attention_mask": mask, "labels": labels}
            for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], token_labels(batch))]
    before = {name: tensor.clone() for name, tensor in split.adapter_state_dict().items()}
    from latentreason.data import collate

    result = train(split, rows, TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=2, batch_size=4, ema=False,
                                               use_feature_cache=False, checkpoint_every=None, report_to="none", warmup_steps=0),
                   collate_fn=functools.partial(collate, pad_token_id=0))
    assert result.global_step == 2
    moved = [name for name, tensor in result.adapter_state_dict.items() if not torch.equal(tensor, before[name])]
    assert "input_proj.weight" in moved and any(name.startswith("reasoner.") for name in moved)
    torch.testing.assert_close(_features(split), _features(whole), rtol=0, atol=0)


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_the_lm_output_paths_decode_through_an_offloaded_lm_as_through_the_whole_one(tmp_path, output: str) -> None:
    """The frozen LM that writes the answer lives on disk (Accelerate offload): the same logits and the same tokens."""
    base = save_tiny_backbone("llama", tmp_path / "causal", causal_lm=True)
    config = reasoner_config(output=output, num_labels=None, num_answer_slots=4, max_supervision_steps=2)
    whole = attach_reasoner(base, config)
    split = attach_reasoner(base, config, device_map="auto", max_memory={"cpu": "10KB"}, offload_folder=str(tmp_path / "offload"))
    assert set(split.backbone.model.hf_device_map.values()) == {"disk"}
    split.load_adapter_state_dict(whole.adapter_state_dict())
    batch = padded_batch(batch=3, length=7)
    labels = torch.tensor([[7, 2, -100, -100]] * 3) if output == "lm_head" else torch.tensor([[7, 2]] * 3)
    whole.eval()
    split.eval()
    with torch.no_grad():
        expected = whole(**batch, labels=labels)
        found = split(**batch, labels=labels)
        torch.testing.assert_close(found.logits, expected.logits, rtol=0, atol=0)
        torch.testing.assert_close(found.loss, expected.loss, rtol=0, atol=0)
        options = {"max_new_tokens": 3} if output == "latent_prefix" else {}
        assert torch.equal(split.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **options),
                           whole.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **options))


@pytest.mark.parametrize(("device_map", "named"), [
    ({"embed": "cpu", "layers": "cpu", "norm": "cpu"}, "key 'embed' names no module of llama"),
    ({"": "gpu"}, "entry '': 'gpu' is not a device"),
    ({"": 3}, "this machine has"),
    ({"embed_tokens": "cpu"}, "gives no device for layers.0"),
    ("fastest", "'fastest' is not a placement strategy"),
])
def test_a_bad_device_map_names_the_key_and_the_fix(base: str, device_map, named: str) -> None:
    if named == "this machine has" and torch.cuda.device_count() > 3:
        pytest.skip("this machine has a fourth GPU")
    with pytest.raises(ValueError, match=named) as caught:
        attach_reasoner(base, reasoner_config(), device_map=device_map)
    assert "device_map" in str(caught.value) and ("auto" in str(caught.value) or '""' in str(caught.value) or "cpu" in str(caught.value))


def test_recipe_keys_are_checked_before_anything_loads() -> None:
    recipe = load_recipe(None, ["model.base=x", "data.task=sort_words", "model.device_map={embed_tokens: 0, layers: cpu}",
                                "model.dtype=bfloat16", "model.offload_folder=/tmp/offload"])
    assert recipe.model.device_map == {"embed_tokens": 0, "layers": "cpu"} and recipe.model.dtype == "bfloat16"
    with pytest.raises(RecipeError, match="'gpu' is not a placement strategy"):
        load_recipe(None, ["model.base=x", "data.task=sort_words", "model.device_map=gpu"])
    with pytest.raises(RecipeError, match="expected one of"):
        load_recipe(None, ["model.base=x", "data.task=sort_words", "model.dtype=bf16"])
    with pytest.raises(RecipeError, match="set `model.device_map: auto` with it"):
        load_recipe(None, ["model.base=x", "data.task=sort_words", "model.max_memory={cpu: 1GiB}"])


def test_dtype_is_recorded_and_the_adapter_reloads_in_it(base: str, tmp_path) -> None:
    # bf16 on this CPU is ~100x slower than fp32: only a 3 x 9 forward here.
    model = attach_reasoner(base, reasoner_config(), torch_dtype="bfloat16")
    assert model.backbone.dtype == torch.bfloat16 and model.config.backbone_dtype == "bfloat16"
    assert _features(model).dtype == torch.float32  # the reasoner reads float32 features whatever the backbone's dtype
    assert next(model.reasoner.parameters()).dtype == torch.float32
    model.save_pretrained(tmp_path / "adapter")
    reloaded = LatentReasonerModel.from_pretrained(tmp_path / "adapter")
    assert reloaded.backbone.dtype == torch.bfloat16
    torch.testing.assert_close(_features(reloaded), _features(model), rtol=0, atol=0)
    assert LatentReasonerModel.from_pretrained(tmp_path / "adapter", dtype="float32").backbone.dtype == torch.float32
    with pytest.raises(ValueError, match="disagree"):
        attach_reasoner(base, reasoner_config(), dtype="float16", torch_dtype="bfloat16")
