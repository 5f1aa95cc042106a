"""Grid helpers shared by the grid tasks (Sudoku, mazes, ARC): text rendering and the dihedral group.

A grid is a list of rows, each a list of cell strings (`Grid = list[list[str]]`). The eight
dihedral transforms are indexed 0..7: rotations by 0, 90, 180, 270 degrees (counter-clockwise),
then the same four after a transpose. `inverse_dihedral(k)` undoes transform `k`.

Example:
    >>> grid = [["1", "2"], ["3", "4"]]
    >>> grid_to_text(grid)
    '1 2 3 4'
    >>> text_to_grid("1 2 3 4", width=2) == grid
    True
    >>> dihedral(dihedral(grid, 5), inverse_dihedral(5)) == grid
    True
"""

from __future__ import annotations

Grid = list[list[str]]

NUM_DIHEDRAL = 8


def cells(text: str) -> list[str]:
    """The cells of a text: its whitespace-separated items."""
    return text.split()


def grid_to_text(grid: Grid, row_separator: str | None = None) -> str:
    """Row-major cells separated by spaces; with `row_separator`, that cell is put between rows."""
    rows = [" ".join(row) for row in grid]
    joiner = f" {row_separator} " if row_separator else " "
    return joiner.join(rows)


def text_to_grid(text: str, *, width: int | None = None, row_separator: str | None = None) -> Grid:
    """Parse `grid_to_text` output back into rows: split by `width` cells or at `row_separator` cells.

    Raises `ValueError` when the cells do not form a rectangle (e.g. a malformed model prediction).
    """
    items = cells(text)
    if (width is None) == (row_separator is None):
        raise ValueError("text_to_grid needs exactly one of `width` (fixed-width rows) or `row_separator`.")
    if width is not None:
        if width < 1 or len(items) % width:
            raise ValueError(f"{len(items)} cells do not split into rows of width {width}.")
        grid = [items[i : i + width] for i in range(0, len(items), width)]
    else:
        grid, row = [], []
        for item in items + [row_separator]:
            if item == row_separator:
                grid.append(row)
                row = []
            else:
                row.append(item)
    if not grid or not grid[0] or any(len(row) != len(grid[0]) for row in grid):
        raise ValueError(f"Cells do not form a non-empty rectangular grid: {text[:80]!r}")
    return grid


def transpose(grid: Grid) -> Grid:
    """Rows become columns."""
    return [list(column) for column in zip(*grid)]


def rotate(grid: Grid) -> Grid:
    """Rotate by 90 degrees counter-clockwise."""
    return [list(column) for column in zip(*grid)][::-1]


def dihedral(grid: Grid, k: int) -> Grid:
    """Apply dihedral transform `k` (0..7): `k % 4` quarter turns, after a transpose when `k >= 4`."""
    if not 0 <= k < NUM_DIHEDRAL:
        raise ValueError(f"Dihedral transform index must be in 0..7, got {k}.")
    if k >= 4:
        grid = transpose(grid)
    for _ in range(k % 4):
        grid = rotate(grid)
    return [list(row) for row in grid]


def inverse_dihedral(k: int) -> int:
    """Index of the transform that undoes dihedral transform `k`."""
    # Rotations invert to the opposite rotation; transpose-then-rotate transforms are reflections (self-inverse).
    return (4 - k) % 4 if k < 4 else k


def dihedral_text(text: str, k: int, *, width: int | None = None, row_separator: str | None = None) -> str:
    """Apply dihedral transform `k` to a grid written as text, keeping the same text layout."""
    grid = dihedral(text_to_grid(text, width=width, row_separator=row_separator), k)
    return grid_to_text(grid, row_separator=row_separator)
