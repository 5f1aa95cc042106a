"""Sudoku 4x4, 6x6 and 9x9 with a guaranteed unique solution; difficulty is the number of givens.

Layout: the input is the puzzle's cells row-major, `0` for a blank (`"1 0 0 4 ..."`); the output is
the solved grid, aligned cell for cell. Boxes are 2x2 (size 4), 2 rows x 3 columns (size 6) and 3x3
(size 9).

Generation: a random full grid (a randomised solver on the empty grid), then clues are removed in
random order, each removal kept only while the puzzle still has exactly one solution, until
`givens` clues remain; if a grid gets stuck above `givens`, a new grid is drawn. The solver is a
small bitmask backtracker that picks the cell with the fewest candidates and stops counting at 2.

Augmentations that keep a puzzle valid and its solution unique: permuting the digits, permuting
bands (rows of boxes) and stacks (columns of boxes), permuting rows within a band and columns within
a stack, and transposing where boxes are square (4x4, 9x9; a 6x6 transpose would turn 2x3 boxes into
3x2 ones, so it is skipped there). Sudoku's serial depth is the chain of constraint propagations a
solver needs, which is what the recursion is for.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from .common import Task, register_task

BOX_SHAPES = {4: (2, 2), 6: (2, 3), 9: (3, 3)}  # size -> (rows, columns) of one box
DEFAULT_GIVENS = {4: 8, 6: 16, 9: 30}
MIN_GIVENS = {4: 4, 6: 8, 9: 17}  # fewer never leaves a unique solution (17 is the known 9x9 minimum)
AUGMENTATIONS = ("digits", "transpose", "bands", "stacks", "rows", "columns")
MAX_GRIDS_PER_PUZZLE = 50


def find_solutions(puzzle: list[int], size: int, limit: int = 2, rng: random.Random | None = None) -> list[list[int]]:
    """Up to `limit` solutions of `puzzle` (row-major digits, 0 = blank); digits tried in random order with `rng`.

    Example: `len(find_solutions([0] * 16, 4, limit=1000)) == 288` (all 4x4 Sudoku grids).
    """
    if size not in BOX_SHAPES or len(puzzle) != size * size:
        raise ValueError(f"Expected a {size}x{size} puzzle with size in {sorted(BOX_SHAPES)}, got {len(puzzle)} cells.")
    box_rows, box_cols = BOX_SHAPES[size]
    all_digits = (1 << size) - 1  # bit d-1 stands for digit d
    row_used, col_used, box_used = [0] * size, [0] * size, [0] * size
    grid, blanks, found = list(puzzle), [], []
    for index, digit in enumerate(grid):
        row, col = divmod(index, size)
        box = (row // box_rows) * (size // box_cols) + col // box_cols
        if digit == 0:
            blanks.append((index, row, col, box))
            continue
        bit = 1 << (digit - 1)
        if not 1 <= digit <= size or (row_used[row] | col_used[col] | box_used[box]) & bit:
            return []  # a digit out of range or a clash among the givens: no solution
        row_used[row] |= bit
        col_used[col] |= bit
        box_used[box] |= bit

    def search() -> None:
        if not blanks:
            found.append(list(grid))
            return
        best, best_free, best_count = 0, 0, size + 1
        for position, (_, row, col, box) in enumerate(blanks):  # most constrained blank first
            free = all_digits & ~(row_used[row] | col_used[col] | box_used[box])
            if free.bit_count() < best_count:
                best, best_free, best_count = position, free, free.bit_count()
                if best_count <= 1:
                    break
        if best_count == 0:
            return
        cell = blanks[best]
        blanks[best] = blanks[-1]
        blanks.pop()
        index, row, col, box = cell
        digits = [d for d in range(1, size + 1) if best_free >> (d - 1) & 1]
        if rng is not None:
            rng.shuffle(digits)
        for digit in digits:
            bit = 1 << (digit - 1)
            grid[index] = digit
            row_used[row] ^= bit
            col_used[col] ^= bit
            box_used[box] ^= bit
            search()
            row_used[row] ^= bit
            col_used[col] ^= bit
            box_used[box] ^= bit
            grid[index] = 0
            if len(found) >= limit:
                break
        blanks.append(cell)
        blanks[best], blanks[-1] = blanks[-1], blanks[best]

    search()
    return found


def count_solutions(puzzle: list[int], size: int, limit: int = 2) -> int:
    """Number of solutions of `puzzle`, counted up to `limit`."""
    return len(find_solutions(puzzle, size, limit))


def is_solved_grid(grid: list[int], size: int) -> bool:
    """Whether `grid` is a complete valid Sudoku (each row, column and box holds every digit once)."""
    box_rows, box_cols = BOX_SHAPES[size]
    digits = set(range(1, size + 1))
    rows = [grid[r * size : (r + 1) * size] for r in range(size)]
    columns = [grid[c::size] for c in range(size)]
    boxes = [
        [grid[(top + r) * size + left + c] for r in range(box_rows) for c in range(box_cols)]
        for top in range(0, size, box_rows)
        for left in range(0, size, box_cols)
    ]
    return len(grid) == size * size and all(set(unit) == digits for unit in rows + columns + boxes)


def digits_of(text: str) -> list[int]:
    """Parse a Sudoku text (`"1 0 3 ..."`) into digits."""
    return [int(cell) for cell in text.split()]


@dataclass
class SudokuOptions:
    size: int = field(default=6, metadata={"help": "Side of the grid: 4 (2x2 boxes), 6 (2x3 boxes) or 9 (3x3 boxes)."})
    givens: int | None = field(default=None, metadata={"help": "Clues left in each puzzle (fewer = harder). Default: 8 for 4x4, 16 for 6x6, 30 for 9x9."})
    augmentations: tuple[str, ...] = field(default=AUGMENTATIONS, metadata={"help": f"Which validity-preserving transforms `augment` draws from: any of {AUGMENTATIONS}.", "augmentation": True})

    def __post_init__(self) -> None:
        if self.size not in BOX_SHAPES:
            raise ValueError(f"Sudoku `size` must be one of {sorted(BOX_SHAPES)}, got {self.size}.")
        if self.givens is None:
            self.givens = DEFAULT_GIVENS[self.size]
        if not MIN_GIVENS[self.size] <= self.givens < self.size * self.size:
            raise ValueError(
                f"Sudoku `givens` for size {self.size} must be in {MIN_GIVENS[self.size]}..{self.size**2 - 1} "
                f"(fewer clues never leave a unique solution), got {self.givens}."
            )
        self.augmentations = tuple(self.augmentations)
        unknown = sorted(set(self.augmentations) - set(AUGMENTATIONS))
        if unknown:
            raise ValueError(f"Unknown Sudoku augmentation(s) {unknown}; choose from {AUGMENTATIONS}.")


@register_task
class SudokuTask(Task):
    """Sudoku with a unique solution: input the puzzle (`0` = blank), output the solved grid, per cell."""

    name = "sudoku"
    output_kind = "aligned"
    Options = SudokuOptions

    def labels(self) -> list[str]:
        return [str(digit) for digit in range(1, self.options.size + 1)]

    def _generate(self, rng: random.Random) -> dict[str, str]:
        size, givens = self.options.size, self.options.givens
        for _ in range(MAX_GRIDS_PER_PUZZLE):
            solution = find_solutions([0] * size * size, size, limit=1, rng=rng)[0]
            puzzle = list(solution)
            order = list(range(size * size))
            rng.shuffle(order)
            clues = size * size
            for index in order:
                if clues == givens:
                    break
                puzzle[index] = 0
                if count_solutions(puzzle, size) == 1:
                    clues -= 1
                else:
                    puzzle[index] = solution[index]
            if clues == givens:
                return {"input": " ".join(map(str, puzzle)), "output": " ".join(map(str, solution))}
        raise RuntimeError(f"No {size}x{size} Sudoku with a unique solution and {givens} givens in {MAX_GRIDS_PER_PUZZLE} grids; use more `givens`.")

    def canonical_key(self, example: dict[str, str]) -> str:
        """A fingerprint shared by every variant of the puzzle that the augmentations can make.

        See `symmetry_key`: test puzzles are not trained on under any digit relabelling, band, stack,
        row or column permutation, or transpose.
        """
        return symmetry_key(digits_of(example["input"]), self.options.size)

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """Apply one random symmetry (from `options.augmentations`) to both puzzle and solution."""
        size, chosen = self.options.size, set(self.options.augmentations)
        box_rows, box_cols = BOX_SHAPES[size]
        row_order = _block_order(size, box_rows, rng, "bands" in chosen, "rows" in chosen)
        col_order = _block_order(size, box_cols, rng, "stacks" in chosen, "columns" in chosen)
        digit_map = list(range(size + 1))
        if "digits" in chosen:
            digit_map[1:] = rng.sample(range(1, size + 1), size)
        transpose = "transpose" in chosen and box_rows == box_cols and rng.random() < 0.5

        def transform(text: str) -> str:
            digits = digits_of(text)
            grid = [[digit_map[digits[row_order[r] * size + col_order[c]]] for c in range(size)] for r in range(size)]
            if transpose:
                grid = [list(column) for column in zip(*grid)]
            return " ".join(str(d) for row in grid for d in row)

        return {**example, "input": transform(example["input"]), "output": transform(example["output"])}


def _block_order(size: int, block: int, rng: random.Random, shuffle_blocks: bool, shuffle_within: bool) -> list[int]:
    """A row (or column) order that moves whole blocks and lines within a block, never across blocks."""
    blocks = list(range(size // block))
    if shuffle_blocks:
        rng.shuffle(blocks)
    order = []
    for b in blocks:
        lines = list(range(block))
        if shuffle_within:
            rng.shuffle(lines)
        order += [b * block + line for line in lines]
    return order


def symmetry_key(puzzle: list[int], size: int) -> str:
    """A fingerprint of a puzzle that every validity-preserving transform of it shares.

    The transforms (relabelling digits, permuting bands and stacks, rows within a band and columns
    within a stack, and transposing where boxes are square) move givens around, but they keep, for
    each given: how many givens share its row and its band, how many of those in its band carry its
    digit, and how often the digits of its row's givens occur in the whole puzzle (the same for its
    column and stack), how many share its box, and how often its digit occurs. The key is the sorted
    list of these descriptions, with a given's row and column descriptions in sorted order where a
    transpose can swap them. Equal puzzles up to symmetry always get equal keys, so a split checked
    with this key never holds a test puzzle in disguise; rarely, two puzzles that are not variants
    of each other share a key too (measured: 3-5% of the classes of 4x4 puzzles with 6-7 givens), which only
    makes the check a little stricter. It costs O(givens log givens), where trying every transform
    of a 9x9 puzzle would take 3.4 million.

    Example:
        >>> symmetry_key([1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 4) == symmetry_key([0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0], 4)
        True
    """
    box_rows, box_cols = BOX_SHAPES[size]
    givens = [(index // size, index % size, digit) for index, digit in enumerate(puzzle) if digit]
    frequency = Counter(digit for _, _, digit in givens)
    per_row, per_column, per_band, per_stack, per_box = Counter(), Counter(), Counter(), Counter(), Counter()
    digit_in_band, digit_in_stack = Counter(), Counter()
    row_frequencies: dict[int, list[int]] = {}
    column_frequencies: dict[int, list[int]] = {}
    for row, column, digit in givens:
        band, stack = row // box_rows, column // box_cols
        per_row[row] += 1
        per_column[column] += 1
        per_band[band] += 1
        per_stack[stack] += 1
        per_box[band, stack] += 1
        digit_in_band[band, digit] += 1
        digit_in_stack[stack, digit] += 1
        row_frequencies.setdefault(row, []).append(frequency[digit])
        column_frequencies.setdefault(column, []).append(frequency[digit])
    descriptions = []
    for row, column, digit in givens:
        band, stack = row // box_rows, column // box_cols
        along_row = (per_row[row], per_band[band], digit_in_band[band, digit], tuple(sorted(row_frequencies[row])))
        along_column = (per_column[column], per_stack[stack], digit_in_stack[stack, digit], tuple(sorted(column_frequencies[column])))
        lines = tuple(sorted((along_row, along_column))) if box_rows == box_cols else (along_row, along_column)
        descriptions.append((lines, per_box[band, stack], frequency[digit]))
    return f"{size}:{sorted(descriptions)}"
