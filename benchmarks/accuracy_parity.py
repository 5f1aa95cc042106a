"""Accuracy on running parity: the `accuracy` benchmark's six comparators on a second task whose serial depth grows with its length.

Same code as `benchmarks.accuracy` (see its docstring for the comparators and the two budgets); only the
presets differ: 8-bit strings, the attention mixer.
"""

from .accuracy import PARITY_PRESETS as PRESETS
from .accuracy import render, run

__all__ = ["PRESETS", "render", "run"]
