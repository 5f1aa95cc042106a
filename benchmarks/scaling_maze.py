"""Mazes against size: does the recursion pay once a maze is too big for one pass?

On 7x7 mazes (`accuracy_maze`) the reasoner loses under the time budget: a one-pass head on the same
blocks reaches a higher exact match once it gets as many optimizer steps. A shortest path grows with
the side of the maze, so this runs the same three comparators as `scaling` (one_pass, deep_stack,
reasoner) on 7x7 and 9x9 mazes under the data budget, and on 9x9 also under the time budget (every
comparator gets the reasoner's own training seconds). Same code as `scaling`; only the presets differ.
(11x11 at this data budget left every comparator at exact match 0, so it is not in the preset.)
"""

from __future__ import annotations

import dataclasses

from . import accuracy
from .scaling import ScalingSettings, render, run

_BASE = dataclasses.replace(accuracy.MAZE_PRESETS["full"], comparators=("one_pass", "deep_stack", "reasoner"), time_budget_seconds=None)

PRESETS: dict[str, ScalingSettings] = {
    # 8 epochs of 1000 mazes per size. About 50 minutes on one core with one other job beside it.
    "full": ScalingSettings(base=_BASE, size_option="size", sizes=(7, 9), time_budget_at=(9,)),
    "quick": ScalingSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["quick"], comparators=("one_pass", "reasoner")),
                             size_option="size", sizes=(7, 9), time_budget_at=(9,)),
    "tiny": ScalingSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["tiny"], comparators=("one_pass", "reasoner")),
                            size_option="size", sizes=(5, 7)),
}

__all__ = ["PRESETS", "render", "run"]
