"""Accuracy on 7x7 mazes (shortest path): the `accuracy` benchmark's comparators on a third task.

Same code as `benchmarks.accuracy` (see its docstring); only the presets differ: 7x7 perfect mazes,
the mlp mixer, every comparator, both budgets.
"""

from .accuracy import MAZE_PRESETS as PRESETS
from .accuracy import render, run

__all__ = ["PRESETS", "render", "run"]
