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

    Returns:
        `{"accuracy", "exact_match", "mean_steps", "per_step": [{"step", "accuracy", "exact_match"}, ...],
        "halting": {...}, "halting_curve": [{"threshold", "accuracy", "exact_match", "mean_steps"}, ...],
        "all_steps": {...}, "num_examples", "steps", "halt"}`; the top-level accuracy and
        exact match are those with halting when `halt` and the reasoner has a halting head, else after the last step.
    """
    check_trajectories(trajectories, noise, select)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    totals: dict[str, list[torch.Tensor]] = {"right": [], "scored": [], "exact": [], "halt_logits": [], "last": []}
    for batch in tqdm(dataloader, desc="Evaluating", disable=not (progress and accelerator.is_local_main_process), leave=False):
        features, mask, labels = features_of(model, batch), batch["attention_mask"], batch["labels"]
        wide = {name: expand(value, trajectories) for name, value in
                (("features", features), ("attention_mask", mask), ("input_ids", batch["input_ids"]), ("labels", labels))}
        carry, right, exact, halt_logits, last = None, [], [], [], []
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
        gathered = accelerator.gather_for_metrics(
            (torch.stack(right, 1), scored, torch.stack(exact, 1), torch.stack(halt_logits, 1), torch.stack(last, 1)))
        for key, value in zip(totals, gathered):
            totals[key].append(value.cpu())
    model.train(was_training)

    right, scored, exact, halt_logits, last = (torch.cat(totals[key]) for key in totals)
    cells, samples = max(int(scored.sum()), 1), max(exact.shape[0], 1)
    per_step = [
        {"step": step + 1, "accuracy": float(right[:, step].sum()) / cells, "exact_match": float(exact[:, step].float().sum()) / samples,
         "last_cell": float(last[:, step].float().sum()) / samples}
        for step in range(steps)
    ]
    threshold = float(getattr(model.config, "halt_threshold", 0.5))

    def halting_at(probability: float) -> dict[str, float]:
        """Each sample keeps the prediction of the first step whose halt probability is above `probability`, or the last."""
        above = halt_logits > probability_to_logit(probability)
        above[:, -1] = True
        step = above.float().argmax(1, keepdim=True)  # the first step above the threshold
        return {
            "threshold": probability,
            "accuracy": float(right.gather(1, step).sum()) / cells,
            "exact_match": float(exact.gather(1, step).float().sum()) / samples,
            "last_cell": float(last.gather(1, step).float().sum()) / samples,
            "mean_steps": float(step.float().mean() + 1) if step.numel() else 0.0,
        }

    halting = halting_at(threshold)
    uses_halting = halt and bool(getattr(model.config, "halting", False))
    headline = halting if uses_halting else {**per_step[-1], "mean_steps": float(steps)}
    return {
        "accuracy": headline["accuracy"],
        "exact_match": headline["exact_match"],
        "last_cell": headline["last_cell"],
        "mean_steps": headline["mean_steps"],
        "per_step": per_step,
        "halting": halting,
        "halting_curve": [halting_at(p) for p in sorted({*HALTING_CURVE, threshold})],
        "all_steps": {"accuracy": per_step[-1]["accuracy"], "exact_match": per_step[-1]["exact_match"],
                      "last_cell": per_step[-1]["last_cell"], "steps": steps},
        "num_examples": int(exact.shape[0]),
        "steps": steps,
        "trajectories": {"count": trajectories, "noise": noise, "select": select, "seed": seed},
        "halt": uses_halting,
    }


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
