"""Accuracy against task size on Sudoku (4x4 and 6x6): the `scaling` benchmark's code with Sudoku presets."""

from .scaling import SUDOKU_PRESETS as PRESETS
from .scaling import run

__all__ = ["PRESETS", "run"]
