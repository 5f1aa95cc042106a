"""The losses: the one supervision loss (task loss + halting BCE) and the task losses it is built from.

`supervision_loss` is what `LatentReasonerModel.forward` returns as `loss` when labels are given, and
what the trainer backpropagates (`out.loss`); the trainer adds the masking of halted samples (`active`).

The task losses: softmax cross-entropy, and stablemax cross-entropy as TRM's reference trains Sudoku and ARC.

Stablemax (from HRM, "Grokking at the edge of numerical stability") replaces `exp` in the softmax by
    s(x) = x + 1        for x >= 0
    s(x) = 1 / (1 - x)  for x < 0
which grows linearly instead of exponentially, so logits cannot run away once the training set is fit.
As in the reference it is computed in float64. Both losses average over the positions whose label is
not the ignore index (-100).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

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


@dataclass
class SupervisionLoss:
    """One supervision step's loss and its parts."""

    loss: torch.Tensor  # task_loss (x task_weight) + halt_loss_weight * halt_loss
    task_loss: torch.Tensor
    halt_loss: torch.Tensor | None  # None without a halting head
    exact: torch.Tensor  # (B,) bool: the whole prediction is right (the halting target)


def supervision_loss(
    head: Any,
    logits: torch.Tensor,
    halt_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    halting: bool = True,
    halt_loss_weight: float = 0.5,
    kind: LossKind = "softmax",
    active: torch.Tensor | None = None,
    task_weight: torch.Tensor | None = None,
    task_labels: torch.Tensor | None = None,
) -> SupervisionLoss:
    """Task loss (`head.loss`, x `task_weight` when given) + `halt_loss_weight` x BCE(halt logit, "exactly right").

    TRM's loss for one supervision step. `head` is the output path (its `loss` and `exact`); with
    `halting` off there is no halting term. `active` (B,) bool masks halted samples out of both terms
    (their labels become the ignore index); then a micro-batch with no active sample left gives a zero
    loss that still touches every weight, so DDP's gradient all-reduce lines up across processes.
    `task_labels` (the shape of `labels`) are this step's targets of the task loss when they are not the
    answer (Deep Improvement Supervision's intermediate targets, `training.improvement_supervision`);
    "exactly right", and so the halting target, always compares with `labels`, the whole answer.

    Example:
        >>> from latentreason.heads.classification import SequenceClassificationHead
        >>> from latentreason import ReasonerConfig
        >>> head = SequenceClassificationHead(ReasonerConfig(hidden_size=32, num_heads=2, num_labels=3))
        >>> logits, labels = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]]), torch.tensor([0, 2])
        >>> out = supervision_loss(head, logits, torch.zeros(2), labels, active=torch.tensor([True, False]))
        >>> out.exact.tolist(), round(float(out.task_loss), 4)   # the second sample has halted: only the first counts
        ([True, False], 0.2395)
    """
    exact = head.exact(logits.detach(), labels)
    if task_labels is not None and task_labels.shape != labels.shape:
        raise ValueError(f"task_labels must have the shape of labels {tuple(labels.shape)}, got {tuple(task_labels.shape)}.")
    step_labels = labels if task_labels is None else task_labels
    if active is None:
        task_loss = head.loss(logits, step_labels, kind)
        if task_weight is not None:
            task_loss = task_loss * task_weight
        if not halting:
            return SupervisionLoss(task_loss, task_loss, None, exact)
        halt_loss = F.binary_cross_entropy_with_logits(halt_logits.float(), exact.float())
        return SupervisionLoss(task_loss + halt_loss_weight * halt_loss, task_loss, halt_loss, exact)

    targets = step_labels.masked_fill(~active.view(-1, *([1] * (labels.dim() - 1))), IGNORE_INDEX)
    zero = logits.sum() * 0.0 + halt_logits.sum() * 0.0
    task_loss = head.loss(logits, targets, kind) if bool((targets != IGNORE_INDEX).any()) else zero
    if task_weight is not None:
        task_loss = task_loss * task_weight
    if not halting:
        return SupervisionLoss(task_loss + zero, task_loss, None, exact)
    halt_loss = F.binary_cross_entropy_with_logits(halt_logits[active].float(), exact[active].float()) if bool(active.any()) else zero
    return SupervisionLoss(task_loss + halt_loss_weight * halt_loss + zero, task_loss, halt_loss, exact)
