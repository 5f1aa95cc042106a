"""The label heads: a label per input token, or one label per input."""

from __future__ import annotations

import torch
from torch import nn

from ..config import ReasonerConfig
from ..losses import IGNORE_INDEX, LossKind, cross_entropy
from .base import OutputHead, PerTokenHead, check_label_range, register_output


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
        check_label_range(labels, self.config.num_labels)


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
        check_label_range(labels, self.config.num_labels)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, kind: LossKind = "softmax") -> torch.Tensor:
        return cross_entropy(logits, labels, kind)

    def exact(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1) == labels
