"""LoRA on the backbone, through `peft`: the backbone adapts a little while the reasoner learns.

    model = attach_reasoner(base, config, lora={"rank": 8, "alpha": 16, "target_modules": ["q_proj", "v_proj"]})
    model.backbone.model          # a peft.PeftModel: LoRA layers injected into the frozen LM
    model.backbone_trains         # True: features now need gradients, so they can't be cached

What it changes:
- `apply_lora` wraps `backbone.model` with `peft.get_peft_model`. peft freezes every base weight and
  makes only the LoRA matrices trainable, so the optimizer (which takes the parameters with
  `requires_grad`) trains them together with the reasoner; the base weights never change.
- With the LM output paths, the LM that decodes is the same model, so it reads with LoRA on too.
- The backbone stays in eval mode (`FrozenBackbone.train`), so LoRA dropout never fires: keep `dropout=0`.
- The LoRA weights are not in `adapter_state_dict()` (which holds no backbone tensor): they are
  saved apart in peft's own format (`PeftModel.save_pretrained`, see `latentreason.hub`).
- The trainer's EMA averages every trainable weight, the LoRA matrices included; the trainer's
  final weights name them as the model does (`backbone.model.base_model....lora_A.default.weight`),
  and `save_pretrained(state_dict=...)` writes those averaged values into the LoRA adapter
  (`peft_state_dict`), so the saved adapter is the one that was evaluated.
- The feature cache can't be used: the features change at every optimizer step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn

# The short names accepted in a recipe's `model.lora` section, and the peft.LoraConfig field each sets.
LORA_KEYS = {"rank": "r", "alpha": "lora_alpha", "target_modules": "target_modules", "dropout": "lora_dropout"}


def lora_config(lora: LoraConfig | Mapping[str, Any]) -> LoraConfig:
    """A `peft.LoraConfig` from itself or from a dict with `rank`, `alpha`, `target_modules`, `dropout`.

    `target_modules` may be a list of module names, "all-linear", or left out (peft then picks the
    attention projections it knows for the architecture).

    Example:
        >>> lora_config({"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}).r
        4
    """
    if isinstance(lora, LoraConfig):
        return lora
    if not isinstance(lora, Mapping):
        raise TypeError(f"`lora` must be a peft.LoraConfig or a dict with keys {sorted(LORA_KEYS)}, got {type(lora).__name__}.")
    unknown = sorted(set(lora) - set(LORA_KEYS))
    if unknown:
        raise ValueError(f"Unknown LoRA settings {unknown}; use {sorted(LORA_KEYS)} (or pass a peft.LoraConfig for more).")
    rank = lora.get("rank", 8)
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"LoRA `rank` must be an integer >= 1, got {rank!r}.")
    dropout = lora.get("dropout", 0.0)
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA `dropout` must be in [0, 1), got {dropout!r}.")
    values = {LORA_KEYS[key]: value for key, value in lora.items() if value is not None}
    values.setdefault("lora_alpha", 2 * rank)
    return LoraConfig(**values)


def apply_lora(backbone: nn.Module, lora: LoraConfig | Mapping[str, Any]) -> PeftModel:
    """Wrap `backbone.model` (a `FrozenBackbone`'s model) with LoRA; returns the `PeftModel` now in its place."""
    if has_lora(backbone):
        raise ValueError("This backbone already has LoRA; attach the reasoner to a fresh base model instead.")
    config = lora_config(lora)
    try:
        backbone.model = get_peft_model(backbone.model, config)
    except ValueError as error:
        raise ValueError(
            f"peft could not add LoRA to {backbone.model_type}: {error} Set `target_modules` to the names of its "
            "linear layers (e.g. ['q_proj', 'v_proj']), or 'all-linear'."
        ) from error
    return backbone.model


def has_lora(backbone: nn.Module) -> bool:
    """True when the backbone's model is wrapped by peft."""
    return isinstance(getattr(backbone, "model", None), PeftModel)


def lora_adapter(model: nn.Module) -> PeftModel | None:
    """A `LatentReasonerModel`'s backbone `peft.PeftModel` when LoRA is on it, else None."""
    return model.backbone.model if model.backbone is not None and has_lora(model.backbone) else None


# Where the PeftModel sits inside a LatentReasonerModel: `model.backbone.model`.
PEFT_PREFIX = "backbone.model."


def peft_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """The LoRA tensors of a `LatentReasonerModel` state dict (e.g. the trainer's EMA weights), named as the
    backbone's `PeftModel` names them: what `PeftModel.save_pretrained(state_dict=...)` takes. Empty if none.

    Example:
        >>> peft_state_dict({"backbone.model.base_model.model.q_proj.lora_A.default.weight": 1, "input_proj.weight": 2})
        {'base_model.model.q_proj.lora_A.default.weight': 1}
    """
    return {name[len(PEFT_PREFIX) :]: tensor for name, tensor in state_dict.items() if name.startswith(PEFT_PREFIX) and "lora_" in name}


def lora_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """The trainable LoRA parameters on a model's backbone, by name (empty without LoRA)."""
    return {name: p for name, p in model.backbone.named_parameters() if p.requires_grad and "lora_" in name}
