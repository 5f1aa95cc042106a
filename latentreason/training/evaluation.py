"""Evaluation after each refinement step: accuracy, exact match, and what halting gives.

For every batch the reasoner runs `steps` supervision steps from a fresh carry (no gradients). After
each step we score the prediction; with halting, a sample keeps the prediction of the first step
whose halt probability is above `config.halt_threshold` (or of the last step). The halting curve
gives the same for other thresholds (`HALTING_CURVE`), so a threshold can be chosen on held-out
data. Scores are per sample, gathered across processes with `gather_for_metrics` (which drops the
duplicates that pad the last batch), then summed.

    accuracy      right cells (tokens, or sequences) / scored cells
    exact_match   samples whose every scored cell is right / samples
    last_cell     samples whose last scored cell is right / samples (the final state of a
                  state-tracking task, the answer of a sequence whose last cell holds it)
    per_position  accuracy of the k-th scored cell of each sample (the k-th answer cell of an aligned
                  output, the k-th answer token of a text output; one position for a label output),
                  with the headline predictions; weighted by its `cells`, it averages to `accuracy`

`keep_wrong=N` also returns the predicted ids of the first N samples (in data order) whose headline
answer is not an exact match, for the caller to decode (`latentreason.inference.evaluate_run` does).
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import probability_to_logit
from ..losses import IGNORE_INDEX
from ..trajectories import check as check_trajectories
from ..trajectories import choose, expand, perturb, pick

# Halt probabilities at which `evaluate` also scores halting: exact match against mean steps used.
HALTING_CURVE = (0.5, 0.7, 0.9, 0.95, 0.99, 0.999)


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


def answer_positions(right: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, right and scored counts by answer position: the k-th scored cell goes to column k. Shapes (B, W).

    `right` is (predictions == labels); the columns past a sample's last scored cell count 0 of 0.
    """
    batch = labels.shape[0]
    scored = (labels != IGNORE_INDEX).reshape(batch, -1)
    right = right.reshape(batch, -1) & scored
    position = (scored.long().cumsum(1) - 1).clamp(min=0)  # unscored cells add 0 wherever they land
    counts = torch.zeros_like(position)
    return counts.scatter_add(1, position, right.long()), counts.scatter_add(1, position, scored.long())


def first_halting_step(halt_logits: torch.Tensor, probability: float) -> torch.Tensor:
    """(B, steps) halt logits -> (B,) the 0-based first step whose halt probability is above `probability`, or the last."""
    above = halt_logits > probability_to_logit(probability)
    above[:, -1] = True
    return above.float().argmax(1)


