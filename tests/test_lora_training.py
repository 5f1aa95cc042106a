"""LoRA in the training loop: a resumed run ends where an uninterrupted one does, and the saved LoRA
adapter holds the EMA weights (the ones that were evaluated), not the last raw ones.

A tiny Llama sorts 4 digits (token classification) with LoRA on its q/v projections, 8 optimizer
steps (2 supervision steps per batch), a checkpoint every 3 or more steps (at batch ends: 4 and 8), EMA on.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import save_tiny_base
from safetensors.torch import load_file

from latentreason import LatentReasonerModel
from latentreason.pipeline import train_recipe
from latentreason.recipe import load_recipe
from latentreason.training import latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)

LORA = "{rank: 2, alpha: 4, target_modules: [q_proj, v_proj]}"


def overrides(base: str, output_dir: str) -> list[str]:
    values = {
        "model.base": base,
        "model.lora": LORA,
        "data.task": "sort_words",
        "data.task_options": "{length: 4, max_value: 4, as_digits: true, num_train: 48, num_test: 16, seed: 0}",
        "reasoner.hidden_size": 32,
        "reasoner.num_heads": 2,
        "reasoner.latent_steps": 1,
        "reasoner.cycles": 1,
        "reasoner.max_supervision_steps": 2,
        "reasoner.halting": False,
        "training.batch_size": 16,
        "training.max_steps": 8,
        "training.warmup_steps": 2,
        "training.learning_rate": 1e-2,
        "training.ema": True,
        "training.ema_decay": 0.9,
        "training.checkpoint_every": 3,
        "training.output_dir": output_dir,
        "training.report_to": "none",
        "training.progress_bar": False,
    }
    return [f"{key}={value}" for key, value in values.items()]


def lora_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The LoRA tensors of a state dict, by their name inside the layer (`...q_proj.lora_A...`): comparable
    between a model's named parameters, the training result and peft's saved adapter."""
    found = {}
    for name, tensor in state.items():
        if "lora_" in name:
            short = name.split("layers.", 1)[1].replace(".default", "")
            found[short] = tensor.detach()
    return found


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora_training")
    return {"root": str(root), "base": save_tiny_base(str(root / "base"))}


@pytest.fixture(scope="module")
def reference(workspace: dict[str, str]):
    """The uninterrupted run: its result and the live LoRA weights at the end."""
    output_dir = os.path.join(workspace["root"], "reference")
    result = train_recipe(load_recipe(None, overrides(workspace["base"], output_dir)))
    return output_dir, result


def test_the_ema_covers_the_lora_weights_and_the_saved_adapter_holds_them(reference, workspace: dict[str, str]) -> None:
    output_dir, result = reference
    ema_lora = lora_weights(result.adapter_state_dict)
    assert len(ema_lora) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    saved = lora_weights(load_file(os.path.join(output_dir, "lora", "adapter_model.safetensors")))
    assert saved.keys() == ema_lora.keys()
    for name, tensor in ema_lora.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0, msg=name)
    # ... and they are the average, not the last raw weights: the live LoRA B matrices moved away from zero
    # on every step, and the EMA lags behind them.
    reloaded = LatentReasonerModel.from_pretrained(output_dir, base_model=workspace["base"])
    reloaded_lora = lora_weights(dict(reloaded.backbone.named_parameters()))
    for name, tensor in ema_lora.items():
        torch.testing.assert_close(reloaded_lora[name], tensor, rtol=0, atol=0, msg=name)
    checkpoint = load_file(os.path.join(latest_checkpoint(output_dir), "model.safetensors"))
    raw = lora_weights(checkpoint)  # the checkpoint holds the live weights
    assert raw.keys() == ema_lora.keys()
    assert any(not torch.equal(raw[name], ema_lora[name]) for name in raw if "lora_B" in name)


def test_a_resumed_lora_run_ends_with_the_same_weights(reference, workspace: dict[str, str]) -> None:
    _, expected = reference
    output_dir = os.path.join(workspace["root"], "interrupted")
    recipe = load_recipe(None, overrides(workspace["base"], output_dir))
    crashed = train_recipe(recipe, stop_after_steps=5)  # "crashes" after step 5, inside the third batch
    assert not crashed.finished and latest_checkpoint(output_dir).endswith("step-4")  # checkpoints fall between batches
    checkpoint = lora_weights(load_file(os.path.join(latest_checkpoint(output_dir), "model.safetensors")))
    assert checkpoint and any(bool(t.abs().sum() > 0) for name, t in checkpoint.items() if "lora_B" in name)  # LoRA B starts at 0

    resumed = train_recipe(recipe, resume=True)
    assert resumed.finished and resumed.global_step == 8
    assert resumed.adapter_state_dict.keys() == expected.adapter_state_dict.keys()
    for name, tensor in expected.adapter_state_dict.items():  # the reasoner's and the LoRA weights, EMA
        torch.testing.assert_close(resumed.adapter_state_dict[name], tensor, atol=1e-6, rtol=0, msg=name)
    live = lambda folder: lora_weights(load_file(os.path.join(latest_checkpoint(folder), "model.safetensors")))  # noqa: E731
    for name, tensor in live(reference[0]).items():  # and the raw LoRA weights at the last step
        torch.testing.assert_close(live(output_dir)[name], tensor, atol=1e-6, rtol=0, msg=name)
