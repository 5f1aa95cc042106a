"""Test-time refinement: depth (supervision steps from the carry) and breadth (perturbed trajectories).

`refine` is the loop behind `LatentReasonerModel.refine`: it runs supervision steps from a fresh carry,
keeps each step's logits, and lets a sample stop at the first step its halting head says so.

Breadth: `LatentReasonerModel.refine(..., trajectories=M, noise=sigma, select=...)` runs M copies of every
example in one batch (the backbone still reads each input once): trajectory 0 is the plain one,
trajectories 1..M-1 get Gaussian noise of standard deviation `noise` added to their carry (z_H and
z_L) after every supervision step, as PTRM perturbs its latent. One answer per example is kept:
- `select="halt"`: the trajectory whose halting head is most confident at the step it ended on;
- `select="vote"`: the most frequent final answer (whole predictions compared); ties go to the most
  confident of the tied trajectories.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from transformers.utils import ModelOutput

from .reasoner import Carry

Select = Literal["halt", "vote"]
SELECTIONS = ("halt", "vote")


@dataclass
class RefineOutput(ModelOutput):
    """Test-time refinement: logits after each supervision step, and where each sample halted."""

    logits: torch.Tensor | None = None  # the final prediction (halted samples keep their halting-step logits)
    step_logits: list[torch.Tensor] | None = None  # logits after step 1..steps
    halted_at: torch.Tensor | None = None  # (B,) 1-based step at which each sample stopped
    carry: Carry | None = None
    trajectory: torch.Tensor | None = None  # (B,) the trajectory kept per sample (with trajectories > 1)
    step_halt_logits: list[torch.Tensor] | None = None  # (B,) halt logit after step 1..steps, beside step_logits


def refine(model: nn.Module, features: torch.Tensor, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None,
           *, steps: int, halt: bool, trajectories: int, noise: float, select: Select, seed: int, every_step: bool) -> RefineOutput:
    """Up to `steps` supervision steps of `model` (a `LatentReasonerModel`; typed as a module so this file needs no
    import of model.py, which imports it) on backbone `features` (arguments checked by the caller).

    A sample halts at the first step whose halt logit is above `model.config.halt_logit_threshold` and keeps
    that step's logits; the batch stops when all have halted. With `every_step=False` only the kept logits are
    returned, so memory does not grow with `steps`. With M > 1 trajectories, see the module docstring.
    """
    M = trajectories
    features, input_ids, attention_mask = (expand(t, M) for t in (features, input_ids, attention_mask))
    generator = torch.Generator().manual_seed(seed) if noise and M > 1 else None
    carry, step_logits, step_halt_logits, final, final_halt = None, [], [], None, None
    batch = features.shape[0]
    halted_at = torch.full((batch,), steps, dtype=torch.long, device=features.device)
    done = torch.zeros(batch, dtype=torch.bool, device=features.device)
    for step in range(1, steps + 1):
        out = model(input_ids=input_ids, attention_mask=attention_mask, features=features, carry=carry)
        carry = out.carry if out.carry is None else perturb(out.carry, M, noise, generator)
        if every_step:
            step_logits.append(out.logits)
            step_halt_logits.append(out.halt_logits)
        if final is None:
            final, final_halt = out.logits.clone(), out.halt_logits.clone()
        else:
            final = torch.where(done.view(-1, *([1] * (out.logits.dim() - 1))), final, out.logits)
            final_halt = torch.where(done, final_halt, out.halt_logits)
        if halt:
            newly = (out.halt_logits > model.config.halt_logit_threshold) & ~done
            halted_at[newly] = step
            done |= newly
            if bool(done.all()):
                break
    if not every_step:
        step_logits, step_halt_logits = [final], [final_halt]  # the one prediction kept: each sample's at the step it stopped
    if M == 1:
        return RefineOutput(logits=final, step_logits=step_logits, halted_at=halted_at, carry=carry, step_halt_logits=step_halt_logits)
    chosen = choose(final.argmax(-1), final_halt, M, select)
    return RefineOutput(
        logits=pick(final, chosen, M),
        step_logits=[pick(logits, chosen, M) for logits in step_logits],
        halted_at=pick(halted_at, chosen, M),
        carry=None if carry is None else Carry(pick(carry.answer, chosen, M), pick(carry.latent, chosen, M)),
        trajectory=chosen,
        step_halt_logits=[pick(logits, chosen, M) for logits in step_halt_logits],
    )


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
