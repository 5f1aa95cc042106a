"""The largest parity size of `scaling` under both budgets: the same data, and the same training seconds.

Under the data budget the reasoner takes N_sup optimizer steps per batch, the one-step heads one;
here they also get the reasoner's own training seconds, so the gap cannot come from steps alone.
"""

from .scaling import TIME_PRESETS as PRESETS
from .scaling import render, run

__all__ = ["PRESETS", "render", "run"]
