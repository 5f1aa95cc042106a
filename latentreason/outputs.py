"""Output paths: how the answer latent `z_H` becomes predictions and a loss.

An output path is a small module registered under the name used in `ReasonerConfig.output`:

    @register_output("token_classification")
    class TokenClassificationHead(OutputHead): ...

Each one says how many answer slots it needs, turns the answer latent into logits, checks the
labels' shape with an error that names the fix, computes the task loss, and says per sample whether
the prediction is exactly right (the halting target). The LM paths (`lm_head`, `latent_prefix`)
register themselves from `latentreason.text_outputs`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .config import ReasonerConfig
from .losses import IGNORE_INDEX, LossKind, cross_entropy

OUTPUT_HEADS: dict[str, type[OutputHead]] = {}


def register_output(name: str) -> Callable[[type[OutputHead]], type[OutputHead]]:
    def register(cls: type[OutputHead]) -> type[OutputHead]:
        OUTPUT_HEADS[name] = cls
        cls.name = name
        return cls

    return register


def build_output_head(config: ReasonerConfig, backbone=None) -> OutputHead:
    if config.output not in OUTPUT_HEADS:
        from . import text_outputs  # noqa: F401  (registers the LM output paths)
    if config.output not in OUTPUT_HEADS:
        raise ValueError(f"Unknown output path {config.output!r}; registered: {sorted(OUTPUT_HEADS)}.")
    return OUTPUT_HEADS[config.output](config, backbone)


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


@register_output("token_classification")
class TokenClassificationHead(PerTokenHead):
    """A label per input token; labels (B, L) aligned to the tokens, -100 where there is none."""

    def __init__(self, config: ReasonerConfig, backbone=None) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def forward(self, answer: torch.Tensor, mask: torch.Tensor, num_inputs: int) -> torch.Tensor:
        return self.classifier(answer[:, :num_inputs])  # (B, L, num_labels)

    def check_labels(self, labels: torch.Tensor, input_ids_shape: tuple[int, ...]) -> None:
        if tuple(labels.shape) != tuple(input_ids_shape[:2]):
            raise ValueError(
                f"token_classification labels must have the shape of input_ids {tuple(input_ids_shape[:2])} "
                f"(one label per token, {IGNORE_INDEX} where there is none), got {tuple(labels.shape)}. "
                "For one label per input use output='sequence_classification'."
            )
        _check_label_range(labels, self.config.num_labels)


@register_output("sequence_classification")
class SequenceClassificationHead(OutputHead):
    """A label per input, read from the first answer slot; labels (B,)."""

    def __init__(self, config: ReasonerConfig, backbone=None) -> None:
        super().__init__(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def forward(self, answer: torch.Tensor, mask: torch.Tensor, num_inputs: int) -> torch.Tensor:
        return self.classifier(answer[:, num_inputs])  # (B, num_labels)

    def check_labels(self, labels: torch.Tensor, input_ids_shape: tuple[int, ...]) -> None:
        if labels.dim() != 1 or labels.shape[0] != input_ids_shape[0]:
            raise ValueError(
                f"sequence_classification labels must have shape (batch,) = ({input_ids_shape[0]},), one class index "
                f"per input, got {tuple(labels.shape)}. For one label per token use output='token_classification'."
            )
        _check_label_range(labels, self.config.num_labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, kind: LossKind = "softmax") -> torch.Tensor:
        return cross_entropy(logits, labels, kind)

    def exact(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1) == labels


def _check_label_range(labels: torch.Tensor, num_labels: int) -> None:
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integer class indices (torch.long), got dtype {str(labels.dtype).removeprefix('torch.')}: "
            "convert them with labels.long()."
        )
    real = labels[labels != IGNORE_INDEX]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= num_labels):
        raise ValueError(
            f"labels must be class indices in [0, {num_labels}) or {IGNORE_INDEX} (ignored), "
            f"got values from {int(real.min())} to {int(real.max())}. Is `num_labels` right?"
        )
