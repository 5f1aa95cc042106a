"""Halting in training: TRM's exploration minimum, and the halting threshold calibrated on held-out rows.

Exploration: with probability `training.halt_exploration` a sample must run a random number of
supervision steps in [2, N_sup] before it may halt, drawn per sample from the seed and the batch's
index, so a resumed or multi-process run draws the same.

Calibration (`training.calibrate_halting: fraction`): a seeded random slice of the training rows is
held out of training; after it, `calibrate` runs every refinement step on that slice and picks the
lowest `halt_threshold` whose exact match stays within 1 point of running all steps (else the closest),
which the adapter saves, so `eval` and `predict` halt well without a user reading a curve.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch.utils.data import Subset

from .evaluation import closest_halt_threshold, evaluate, suggest_halt_threshold

logger = logging.getLogger(__name__)


def exploration(batch_index: int, seed: int, batch_size: int, supervision_steps: int, probability: float) -> torch.Tensor:
    """Minimum steps before each sample of the global batch may halt: 1, or with `probability` a draw from [2, N_sup]."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + batch_index)
    explore = torch.rand(batch_size, generator=generator) < probability
    drawn = torch.randint(2, max(supervision_steps, 2) + 1, (batch_size,), generator=generator)
    return torch.where(explore, drawn, torch.ones_like(drawn))


def held_out_count(rows: int, fraction: float) -> int:
    """How many of `rows` training examples `training.calibrate_halting=fraction` holds out: at least one, 0 when off."""
    return max(1, round(fraction * rows)) if fraction else 0


def hold_out(dataset: Any, fraction: float, seed: int) -> tuple[Any, Any | None]:
    """(training part, held-out part) of a map-style data set: a seeded random `fraction` held out; (all, None) at 0."""
    if not fraction:
        return dataset, None
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed * 1_000_003 + 17)).tolist()
    count = held_out_count(len(dataset), fraction)
    if count >= len(dataset):
        raise ValueError(f"`training.calibrate_halting`={fraction} holds out all {len(dataset)} training examples: use a smaller fraction.")
    return Subset(dataset, sorted(order[count:])), Subset(dataset, sorted(order[:count]))


def calibrate(model: Any, loader: Any, accelerator: Any, eval_steps: int) -> dict[str, Any]:
    """Pick `halt_threshold` on `loader` (the held-out rows) and set it on `model.config`; what was chosen, as a record."""
    results = evaluate(model, loader, accelerator, eval_steps, halt=False)
    row = suggest_halt_threshold(results, max_drop=0.01)
    within = row is not None
    if not within:  # the threshold closest to running all steps, rather than the untouched default
        row = closest_halt_threshold(results)
    calibration = {"examples": results["num_examples"], "all_steps": results["all_steps"], "chosen": row,
                   "within_tolerance": within, "previous_threshold": model.config.halt_threshold}
    if row is None:
        return calibration
    if not within:
        logger.warning("Halting calibration: no threshold keeps exact match within 1 point of all steps on the held-out slice "
                       "(%.3f); using the closest, halt_threshold %s (%.3f). `eval.halt=false` runs every step.",
                       results["all_steps"]["exact_match"], row["threshold"], row["exact_match"])
    model.config = model.config.replace(halt_threshold=row["threshold"])
    accelerator.print(
        f"Halting calibrated on {results['num_examples']} held-out training examples: halt_threshold {row['threshold']} "
        f"(exact match {row['exact_match']:.3f} at {row['mean_steps']:.2f} steps; all {eval_steps} steps: "
        f"{results['all_steps']['exact_match']:.3f})."
    )
    return calibration
