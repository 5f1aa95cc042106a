"""Evaluation after each refinement step: accuracy, exact match, and what halting gives.

For every batch the reasoner runs `steps` supervision steps from a fresh carry (no gradients). After
each step we score the prediction; with halting, a sample keeps the prediction of the first step
whose halt logit is > 0 (or of the last step). Scores are per sample, gathered across processes with
`gather_for_metrics` (which drops the duplicates that pad the last batch), then summed.

    accuracy      right cells (tokens, or sequences) / scored cells
    exact_match   samples whose every scored cell is right / samples
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..outputs import IGNORE_INDEX


def features_of(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The batch's cached backbone features, or the backbone's output when the batch carries none."""
    if "features" in batch:
        return batch["features"]
    return model.encode(batch["input_ids"], batch["attention_mask"])


def inputs_for_head(model: Any, input_ids: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the output head reads besides the features: `latent_prefix` feeds the prompt and the
    teacher-forced answer to the frozen LM, so it gets `input_ids` and `labels`; other heads need nothing."""
    if getattr(model.config, "output", None) == "latent_prefix":
        return {"input_ids": input_ids, "labels": labels}
    return {}


def score(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sample: right cells, scored cells, and whether all scored cells are right. Shapes (B,)."""
    batch = labels.shape[0]
    scored = (labels != IGNORE_INDEX).reshape(batch, -1)
    right = (logits.argmax(-1) == labels).reshape(batch, -1)
    return (right & scored).sum(1), scored.sum(1), (right | ~scored).all(1)


@torch.no_grad()
def evaluate(
    model: Any,
    dataloader: DataLoader,
    accelerator: Accelerator,
    steps: int,
    *,
    halt: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Accuracy and exact match after each refinement step 1..`steps`, and with halting.

    Args:
        model: the unwrapped `LatentReasonerModel` (put the EMA weights in it first).
        dataloader: a prepared dataloader of encoded examples (with "features" when cached).
        accelerator: the run's `Accelerator` (for gathering across processes).
        steps: refinement steps to run.
        halt: report the numbers with halting at the top level (else those after the last step).

    Returns:
        `{"accuracy", "exact_match", "mean_steps", "per_step": [{"step", "accuracy", "exact_match"}, ...],
        "halting": {...}, "all_steps": {...}, "num_examples", "steps", "halt"}`; the top-level accuracy and
        exact match are those with halting when `halt` and the reasoner has a halting head, else after the last step.
    """
    was_training = model.training
    model.eval()
    totals: dict[str, list[torch.Tensor]] = {"right": [], "scored": [], "exact": [], "halt_right": [], "halt_exact": [], "halted_at": []}
    for batch in tqdm(dataloader, desc="Evaluating", disable=not (progress and accelerator.is_local_main_process), leave=False):
        features, mask, labels = features_of(model, batch), batch["attention_mask"], batch["labels"]
        carry, right, exact = None, [], []
        halted_at = torch.full((labels.shape[0],), steps, dtype=torch.long, device=labels.device)
        halt_right = halt_exact = None
        for step in range(1, steps + 1):
            out = model(features=features, attention_mask=mask, carry=carry, **inputs_for_head(model, batch["input_ids"], labels))
            carry = out.carry
            step_right, scored, step_exact = score(out.logits, labels)
            right.append(step_right)
            exact.append(step_exact)
            if halt_right is None:
                halt_right, halt_exact = step_right.clone(), step_exact.clone()
            still_going = halted_at == steps  # samples that have not halted before this step
            halt_right = torch.where(still_going, step_right, halt_right)
            halt_exact = torch.where(still_going, step_exact, halt_exact)
            halts_now = still_going & (out.halt_logits > 0) & (step < steps)
            halted_at = torch.where(halts_now, torch.full_like(halted_at, step), halted_at)
        gathered = accelerator.gather_for_metrics(
            (torch.stack(right, 1), scored, torch.stack(exact, 1), halt_right, halt_exact, halted_at)
        )
        for key, value in zip(totals, gathered):
            totals[key].append(value.cpu())
    model.train(was_training)

    right, scored, exact, halt_right, halt_exact, halted_at = (torch.cat(totals[key]) for key in totals)
    cells, samples = max(int(scored.sum()), 1), max(exact.shape[0], 1)
    per_step = [
        {"step": step + 1, "accuracy": float(right[:, step].sum()) / cells, "exact_match": float(exact[:, step].float().sum()) / samples}
        for step in range(steps)
    ]
    halting = {
        "accuracy": float(halt_right.sum()) / cells,
        "exact_match": float(halt_exact.float().sum()) / samples,
        "mean_steps": float(halted_at.float().mean()) if halted_at.numel() else 0.0,
    }
    uses_halting = halt and bool(getattr(model.config, "halting", False))
    headline = halting if uses_halting else {**per_step[-1], "mean_steps": float(steps)}
    return {
        "accuracy": headline["accuracy"],
        "exact_match": headline["exact_match"],
        "mean_steps": headline["mean_steps"],
        "per_step": per_step,
        "halting": halting,
        "all_steps": {"accuracy": per_step[-1]["accuracy"], "exact_match": per_step[-1]["exact_match"], "steps": steps},
        "num_examples": int(exact.shape[0]),
        "steps": steps,
        "halt": uses_halting,
    }
