"""Breadth at test time: several perturbed refinement trajectories per example, one answer chosen.

`LatentReasonerModel.refine(..., trajectories=M, noise=sigma, select=...)` runs M copies of every
example in one batch (the backbone still reads each input once): trajectory 0 is the plain one,
trajectories 1..M-1 get Gaussian noise of standard deviation `noise` added to their carry (z_H and
z_L) after every supervision step, as PTRM perturbs its latent. One answer per example is kept:
- `select="halt"`: the trajectory whose halting head is most confident at the step it ended on;
- `select="vote"`: the most frequent final answer (whole predictions compared); ties go to the most
  confident of the tied trajectories.
"""

from __future__ import annotations

from typing import Literal

import torch

from .reasoner import Carry

Select = Literal["halt", "vote"]
SELECTIONS = ("halt", "vote")


def check(trajectories: int, noise: float, select: str) -> None:
    """A clear error for values that cannot run."""
    if not isinstance(trajectories, int) or isinstance(trajectories, bool) or trajectories < 1:
        raise ValueError(f"`trajectories` must be a whole number >= 1 (1 = one plain run), got {trajectories!r}.")
    if not noise >= 0:  # also catches NaN
        raise ValueError(f"`noise` must be >= 0 (the standard deviation added to the carry; 0 = none), got {noise!r}.")
    if select not in SELECTIONS:
        raise ValueError(f"`select` must be one of {SELECTIONS}, got {select!r}.")


def expand(tensor: torch.Tensor | None, trajectories: int) -> torch.Tensor | None:
    """Repeat each example `trajectories` times, the copies of one example next to each other: (B, ...) -> (B*M, ...)."""
    if tensor is None or trajectories == 1:
        return tensor
    return tensor.repeat_interleave(trajectories, dim=0)


def perturb(carry: Carry, trajectories: int, noise: float, generator: torch.Generator | None) -> Carry:
    """Add N(0, noise^2) to the carry of every trajectory but the first of each example."""
    if noise == 0 or trajectories == 1:
        return carry
    rows = carry.answer.shape[0]
    scale = torch.full((rows,), noise, dtype=carry.answer.dtype)
    scale[::trajectories] = 0.0  # trajectory 0 of each example stays plain
    scale = scale.to(carry.answer.device)[:, None, None]

    def draw(like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)

    return Carry(carry.answer + scale * draw(carry.answer), carry.latent + scale * draw(carry.latent))


def choose(predictions: torch.Tensor, confidence: torch.Tensor, trajectories: int, select: Select) -> torch.Tensor:
    """Which trajectory (0..M-1) to keep per example.

    Args:
        predictions: (B*M, ...) integer answers (argmax of the logits), copies of an example adjacent.
        confidence: (B*M,) the halting logit at the step each trajectory ended on.
    """
    confidence = confidence.view(-1, trajectories)
    if select == "halt":
        return confidence.argmax(dim=1)
    answers = predictions.reshape(confidence.shape[0], trajectories, -1)
    same = (answers[:, :, None, :] == answers[:, None, :, :]).all(dim=-1)  # (B, M, M): trajectory i's answer equals j's
    votes = same.sum(dim=2)  # (B, M): how many trajectories gave trajectory i's answer
    best = votes == votes.max(dim=1, keepdim=True).values
    return torch.where(best, confidence, torch.full_like(confidence, -torch.inf)).argmax(dim=1)


def pick(tensor: torch.Tensor, chosen: torch.Tensor, trajectories: int) -> torch.Tensor:
    """Rows of the chosen trajectory per example: (B*M, ...) -> (B, ...)."""
    grouped = tensor.view(-1, trajectories, *tensor.shape[1:])
    return grouped[torch.arange(grouped.shape[0], device=tensor.device), chosen.to(tensor.device)]
