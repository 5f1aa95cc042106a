"""Accuracy on 6x6 Sudoku: the `accuracy` benchmark's six comparators on the next Sudoku size.

Same code as `benchmarks.accuracy` (see its docstring); only the presets differ: 6x6 grids with 20
givens, the same puzzles-x-epochs budget as the 4x4 run, both budgets.
"""

from .accuracy import SUDOKU6_PRESETS as PRESETS
from .accuracy import render, run

__all__ = ["PRESETS", "render", "run"]
