"""Ablation: why the reasoner starts slower than a one-pass head, and what each of its parts costs early on.

At a small number of optimizer steps the recursive reasoner of the `accuracy` benchmark is far behind
the one-pass head with the same blocks (it overtakes it later). This benchmark trains the reasoner
with one part changed at a time, each for the same number of optimizer steps on the same cached
features, so the culprit shows as the variant that closes the gap:

    reasoner        as in the accuracy benchmark (T=2 cycles of n=2 latent steps, N_sup=8, EMA, halting)
    n_sup_1         one supervision step per batch in training (tested with N_sup steps): as many
                    batches as the one-pass head sees, instead of N_sup x fewer
    depth_1         T=1, n=1: the shallowest recursion (2 net calls per step instead of 6)
    depth_1_n_sup_1 both: per step, the nearest a reasoner gets to the one-pass head
    no_ema          the raw weights evaluated instead of the EMA
    no_halting      no early stopping of samples in training
    lr_low, lr_high the learning rate / 3 and x 3
    one_pass        the one-pass head (same blocks, applied once), for reference

Every variant is built by `benchmarks.accuracy.build` and trained by `latentreason.training.train`
through `accuracy.train_and_evaluate`, so it differs from the accuracy benchmark's reasoner only in
the named knob.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import accuracy
from .harness import log, machine_info, training_run

# name -> (comparator, changes to AccuracySettings, changes to TrainingConfig, what it tests)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "reasoner": ("reasoner", {}, {}, "as in the accuracy benchmark"),
    "n_sup_1": ("reasoner", {}, {"supervision_steps": 1}, "1 supervision step per batch in training (N_sup at test)"),
    "depth_1": ("reasoner", {"cycles": 1, "latent_steps": 1}, {}, "T=1, n=1: 2 net calls per step instead of T(n+1)"),
    "depth_1_n_sup_1": ("reasoner", {"cycles": 1, "latent_steps": 1, "supervision_steps": 1}, {}, "T=1, n=1 and N_sup=1"),
    "no_ema": ("reasoner", {}, {"ema": False}, "raw weights instead of the EMA"),
    "no_halting": ("reasoner", {}, {"halting": False}, "no early stopping of samples in training"),
    "lr_low": ("reasoner", {"learning_rate": 3e-4}, {}, "learning rate 3e-4 (the benchmarks' 1e-3 / 3)"),
    "lr_high": ("reasoner", {"learning_rate": 3e-3}, {}, "learning rate 3e-3 (the benchmarks' 1e-3 x 3)"),
    "one_pass": ("one_pass", {}, {}, "the reasoner's blocks applied once (reference)"),
}


@dataclass(frozen=True)
class AblationSettings:
    """The accuracy benchmark's settings, the variants to train and the optimizer steps each gets."""

    base: accuracy.AccuracySettings = field(default_factory=lambda: accuracy.PRESETS["quick"])
    variants: tuple[str, ...] = tuple(VARIANTS)
    steps: tuple[int, ...] = (256,)  # optimizer steps per variant; several values give a learning curve
    threads: int | None = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown ablation variant(s) {unknown}; choose from {sorted(VARIANTS)}.")
        if not self.steps or any(s < 1 for s in self.steps):
            raise ValueError(f"`steps` must be positive optimizer step counts, got {self.steps!r}.")


PRESETS: dict[str, AblationSettings] = {
    # 4x4 Sudoku (6 givens, 1024 puzzles) as in the accuracy benchmark's full preset; at 256 steps the
    # reasoner is still at chance there. About 8 minutes on one idle core.
    "full": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["full"], time_budget_seconds=None), steps=(256,)),
    "quick": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["quick"], time_budget_seconds=None), steps=(64,)),
    "tiny": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["tiny"], time_budget_seconds=None), steps=(2,),
                             variants=("reasoner", "n_sup_1", "no_ema", "one_pass")),
}


# 7x7 mazes, where the reasoner loses to the deep stack and to the one-pass head given the same time: the
# accuracy_maze reasoner's 960 optimizer steps for every variant. About 30 minutes on one idle core.
MAZE_PRESETS: dict[str, AblationSettings] = {
    "full": AblationSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["full"], time_budget_seconds=None), steps=(960,),
                             variants=("reasoner", "n_sup_1", "depth_1", "no_ema", "no_halting", "lr_low", "lr_high", "one_pass")),
    "quick": AblationSettings(base=accuracy.MAZE_PRESETS["quick"], steps=(64,), variants=("reasoner", "no_halting", "lr_high", "one_pass")),
    "tiny": AblationSettings(base=accuracy.MAZE_PRESETS["tiny"], steps=(2,), variants=("reasoner", "lr_high", "one_pass")),
}


def run(settings: AblationSettings) -> dict[str, Any]:
    """Train every variant for each step count; return the JSON result."""
    with training_run(settings.threads):
        return _run(settings)


def _run(settings: AblationSettings) -> dict[str, Any]:
    recipe, data, pad_token_id = accuracy.load_data(settings.base)
    cached: tuple[Any, Any] | None = None
    rows = []
    for name in settings.variants:
        comparator, setting_changes, training_changes, what = VARIANTS[name]
        variant_settings = dataclasses.replace(settings.base, **setting_changes)
        for steps in settings.steps:
            model = accuracy.build(comparator, variant_settings, data)
            if cached is None:  # the same frozen features for every variant
                cached = accuracy.feature_sets(model, data, recipe)
            start = time.perf_counter()
            result = accuracy.train_and_evaluate(model, variant_settings, *cached, pad_token_id, max_steps=steps,
                                                 training_changes=training_changes)
            log(f"ablation: {name} at {steps} steps: accuracy {result['accuracy']:.3f}, exact {result['exact_match']:.3f} "
                f"({time.perf_counter() - start:.0f} s)")
            rows.append({"name": name, "what": what, "steps": steps, "comparator": comparator,
                         "settings_changes": setting_changes, "training_changes": training_changes,
                         "examples_seen": result["optimizer_steps"] * variant_settings.batch_size
                         // (training_changes.get("supervision_steps") or (1 if comparator == "one_pass" else variant_settings.supervision_steps)),
                         **{k: result[k] for k in ("optimizer_steps", "train_seconds", "load_average", "accuracy", "exact_match",
                                                   "mean_steps", "per_step", "all_steps")}})
    return {
        "benchmark": "ablation",
        "machine": machine_info(),
        "settings": asdict(settings) | {"variants": list(settings.variants), "steps": list(settings.steps)},
        "data": {"task": settings.base.task, "task_options": dict(settings.base.task_options), "num_train": len(data.train),
                 "num_test": len(data.eval), "labels": list(data.label_names)},
        "variants": rows,
    }
