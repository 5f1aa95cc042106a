"""Mazes against size: does the recursion pay once a maze is too big for one pass?

On 7x7 mazes (`accuracy_maze`) the reasoner loses: a one-pass head on the same blocks reaches a
higher exact match once it gets as many optimizer steps. A shortest path grows with the side of the
maze, so this runs the same three comparators as `scaling` (one_pass, deep_stack, reasoner) on 7x7,
9x9 and 11x11 mazes under the data budget, and the largest size also under the time budget (every
comparator gets the reasoner's own training seconds). Same code as `scaling`; only the presets differ.
"""

from __future__ import annotations

import dataclasses

from . import accuracy
from .scaling import ScalingSettings, run

_BASE = dataclasses.replace(accuracy.MAZE_PRESETS["full"], comparators=("one_pass", "deep_stack", "reasoner"), time_budget_seconds=None)

PRESETS: dict[str, ScalingSettings] = {
    # 8 epochs of 1000 mazes per size. About an hour and a half on one core with one other job beside it.
    "full": ScalingSettings(base=_BASE, size_option="size", sizes=(7, 9, 11), time_budget_at=(11,)),
    "quick": ScalingSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["quick"], comparators=("one_pass", "reasoner")),
                             size_option="size", sizes=(5, 7), time_budget_at=(7,)),
    "tiny": ScalingSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["tiny"], comparators=("one_pass", "reasoner")),
                            size_option="size", sizes=(5, 7)),
}

__all__ = ["PRESETS", "run"]