def last_cell_right(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, whether its last scored cell is right (True where nothing is scored). Shape (B,)."""
    batch = labels.shape[0]
    scored = (labels != IGNORE_INDEX).reshape(batch, -1)
    right = (logits.argmax(-1) == labels).reshape(batch, -1)
    last = scored.shape[1] - 1 - scored.flip(1).float().argmax(1, keepdim=True)  # the last scored position
    return right.gather(1, last).squeeze(1) | ~scored.any(1)


@torch.no_grad()
def evaluate(
    model: Any,
    dataloader: DataLoader,
    accelerator: Accelerator,
    steps: int,
    *,
    halt: bool = True,
    progress: bool = False,
    trajectories: int = 1,
    noise: float = 0.0,
    select: str = "halt",
    seed: int = 0,
    keep_wrong: int = 0,
) -> dict[str, Any]:
    """Accuracy and exact match after each refinement step 1..`steps`, and with halting.

    Args:
        model: the unwrapped `LatentReasonerModel` (put the EMA weights in it first).
        dataloader: a prepared dataloader of encoded examples (with "features" when cached).
        accelerator: the run's `Accelerator` (for gathering across processes).
        steps: refinement steps to run.
        halt: report the numbers with halting at the top level (else those after the last step).
        trajectories, noise, select, seed: test-time breadth (`latentreason.trajectories`): each example runs
            `trajectories` times, all but the first with N(0, noise^2) added to the carry after every step, and
            after each step the trajectory that `select` picks ("halt": the most confident halting head,
            "vote": the most frequent answer) is the one scored. 1 (the default) is the plain run.
        keep_wrong: also return the first `keep_wrong` samples (in data order) whose headline answer is wrong.

    Returns:
        `{"accuracy", "exact_match", "mean_steps", "per_step": [{"step", "accuracy", "exact_match"}, ...],
        "per_position": [{"position", "accuracy", "cells"}, ...],
        "halting": {...}, "halting_curve": [{"threshold", "accuracy", "exact_match", "mean_steps"}, ...],
        "all_steps": {...}, "num_examples", "steps", "halt"}`; the top-level accuracy and
        exact match are those with halting when `halt` and the reasoner has a halting head, else after the last step.
        `per_position` and, with `keep_wrong`, `"wrong": [{"index", "prediction_ids"}, ...]` (the sample's index in
        the dataloader's order and its predicted class or token ids) come from those same headline predictions.
    """
    check_trajectories(trajectories, noise, select)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    threshold = float(getattr(model.config, "halt_threshold", 0.5))
    uses_halting = halt and bool(getattr(model.config, "halting", False))
    totals: dict[str, list[torch.Tensor]] = {"right": [], "scored": [], "exact": [], "halt_logits": [], "last": []}
    position_right: list[torch.Tensor] = []
    position_scored: list[torch.Tensor] = []
    wrong: list[dict[str, Any]] = []
    seen = 0
    for batch in tqdm(dataloader, desc="Evaluating", disable=not (progress and accelerator.is_local_main_process), leave=False):
        features, mask, labels = features_of(model, batch), batch["attention_mask"], batch["labels"]
        wide = {name: expand(value, trajectories) for name, value in
                (("features", features), ("attention_mask", mask), ("input_ids", batch["input_ids"]), ("labels", labels))}
        carry, right, exact, halt_logits, last, predicted = None, [], [], [], [], []
        for _ in range(steps):
            out = model(features=wide["features"], attention_mask=wide["attention_mask"], carry=carry,
                        **inputs_for_head(model, wide["input_ids"], wide["labels"]))
            carry = perturb(out.carry, trajectories, noise, generator)
            logits, step_halt = out.logits, out.halt_logits.float()
            if trajectories > 1:  # keep one trajectory per example: the one `select` picks at this step
                chosen = choose(logits.argmax(-1), step_halt, trajectories, select)
                logits, step_halt = pick(logits, chosen, trajectories), pick(step_halt, chosen, trajectories)
            step_right, scored, step_exact = score(logits, labels)
            right.append(step_right)
            exact.append(step_exact)
            halt_logits.append(step_halt)
            last.append(last_cell_right(logits, labels))
            predicted.append(logits.argmax(-1))
        # The headline prediction of each sample: at its halting step, or after the last step.
        rows = torch.arange(labels.shape[0], device=labels.device)
        exact_per_step, halt_per_step = torch.stack(exact, 1), torch.stack(halt_logits, 1)  # (B, steps)
        headline_step = first_halting_step(halt_per_step, threshold) if uses_halting else torch.full_like(rows, steps - 1)
        headline = torch.stack(predicted, 1)[rows, headline_step]  # (B, L), (B, A) or (B,)
        cells_right, cells_scored = (accelerator.pad_across_processes(counts, dim=1)  # one width on every process
                                     for counts in answer_positions(headline == labels, labels))
        *gathered, cells_right, cells_scored = accelerator.gather_for_metrics(
            (torch.stack(right, 1), scored, exact_per_step, halt_per_step, torch.stack(last, 1),
             cells_right, cells_scored))
        for key, value in zip(totals, gathered):
            totals[key].append(value.cpu())
        position_right.append(cells_right.cpu())
        position_scored.append(cells_scored.cpu())
        if len(wrong) < keep_wrong:  # decided on gathered values only, so every process gathers here alike
            headline_exact = exact_per_step[rows, headline_step]
            if headline.dim() > 1:
                headline = accelerator.pad_across_processes(headline, dim=1, pad_index=IGNORE_INDEX)
            headline, headline_exact = (value.cpu() for value in accelerator.gather_for_metrics((headline, headline_exact)))
            wrong += [{"index": seen + int(row), "prediction_ids": headline[row].tolist()}
                      for row in torch.nonzero(~headline_exact).flatten()][: keep_wrong - len(wrong)]
        seen += gathered[1].shape[0]
    model.train(was_training)

    right, scored, exact, halt_logits, last = (torch.cat(totals[key]) for key in totals)
    cells, samples = max(int(scored.sum()), 1), max(exact.shape[0], 1)
    per_step = [
        {"step": step + 1, "accuracy": float(right[:, step].sum()) / cells, "exact_match": float(exact[:, step].float().sum()) / samples,
         "last_cell": float(last[:, step].float().sum()) / samples}
        for step in range(steps)
    ]

    def halting_at(probability: float) -> dict[str, float]:
        """Each sample keeps the prediction of the first step whose halt probability is above `probability`, or the last."""
        step = first_halting_step(halt_logits, probability).unsqueeze(1)
        return {
            "threshold": probability,
            "accuracy": float(right.gather(1, step).sum()) / cells,
            "exact_match": float(exact.gather(1, step).float().sum()) / samples,
            "last_cell": float(last.gather(1, step).float().sum()) / samples,
            "mean_steps": float(step.float().mean() + 1) if step.numel() else 0.0,
        }

    halting = halting_at(threshold)
    headline = halting if uses_halting else {**per_step[-1], "mean_steps": float(steps)}
    return {
        "accuracy": headline["accuracy"],
        "exact_match": headline["exact_match"],
        "last_cell": headline["last_cell"],
        "mean_steps": headline["mean_steps"],
        "per_step": per_step,
        "per_position": position_accuracies(position_right, position_scored),
        "halting": halting,
        "halting_curve": [halting_at(p) for p in sorted({*HALTING_CURVE, threshold})],
        "all_steps": {"accuracy": per_step[-1]["accuracy"], "exact_match": per_step[-1]["exact_match"],
                      "last_cell": per_step[-1]["last_cell"], "steps": steps},
        "num_examples": int(exact.shape[0]),
        "steps": steps,
        "trajectories": {"count": trajectories, "noise": noise, "select": select, "seed": seed},
        "halt": uses_halting,
        **({"wrong": wrong} if keep_wrong else {}),
    }


def position_accuracies(right: list[torch.Tensor], scored: list[torch.Tensor]) -> list[dict[str, float]]:
    """Per-sample counts by answer position (`answer_positions`, one (B, W) tensor per batch) -> one row per position.

    `position` is 1-based; `cells` is how many samples have a scored cell there (fewer at the far
    positions when answers differ in length).
    """
    if not scored:
        return []
    width = max(counts.shape[1] for counts in scored)
    right_total, scored_total = (sum(torch.nn.functional.pad(counts, (0, width - counts.shape[1])).sum(0) for counts in batches)
                                 for batches in (right, scored))
    return [{"position": position + 1, "accuracy": int(hits) / int(cells), "cells": int(cells)}
            for position, (hits, cells) in enumerate(zip(right_total.tolist(), scored_total.tolist())) if cells]


def suggest_halt_threshold(results: dict[str, Any], max_drop: float = 0.01) -> dict[str, float] | None:
    """The halting-curve row that uses the fewest steps while keeping exact match within `max_drop` of all steps.

    Use it on held-out data (not the test set), then set `reasoner.halt_threshold` to its threshold.
    None when the results have no halting curve.
    """
    curve = results.get("halting_curve") or []
    target = results["all_steps"]["exact_match"] - max_drop
    good = [row for row in curve if row["exact_match"] >= target]
    if not good:
        return None
    return min(good, key=lambda row: (row["mean_steps"], -row["exact_match"]))


def closest_halt_threshold(results: dict[str, Any]) -> dict[str, float] | None:
    """The halting-curve row with the highest exact match (then the fewest steps): what calibration falls back to
    when no threshold keeps exact match within its tolerance. None when the results have no halting curve."""
    curve = results.get("halting_curve") or []
    return max(curve, key=lambda row: (row["exact_match"], -row["mean_steps"])) if curve else None
