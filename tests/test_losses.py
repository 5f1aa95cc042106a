"""Stablemax cross-entropy against the formula written here, and training with it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from latentreason.losses import IGNORE_INDEX, cross_entropy
from latentreason.training import TrainingConfig


def stablemax_by_hand(logits: list[list[float]], labels: list[int]) -> float:
    """s(x) = x + 1 (x >= 0), 1 / (1 - x) (x < 0); loss = mean over labelled rows of -log(s(x_y) / sum s(x))."""
    def s(x: float) -> float:
        return x + 1.0 if x >= 0 else 1.0 / (1.0 - x)

    terms = [-math.log(s(row[label]) / sum(s(x) for x in row)) for row, label in zip(logits, labels) if label != IGNORE_INDEX]
    return sum(terms) / len(terms)


def test_stablemax_equals_the_formula() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=generator) * 4
    labels = torch.tensor([0, 4, IGNORE_INDEX, 2, 1, IGNORE_INDEX, 3])
    got = cross_entropy(logits, labels, "stablemax")
    assert got.dtype == torch.float64  # as the reference, computed in float64
    assert float(got) == pytest.approx(stablemax_by_hand(logits.tolist(), labels.tolist()), rel=1e-12)
    # It is a different loss from softmax cross-entropy, which is unchanged.
    softmax = cross_entropy(logits, labels, "softmax")
    assert float(softmax) == pytest.approx(float(F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)), rel=1e-6)
    assert abs(float(got) - float(softmax)) > 1e-3


def test_stablemax_gradient_flows_and_grows_slowly() -> None:
    """Its logits cannot run away: for a right, confident row the gradient falls like 1/x, not exp(-x)."""
    logits = torch.tensor([[30.0, 0.0, 0.0]], requires_grad=True)
    cross_entropy(logits, torch.tensor([0]), "stablemax").backward()
    # d/dx0 of -log((x0+1)/(x0+3)) = 1/(x0+3) - 1/(x0+1)
    assert float(logits.grad[0, 0]) == pytest.approx(1 / 33 - 1 / 31, rel=1e-9)


def test_unknown_loss_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"training.loss.*'softmax' or 'stablemax'.*'focal'"):
        TrainingConfig(loss="focal")
    with pytest.raises(ValueError, match=r"Unknown loss 'focal'.*softmax.*stablemax"):
        cross_entropy(torch.zeros(1, 2), torch.tensor([0]), "focal")
