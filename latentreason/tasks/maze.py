"""Mazes on small square grids: mark the unique shortest path from start to goal.

Alphabet (one character per cell, row-major, no row markers; the width is the `size` option):
input `#` wall, `.` open, `S` start, `G` goal; output `#` wall, `.` open and off the path, `*` on
the shortest path (S and G included). Input and output are aligned cell for cell: `size**2` cells.

Generation: a perfect maze (exactly one path between any two open cells) carved by a randomised
depth-first search (recursive backtracker) on the odd coordinates of an odd-sized grid; `extra_openings`
then knocks out that many inner walls, which creates loops so that the answer is the *shortest* of
several paths. Start and goal are random open cells at least `min_path_length` cells apart along the
path; a breadth-first search finds the path and counts shortest paths, and start/goal pairs with more
than one shortest path are redrawn, so the answer is always unique.

Augmentation: the eight rotations and reflections of the square (applied to input and output alike).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from .common import Task, register_task
from .grid import NUM_DIHEDRAL, dihedral_text

WALL, OPEN, START, GOAL, PATH = "#", ".", "S", "G", "*"
MAX_ENDPOINT_DRAWS = 200


def shortest_paths(grid: list[list[str]], start: tuple[int, int], goal: tuple[int, int]) -> tuple[list[tuple[int, int]], int]:
    """One shortest path from `start` to `goal` through non-wall cells, and how many shortest paths there are.

    Returns `([], 0)` when the goal cannot be reached.
    """
    height, width = len(grid), len(grid[0])
    distance, ways, parent = {start: 0}, {start: 1}, {start: start}
    queue = deque([start])
    while queue:
        row, col = cell = queue.popleft()
        for step in ((row - 1, col), (row + 1, col), (row, col - 1), (row, col + 1)):
            r, c = step
            if not (0 <= r < height and 0 <= c < width) or grid[r][c] == WALL:
                continue
            if step not in distance:
                distance[step], ways[step], parent[step] = distance[cell] + 1, 0, cell
                queue.append(step)
            if distance[step] == distance[cell] + 1:
                ways[step] += ways[cell]
    if goal not in distance:
        return [], 0
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1], ways[goal]


def carve_maze(size: int, rng: random.Random) -> list[list[str]]:
    """A perfect maze: walls everywhere, then a randomised depth-first search opens cells at odd coordinates."""
    grid = [[WALL] * size for _ in range(size)]
    grid[1][1] = OPEN
    stack = [(1, 1)]
    while stack:
        row, col = stack[-1]
        unvisited = [
            (row + dr, col + dc)
            for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
            if 0 < row + dr < size - 1 and 0 < col + dc < size - 1 and grid[row + dr][col + dc] == WALL
        ]
        if not unvisited:
            stack.pop()
            continue
        r, c = rng.choice(unvisited)
        grid[(row + r) // 2][(col + c) // 2] = OPEN  # the wall between the two cells
        grid[r][c] = OPEN
        stack.append((r, c))
    return grid


@dataclass
class MazeOptions:
    size: int = field(default=9, metadata={"help": "Side of the square grid, odd, >= 5 (9..15 recommended; the sequence has size**2 cells)."})
    extra_openings: int = field(default=0, metadata={"help": "Inner walls knocked out after carving: 0 keeps a perfect maze (one path); more adds loops, so the shortest path must be found among several."})
    min_path_length: int | None = field(default=None, metadata={"help": "Fewest cells on the path, S and G included. Default: the side `size`."})

    def __post_init__(self) -> None:
        if self.size < 5 or self.size % 2 == 0:
            raise ValueError(f"Maze `size` must be odd and >= 5 (walls sit on even rows and columns), got {self.size}; try {max(5, self.size | 1)}.")
        if self.extra_openings < 0:
            raise ValueError(f"Maze `extra_openings` must be >= 0, got {self.extra_openings}.")
        if self.min_path_length is None:
            self.min_path_length = self.size
        longest = self.size * self.size // 2  # a path never covers more than half the grid's cells
        if not 2 <= self.min_path_length <= longest:
            raise ValueError(f"Maze `min_path_length` must be in 2..{longest} for size {self.size}, got {self.min_path_length}.")


@register_task
class MazeTask(Task):
    """Find the shortest path in a maze: output marks it with `*` on a copy of the grid."""

    name = "maze"
    output_kind = "aligned"
    Options = MazeOptions

    def labels(self) -> list[str]:
        return [WALL, OPEN, PATH]

    def _generate(self, rng: random.Random) -> dict[str, str]:
        size = self.options.size
        grid = carve_maze(size, rng)
        inner_walls = [(r, c) for r in range(1, size - 1) for c in range(1, size - 1) if grid[r][c] == WALL and (r % 2) != (c % 2)]
        for row, col in rng.sample(inner_walls, min(self.options.extra_openings, len(inner_walls))):
            grid[row][col] = OPEN
        open_cells = [(r, c) for r in range(size) for c in range(size) if grid[r][c] == OPEN]
        for _ in range(MAX_ENDPOINT_DRAWS):
            start, goal = rng.sample(open_cells, 2)
            path, count = shortest_paths(grid, start, goal)
            if count == 1 and len(path) >= self.options.min_path_length:
                break
        else:
            raise RuntimeError(f"No start/goal pair with a unique shortest path of >= {self.options.min_path_length} cells; lower `min_path_length`.")
        puzzle = [row[:] for row in grid]
        puzzle[start[0]][start[1]], puzzle[goal[0]][goal[1]] = START, GOAL
        solved = [row[:] for row in grid]
        for row, col in path:
            solved[row][col] = PATH
        return {"input": " ".join(cell for row in puzzle for cell in row), "output": " ".join(cell for row in solved for cell in row)}

    def canonical_key(self, example: dict[str, str]) -> str:
        """The smallest of the input's eight rotations and reflections."""
        return min(dihedral_text(example["input"], k, width=self.options.size) for k in range(NUM_DIHEDRAL))

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """A random rotation or reflection of the square, applied to input and output alike."""
        k, width = rng.randrange(NUM_DIHEDRAL), self.options.size
        return {**example, "input": dihedral_text(example["input"], k, width=width), "output": dihedral_text(example["output"], k, width=width)}
