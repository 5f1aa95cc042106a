"""`save_pretrained`: write a model's adapter (config, safetensors, LoRA when used, model card) atomically.

Every file is written into a staging folder next to the target and then renamed into place, so a
crash or a full disk mid-save leaves the previous save as it was. Files that are not ours (a training
run's `checkpoints/`, `recipe.yaml`, ...) are left alone.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save_file

from ..adapter_state import check_adapter_state_dict, without_backbone
from ..lora import lora_adapter, peft_state_dict
from ..storage import explain_disk_full
from .card import model_card
from .files import (
    CONFIG_NAME,
    EVAL_RESULTS_NAME,
    LORA_DIR,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    config_to_json,
    move_into_place,
    read_eval_results,
    usual_permissions,
    weights_metadata,
)

if TYPE_CHECKING:
    from ..model import LatentReasonerModel


def save_pretrained(
    model: LatentReasonerModel,
    save_directory: str | os.PathLike,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    eval_results: dict[str, Any] | None = None,
    dataset_name: str | None = None,
    safe_serialization: bool = True,
) -> Path:
    """Write the reasoner adapter (config, safetensors weights, LoRA when used, model card) into a folder.

    Args:
        model: the model to save; its backbone's own weights are never written.
        save_directory: the folder; created if needed. Files in it that are not ours are kept.
        state_dict: weights to save instead of `model.adapter_state_dict()`, with the same names and
            shapes: the trainer passes its EMA copy's weights here. Tensors under `backbone.` are
            not written with the reasoner (the backbone is never saved); LoRA tensors among them
            (`backbone.model....lora_*`) are written into the LoRA adapter instead of the model's
            live LoRA weights.
        eval_results: metrics for the model card (keys `accuracy`, `exact_match`, `per_step`,
            `mean_steps`); also written to `eval_results.json`. By default the folder's own
            `eval_results.json` (written by `latentreason train`) is used when present.
        dataset_name: the training data set's Hub id, listed in the card's metadata.
        safe_serialization: must stay True: weights are written only as safetensors.

    Returns:
        The folder.

    Example:
        >>> model.save_pretrained("sudoku-reasoner")                  # doctest: +SKIP
        >>> sorted(os.listdir("sudoku-reasoner"))                     # doctest: +SKIP
        ['README.md', 'reasoner.safetensors', 'reasoner_config.json']
    """
    if not safe_serialization:
        raise ValueError(
            "latentreason writes weights only as safetensors: pickle files (.bin) can run arbitrary code when they "
            "are loaded. Leave safe_serialization=True."
        )
    target = Path(save_directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; save_pretrained needs a folder to write {CONFIG_NAME} and {WEIGHTS_NAME} into.")
    config = model.config
    if config.base_model_name_or_path is None and config.input == "backbone":
        warnings.warn(
            "The model's config does not say which base model it was attached to (base_model_name_or_path is None), "
            "so loading it will need base_model=... . Attach the reasoner to a model id or path to record it.",
            stacklevel=2,
        )
    weights = _weights_to_save(model, state_dict)
    write_eval_results = eval_results is not None
    if eval_results is None:
        eval_results = read_eval_results(target)

    target.parent.mkdir(parents=True, exist_ok=True)
    # Next to the target, so that the final renames stay on one file system; made with mkdir (not mkdtemp,
    # whose folders are private) so the saved folder gets the usual permissions.
    staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    needed = sum(tensor.numel() * tensor.element_size() for tensor in weights.values()) + 64 * 1024  # + config, card
    with explain_disk_full(target, "the adapter folder", needed):
        try:
            (staging / CONFIG_NAME).write_text(config_to_json(config), encoding="utf-8")
            save_file(weights, staging / WEIGHTS_NAME, metadata=weights_metadata())
            usual_permissions(staging / WEIGHTS_NAME)  # safetensors writes 0600; the other files follow the umask
            lora = lora_adapter(model)
            if lora is not None:
                averaged = peft_state_dict(state_dict or {})  # e.g. the trainer's EMA of the LoRA weights
                lora.save_pretrained(staging / LORA_DIR, **({"state_dict": averaged} if averaged else {}))
            if write_eval_results:
                (staging / EVAL_RESULTS_NAME).write_text(json.dumps(eval_results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            card = model_card(config, eval_results=eval_results, dataset_name=dataset_name, load_name=str(target))
            card.save(staging / MODEL_CARD_NAME)
            move_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _weights_to_save(model: LatentReasonerModel, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The adapter's tensors as independent contiguous CPU copies (what safetensors requires)."""
    expected = model.adapter_state_dict()
    if state_dict is None:
        state = expected
    else:
        state = without_backbone(state_dict)
        check_adapter_state_dict(state, expected, "state_dict=", hint="Pass the weights of a copy of this model, e.g. ema_model.adapter_state_dict().")
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}


