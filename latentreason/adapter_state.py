"""The adapter's state dict: which tensors of a `LatentReasonerModel` are saved, and the one check on loading them.

Everything under `backbone.` belongs to the frozen base model and is never saved with the reasoner;
its LoRA tensors (names with `lora_`) are the exception in checkpoints, and are written in PEFT's own
format beside the reasoner (`latentreason.lora.peft_state_dict`). All filtering on that prefix is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

BACKBONE_PREFIX = "backbone."
_WRAPPED_BACKBONE_PREFIX = "module.backbone."  # the same names inside a DDP wrapper (Accelerate's save_state)


def without_backbone(state: Mapping[str, Any]) -> dict[str, Any]:
    """The tensors that are not the backbone's: what `reasoner.safetensors` holds."""
    return {name: tensor for name, tensor in state.items() if not name.startswith(BACKBONE_PREFIX)}


def backbone_tensors(state: Mapping[str, Any]) -> list[str]:
    """The names of the backbone's tensors in `state` (a saved reasoner must have none)."""
    return [name for name in state if name.startswith(BACKBONE_PREFIX)]


def drop_frozen_backbone(state: dict[str, Any]) -> None:
    """Remove the frozen backbone's tensors from a checkpoint's state dict, in place; LoRA tensors stay."""
    for name in [k for k in state if k.startswith((BACKBONE_PREFIX, _WRAPPED_BACKBONE_PREFIX)) and "lora_" not in k]:
        del state[name]


def check_adapter_state_dict(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], source: str, hint: str) -> None:
    """`state` has exactly the tensors of `expected`, with the same shapes; else an error naming what differs.

    `source` names where the weights come from (a file, `state_dict=`); `hint` says what to do about it.

    Example:
        >>> check_adapter_state_dict({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, "weights.safetensors", "Save again.")
        Traceback (most recent call last):
        ...
        ValueError: weights.safetensors: tensor 'w' has shape (2,), the model expects (3,). Save again.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source} does not match this reasoner: missing tensors {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected tensors {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}. {hint}"
        )
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise ValueError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}. {hint}")
