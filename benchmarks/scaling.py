"""Accuracy against task size: where the recursion should pay, as the serial depth of the task grows.

Running parity of 8, 12 and 16 bits (output bit i = XOR of bits 0..i): the last bit depends on every
input bit, and the number of sequential XORs grows with the length. At each size three of the
`accuracy` benchmark's comparators train under the same data budget on the same frozen features
(Sudoku's size series is the `accuracy` (4x4) and `accuracy_sudoku6` (6x6) benchmarks, all six
comparators each):

    one_pass    the reasoner's blocks applied once (same parameters)
    deep_stack  the blocks stacked to the reasoner's effective depth, no weight sharing
    reasoner    the recursive reasoner

Every size is one `benchmarks.accuracy` run (same code, same training loop, same evaluation).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from . import accuracy
from .harness import log, machine_info, torch_threads


@dataclass(frozen=True)
class ScalingSettings:
    """The accuracy settings shared by every size, the task option that sets the size, and the sizes."""

    base: accuracy.AccuracySettings = field(default_factory=lambda: dataclasses.replace(
        accuracy.PARITY_PRESETS["full"], comparators=("one_pass", "deep_stack", "reasoner"), time_budget_seconds=None))
    size_option: str = "length"
    sizes: tuple[int, ...] = (8, 12, 16)
    per_size: dict[int, dict[str, Any]] = field(default_factory=dict)  # more task options for a size (e.g. Sudoku givens)
    # Sizes at which every comparator is also retrained for the reasoner's own training seconds (the time budget).
    time_budget_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("`sizes` must name at least one task size.")
        if self.base.time_budget_seconds is not None:
            raise ValueError("Set base.time_budget_seconds=None; name the sizes that also get the time budget in `time_budget_at`.")
        if not set(self.time_budget_at) <= set(self.sizes):
            raise ValueError(f"`time_budget_at` {self.time_budget_at} must be among `sizes` {self.sizes}.")


PRESETS: dict[str, ScalingSettings] = {
    # 6 epochs of 2000 strings per size (the accuracy_parity budget). About 45 minutes on one idle core.
    "full": ScalingSettings(),
    "quick": ScalingSettings(base=dataclasses.replace(accuracy.PARITY_PRESETS["quick"], comparators=("one_pass", "reasoner"),
                                                      time_budget_seconds=None), sizes=(8, 12)),
    "tiny": ScalingSettings(base=dataclasses.replace(accuracy.PARITY_PRESETS["tiny"], comparators=("one_pass", "reasoner"),
                                                     time_budget_seconds=None), sizes=(3, 4)),
}

# The largest parity size again, with the time budget too: every comparator also gets the reasoner's own
# training seconds, so the one-step heads get as many (or more) optimizer steps than the reasoner. About 25 minutes.
TIME_PRESETS: dict[str, ScalingSettings] = {
    "full": dataclasses.replace(PRESETS["full"], sizes=(16,), time_budget_at=(16,)),
    "quick": dataclasses.replace(PRESETS["quick"], sizes=(12,), time_budget_at=(12,)),
    "tiny": dataclasses.replace(PRESETS["tiny"], sizes=(4,), time_budget_at=(4,)),
}


def run(settings: ScalingSettings) -> dict[str, Any]:
    """One accuracy run per size; return the JSON result with a row per (size, comparator)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for size in settings.sizes:
        options = {**settings.base.task_options, settings.size_option: size, **settings.per_size.get(size, {})}
        sized = dataclasses.replace(settings.base, task_options=options,
                                    time_budget_seconds="reasoner" if size in settings.time_budget_at else None)
        log(f"scaling: {settings.base.task} {settings.size_option}={size}")
        with torch_threads(sized.threads):
            result = accuracy._run(sized)
        for comparator in result["comparators"]:
            for budget in ("data", "time"):
                if budget not in comparator:
                    continue
                trained = comparator[budget]
                rows.append({
                    "size": size, "task_options": options, "name": comparator["name"], "budget": budget,
                    "trainable_parameters": comparator["trainable_parameters"], "layers_per_step": comparator["layers_per_step"],
                    "supervision_steps": comparator["supervision_steps"],
                    "num_train": result["data"]["num_train"], "num_test": result["data"]["num_test"],
                    **{k: trained[k] for k in ("optimizer_steps", "train_seconds", "load_average", "accuracy", "exact_match",
                                               "mean_steps", "per_step", "all_steps")},
                })
    return {
        "benchmark": "scaling",
        "machine": machine_info(),
        "settings": asdict(settings) | {"sizes": list(settings.sizes), "per_size": {str(k): v for k, v in settings.per_size.items()}},
        "task": settings.base.task,
        "rows": rows,
    }
