"""The task losses: softmax cross-entropy, and stablemax cross-entropy as TRM's reference trains Sudoku and ARC.

Stablemax (from HRM, "Grokking at the edge of numerical stability") replaces `exp` in the softmax by
    s(x) = x + 1        for x >= 0
    s(x) = 1 / (1 - x)  for x < 0
which grows linearly instead of exponentially, so logits cannot run away once the training set is fit.
As in the reference it is computed in float64. Both losses average over the positions whose label is
not the ignore index (-100).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
LossKind = Literal["softmax", "stablemax"]
LOSS_KINDS: tuple[str, ...] = ("softmax", "stablemax")


def log_stablemax(logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log(s(x) / sum s(x)) along `dim`, with s as in the module docstring."""
    s = torch.where(logits < 0, 1.0 / (1.0 - logits), logits + 1.0)
    return torch.log(s / s.sum(dim=dim, keepdim=True))


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, kind: LossKind = "softmax") -> torch.Tensor:
    """Mean cross-entropy of logits (N, C) against labels (N,), ignoring IGNORE_INDEX.

    Example:
        >>> import torch
        >>> logits, labels = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([0])
        >>> round(float(cross_entropy(logits, labels, "stablemax")), 4)  # -log(3 / (3 + 1 + 0.5))
        0.4055
    """
    if kind == "softmax":
        return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)
    if kind != "stablemax":
        raise ValueError(f"Unknown loss {kind!r}: choose one of {list(LOSS_KINDS)} (`training.loss`).")
    valid = labels != IGNORE_INDEX
    log_probs = log_stablemax(logits.double(), dim=-1)
    picked = log_probs.gather(-1, labels.masked_fill(~valid, 0).unsqueeze(-1)).squeeze(-1)
    return -(picked * valid).sum() / valid.sum().clamp(min=1)
