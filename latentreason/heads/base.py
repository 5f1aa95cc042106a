"""The output-path contract and its registry: how the answer latent `z_H` becomes predictions and a loss.

An output path is a small module registered under the name used in `ReasonerConfig.output`:

    @register_output("token_classification")
    class TokenClassificationHead(OutputHead): ...

Each one says how many answer slots it needs, turns the answer latent into logits, checks the
labels' shape with an error that names the fix, computes the task loss, and says per sample whether
the prediction is exactly right (the halting target).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..config import ReasonerConfig
from ..losses import IGNORE_INDEX, LossKind, cross_entropy

OUTPUT_HEADS: dict[str, type[OutputHead]] = {}


def register_output(name: str) -> Callable[[type[OutputHead]], type[OutputHead]]:
    def register(cls: type[OutputHead]) -> type[OutputHead]:
        OUTPUT_HEADS[name] = cls
        cls.name = name
        return cls

    return register


class OutputHead(nn.Module):
    """Base class of output paths. `answer` is (B, L + slots, d); `mask` is (B, L + slots)."""

    name = "base"
    # True for paths that run the frozen LM over the prompt (latent_prefix): `forward` then also gets
    # the keywords `input_ids`, `attention_mask` and `labels`.
    reads_prompt = False

    def __init__(self, config: ReasonerConfig, backbone=None) -> None:
        super().__init__()
        self.config = config

    def forward(self, answer: torch.Tensor, mask: torch.Tensor, num_inputs: int) -> torch.Tensor:
        raise NotImplementedError

    def check_labels(self, labels: torch.Tensor, input_ids_shape: tuple[int, ...]) -> None:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, kind: LossKind = "softmax") -> torch.Tensor:
        """The task loss, `kind` = `softmax` or `stablemax` cross-entropy (`training.loss`)."""
        raise NotImplementedError

    def exact(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(B,) bool: the whole prediction of each sample is right."""
        raise NotImplementedError


class PerTokenHead(OutputHead):
    """Base of the heads that predict a sequence, logits (B, L, C) against labels (B, L), -100 ignored.

    Shared by token classification and the LM paths (each answer slot or answer token is one position).
    """

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, kind: LossKind = "softmax") -> torch.Tensor:
        return cross_entropy(logits.flatten(0, 1), labels.flatten(), kind)

    def exact(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        right = (logits.argmax(-1) == labels) | (labels == IGNORE_INDEX)
        return right.all(dim=1)


def check_label_range(labels: torch.Tensor, limit: int, what: str = "labels must be class indices", hint: str = "Is `num_labels` right?") -> None:
    """Labels are integer indices in [0, limit), or the ignore index; else an error that says `what` they must be, and `hint`."""
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices (torch.long), got dtype {str(labels.dtype).removeprefix('torch.')}: "
            "convert them with labels.long()."
        )
    real = labels[labels != IGNORE_INDEX]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= limit):
        raise ValueError(
            f"{what} in [0, {limit}) or {IGNORE_INDEX} (ignored), got values from {int(real.min())} to {int(real.max())}. {hint}"
        )
