"""Ablation on 7x7 mazes: the `ablation` benchmark's variants where the reasoner does not win.

Same code as `benchmarks.ablation` (see its docstring); only the presets differ: the accuracy_maze
task and reasoner, every variant for the reasoner's data-budget optimizer steps (960), plus the
learning rate / 3 and x 3.
"""

from .ablation import MAZE_PRESETS as PRESETS
from .ablation import render, run

__all__ = ["PRESETS", "render", "run"]
