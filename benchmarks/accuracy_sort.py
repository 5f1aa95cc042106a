"""Accuracy on sorting number words: the control, a task where depth should not help.

Same code as `benchmarks.accuracy` (see its docstring); only the presets differ: lists of 6 number
words, the attention mixer, every comparator, both budgets. Ranking is one round of parallel
comparisons for attention, so a one-pass head is expected to match or beat the recursion here; a
reasoner that wins by a wide margin on this task would point at something other than depth.
"""

from .accuracy import SORT_PRESETS as PRESETS
from .accuracy import render, run

__all__ = ["PRESETS", "render", "run"]
