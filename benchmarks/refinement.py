"""Refinement at test time: a reasoner trained with N_sup=16 steps, tested with 1..16, and with halting.

The published finding (ARC Prize's analysis of HRM/TRM) is that a model trained with 16 refinement
steps keeps most of its accuracy when run with one step at test time (about 7/8). This benchmark
checks it on 4x4 Sudoku: the `accuracy` benchmark's reasoner, trained with N_sup=16 on the same data
and budget, evaluated after each refinement step 1..16, and with halting at every threshold of the
halting curve (exact match against mean steps used), so the cost of halting early shows.

Same code as `benchmarks.accuracy` (one comparator, `reasoner`); only the presets differ.
"""

from __future__ import annotations

import dataclasses

from .accuracy import PRESETS as ACCURACY_PRESETS
from .accuracy import AccuracySettings, run

PRESETS: dict[str, AccuracySettings] = {
    # 12 epochs of 1024 puzzles with N_sup=16: up to 3072 optimizer steps. About 15 minutes on one idle core.
    "full": dataclasses.replace(ACCURACY_PRESETS["full"], supervision_steps=16, comparators=("reasoner",), time_budget_seconds=None),
    "quick": dataclasses.replace(ACCURACY_PRESETS["quick"], supervision_steps=16, comparators=("reasoner",), time_budget_seconds=None),
    "tiny": dataclasses.replace(ACCURACY_PRESETS["tiny"], supervision_steps=4, comparators=("reasoner",), time_budget_seconds=None),
}

__all__ = ["PRESETS", "run"]
