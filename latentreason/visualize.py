"""Pictures of the reasoner thinking: the answer after each refinement step, and accuracy per step.

`plot_refinement` draws one panel per refinement step, side by side: a Sudoku grid filling in (givens
in black, predicted digits green when right and red when wrong, blue when no target is given), a
maze whose path appears (green right, red wrong, pale green where the target path is still
missing), ARC answer grids in the ARC colours, and for sequence tasks (sorting, addition, parity,
custom pairs) a strip of cells per step. `plot_curve` draws accuracy against the refinement step.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global state, no display needed)
and saved at a fixed size: grid pictures are `PANEL_INCHES * DPI` pixels per panel wide and
`(PANEL_INCHES + TITLE_INCHES) * DPI` high; strip pictures are `strip_size(...)`.

`plot_run` (the `latentreason plot` command) draws them for a trained run: it refines examples of the
run's own data (or a given input) as `latentreason predict` does, with halting off so that every step
shows, and plots the accuracy curve from the run's `eval_results.json`.

Example:
    >>> from latentreason.visualize import plot_refinement
    >>> plot_refinement("sudoku", "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1",
    ...                 ["1 2 3 4 3 4 1 2 2 1 4 3 4 3 2 1"], "1 2 3 4 3 4 1 2 2 1 4 3 4 3 2 1",
    ...                 "/tmp/sudoku_steps.png")
    '/tmp/sudoku_steps.png'
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from . import recipe as recipes
from .data import load_pairs
from .inference import Run, load_run, predict
from .tasks import get_task
from .tasks.grid import text_to_grid
from .tasks.sudoku import BOX_SHAPES
from .training import EVAL_RESULTS_NAME

DPI = 100
PANEL_INCHES = 2.4  # side of one grid panel
TITLE_INCHES = 0.4  # room above the panels for their titles
CELL_INCHES = 0.45  # narrowest cell of a strip picture (one-character cells)
CHAR_INCHES = 0.075  # cells widen with their longest text (number words)
ROW_INCHES = 0.4  # height of one row in a strip picture
LABEL_INCHES = 1.5  # room left of the strip rows for their labels
MAX_STRIP_INCHES = 40.0  # wider strips squeeze their cells rather than grow without bound

STRIP = "strip"  # the picture of runs without a grid drawing (any task other than sudoku, maze, arc; data files)
CURVE_NAME = "curve.png"  # what `plot_run` names the accuracy-per-step curve in its output folder

RIGHT, WRONG, UNSCORED, MISSED = "#2e9d4a", "#d62728", "#1f5fbf", "#bfe6c8"
ARC_COLOURS = ["#000000", "#0074d9", "#ff4136", "#2ecc40", "#ffdc00", "#aaaaaa", "#f012be", "#ff851b", "#7fdbff", "#870c25"]


def plot_refinement(task: Any, input: str, step_predictions: Sequence[str], target: str | None, path: str | os.PathLike) -> str:
    """Draw the answer after each refinement step side by side and save it as a PNG; returns the path.

    Args:
        task: a task name (`"sudoku"`, `"maze"`, `"arc"`, anything else gets the strip) or a `Task`.
        input: the example's input text (Sudoku givens, the maze; unused by ARC).
        step_predictions: the predicted output text after refinement steps 1, 2, ...
        target: the right answer, to colour cells right/wrong; None to draw predictions uncoloured.
        path: where to write the PNG (folders are created).
    """
    return _save(refinement_figure(task, input, step_predictions, target), path)


def refinement_figure(task: Any, input: str, step_predictions: Sequence[str], target: str | None) -> Figure:
    """The figure `plot_refinement` saves: one panel (grid tasks) or one row (the others) per step."""
    if not step_predictions:
        raise ValueError("plot_refinement needs at least one step prediction (the answer after refinement step 1).")
    name = task if isinstance(task, str) else getattr(task, "name", "")
    draw_panel = _GRID_PANELS.get(name)
    if draw_panel is None:
        figure = _strip_figure(input, step_predictions, target)
    else:
        panels = len(step_predictions)
        figure = Figure(figsize=(PANEL_INCHES * panels, PANEL_INCHES + TITLE_INCHES), dpi=DPI)
        bottom_margin = 0.04
        for step, prediction in enumerate(step_predictions):
            axes = figure.add_axes((step / panels + 0.02 / panels, bottom_margin, 0.96 / panels, PANEL_INCHES / (PANEL_INCHES + TITLE_INCHES) - bottom_margin))
            axes.set_axis_off()
            draw_panel(axes, input, prediction, target)
            axes.set_title(_step_title(step + 1, prediction, target), fontsize=9)
    return figure


def plot_curve(per_step_accuracy: Sequence[float], path: str | os.PathLike, title: str = "Accuracy per refinement step") -> str:
    """Plot accuracy (a fraction in [0, 1]) against refinement step 1..N as a 5x3.5 inch PNG; returns the path."""
    return _save(curve_figure(per_step_accuracy, title), path)


def curve_figure(per_step_accuracy: Sequence[float], title: str = "Accuracy per refinement step") -> Figure:
    """The figure `plot_curve` saves: accuracy against refinement step."""
    if not per_step_accuracy:
        raise ValueError("plot_curve needs at least one accuracy value (one per refinement step).")
    figure = Figure(figsize=(5, 3.5), dpi=DPI)
    axes = figure.add_subplot()
    steps = range(1, len(per_step_accuracy) + 1)
    axes.plot(steps, per_step_accuracy, marker="o", color=UNSCORED)
    axes.set(xlabel="refinement step", ylabel="accuracy", title=title, ylim=(0, 1.02), xticks=list(steps))
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def strip_size(num_cells: int, num_steps: int, with_target: bool, longest_cell: int = 1) -> tuple[float, float]:
    """Figure size in inches of a strip picture: rows are the input, each step, and the target.

    A cell is `max(CELL_INCHES, CHAR_INCHES * longest_cell)` wide. Past `MAX_STRIP_INCHES` the cells
    are squeezed and their text turned upright, so rows grow tall enough to hold it.
    """
    rows = 1 + num_steps + int(with_target)
    cell = max(CELL_INCHES, CHAR_INCHES * longest_cell)
    width = LABEL_INCHES + cell * max(num_cells, 4)
    if width <= MAX_STRIP_INCHES:
        return width, ROW_INCHES * rows + TITLE_INCHES
    return MAX_STRIP_INCHES, max(ROW_INCHES, 0.55 * CHAR_INCHES * longest_cell) * rows + TITLE_INCHES


# --- grid panels -------------------------------------------------------------------------------
def _draw_sudoku(axes: Any, input: str, prediction: str, target: str | None) -> None:
    givens = input.split()
    size = math.isqrt(len(givens))
    if size not in BOX_SHAPES or size * size != len(givens):
        raise ValueError(f"A Sudoku input has 16, 36 or 81 cells, got {len(givens)}.")
    predicted, wanted = _padded(prediction, len(givens)), _padded(target, len(givens)) if target else None
    box_rows, box_cols = BOX_SHAPES[size]
    axes.set(xlim=(0, size), ylim=(size, 0), aspect="equal")
    for line in range(size + 1):
        axes.plot([0, size], [line, line], color="black", linewidth=2 if line % box_rows == 0 else 0.5)
        axes.plot([line, line], [0, size], color="black", linewidth=2 if line % box_cols == 0 else 0.5)
    for index, given in enumerate(givens):
        row, col = divmod(index, size)
        if given != "0":
            text, colour = given, "black"
        else:
            text, colour = predicted[index], _verdict(predicted[index], wanted[index] if wanted else None)
        axes.text(col + 0.5, row + 0.5, text, ha="center", va="center", color=colour, fontsize=max(6, 90 // size), fontweight="bold" if colour == "black" else "normal")


def _draw_maze(axes: Any, input: str, prediction: str, target: str | None) -> None:
    cells = input.split()
    size = math.isqrt(len(cells))
    if size * size != len(cells):
        raise ValueError(f"A maze input is a square grid, got {len(cells)} cells.")
    predicted, wanted = _padded(prediction, len(cells)), _padded(target, len(cells)) if target else None
    # Colour codes: 0 open, 1 wall, 2 right path, 3 wrong path, 4 missed path, 5 unscored path.
    codes = []
    for index, cell in enumerate(cells):
        on_path, should = predicted[index] == "*", (wanted[index] == "*") if wanted else None
        if cell == "#":
            codes.append(3 if on_path else 1)
        elif on_path:
            codes.append(5 if should is None else 2 if should else 3)
        else:
            codes.append(4 if should else 0)
    grid = [codes[row * size : (row + 1) * size] for row in range(size)]
    axes.imshow(grid, cmap=ListedColormap(["white", "#333333", RIGHT, WRONG, MISSED, UNSCORED]), vmin=0, vmax=5)
    for index, cell in enumerate(cells):
        if cell in ("S", "G"):
            row, col = divmod(index, size)
            axes.text(col, row, cell, ha="center", va="center", color="black", fontsize=8, fontweight="bold")


def _draw_arc(axes: Any, input: str, prediction: str, target: str | None) -> None:
    try:
        grid = [[int(colour) for colour in row] for row in text_to_grid(prediction, row_separator="|")]
        if any(not 0 <= colour <= 9 for row in grid for colour in row):
            raise ValueError("colour out of range")
    except ValueError:
        axes.text(0.5, 0.5, "not a grid", ha="center", va="center", transform=axes.transAxes, color=WRONG)
        return
    axes.imshow(grid, cmap=ListedColormap(ARC_COLOURS), vmin=0, vmax=9)
    if target is not None:
        edge = RIGHT if prediction.split() == target.split() else WRONG
        axes.add_patch(Rectangle((-0.5, -0.5), len(grid[0]), len(grid), fill=False, edgecolor=edge, linewidth=3))


_GRID_PANELS: dict[str, Callable[[Any, str, str, str | None], None]] = {"sudoku": _draw_sudoku, "maze": _draw_maze, "arc": _draw_arc}
GRID_TASKS: tuple[str, ...] = tuple(_GRID_PANELS)  # the tasks drawn as grids; any other task (or data file) gets the strip


# --- strips for sequence tasks -----------------------------------------------------------------
def _strip_figure(input: str, step_predictions: Sequence[str], target: str | None) -> Figure:
    texts = [input, *step_predictions] + ([target] if target else [])
    num_cells = max(len(text.split()) for text in texts)
    longest = max(len(cell) for text in texts for cell in text.split())
    width, height = strip_size(num_cells, len(step_predictions), target is not None, longest)
    squeezed = width >= MAX_STRIP_INCHES  # cells too narrow for their text: turn it upright
    figure = Figure(figsize=(width, height), dpi=DPI)
    axes = figure.add_axes((LABEL_INCHES / width, 0.02, 1 - LABEL_INCHES / width - 0.01, 1 - TITLE_INCHES / height - 0.02))
    axes.set_axis_off()
    wanted = _padded(target, num_cells) if target else None
    rows = [("input", _padded(input, num_cells), False)]
    rows += [(_step_title(step + 1, p, target), _padded(p, num_cells), True) for step, p in enumerate(step_predictions)]
    rows += [("target", wanted, False)] if wanted else []
    axes.set(xlim=(0, num_cells), ylim=(len(rows), 0))
    for row, (label, cells, scored) in enumerate(rows):
        axes.text(-0.2, row + 0.5, label, ha="right", va="center", fontsize=8)
        for col, cell in enumerate(cells):
            colour = _verdict(cell, wanted[col] if wanted else None) if scored else "#eeeeee"
            axes.add_patch(Rectangle((col, row), 1, 1, facecolor=colour, alpha=0.35 if scored else 1.0, edgecolor="white"))
            axes.text(col + 0.5, row + 0.5, cell, ha="center", va="center", fontsize=5 if squeezed else 7, rotation=90 if squeezed else 0)
    figure.suptitle("answer after each refinement step", fontsize=9, y=1 - 0.1 * TITLE_INCHES / height)
    return figure


# --- a trained run -----------------------------------------------------------------------------
def plot_run(
    run_dir: str,
    out_dir: str | os.PathLike | None = None,
    *,
    examples: Sequence[str] = (),
    input: str | None = None,
    target: str | None = None,
    steps: int | None = None,
) -> list[str]:
    """Draw a trained run refining answers, step by step, and its accuracy per step; returns the PNGs written.

    Each of `examples` (`"test:0"`, `"train:12"`: see `run_example`) becomes `refine_test_0.png`, a free
    `input` (with `target` to colour it, else uncoloured) `refine_input.png`; with neither, `test:0` is drawn.
    `curve.png` plots accuracy per refinement step from the run's eval_results.json, when it has one.
    `out_dir` defaults to `RUN_DIR/plots`; `steps` to the recipe's eval.steps.

    Example:
        >>> plot_run("runs/sudoku_4x4", "plots", examples=["test:0", "test:1"])       # doctest: +SKIP
        ['plots/refine_test_0.png', 'plots/refine_test_1.png', 'plots/curve.png']
    """
    if target is not None and input is None:
        raise ValueError("A target colours a free INPUT; an --example brings its own target.")
    out_dir = os.fspath(out_dir) if out_dir is not None else os.path.join(run_dir, "plots")
    if input is None and not examples:
        examples = ["test:0"]
    for spec in examples:
        parse_example(spec)  # every spec checked before the run loads
    run = load_run(run_dir)
    written = [refinement_picture(run, os.path.join(out_dir, f"refine_{spec.replace(':', '_')}.png"), example=spec, steps=steps)
               for spec in examples]
    if input is not None:
        written.append(refinement_picture(run, os.path.join(out_dir, "refine_input.png"), input=input, target=target, steps=steps))
    if os.path.isfile(os.path.join(run_dir, EVAL_RESULTS_NAME)):
        written.append(curve_picture(run_dir, os.path.join(out_dir, CURVE_NAME)))
    return written


def refinement_picture(
    run: Run | str,
    path: str | os.PathLike,
    *,
    input: str | None = None,
    example: str | None = None,
    target: str | None = None,
    steps: int | None = None,
) -> str:
    """Refine one input with a run (loaded, or its folder) and draw the answer after each step to `path` (a PNG).

    Give exactly one of `input` (a text in the run's input format) or `example` (`"test:0"`, from the run's
    own data, which also gives the target). `steps` defaults to the recipe's `eval.steps`. Returns `path`.
    """
    if (input is None) == (example is None):
        raise ValueError("Give exactly one of an INPUT text or --example SPLIT:INDEX.")
    run = load_run(run) if isinstance(run, str) else run
    if example is not None:
        input, example_target = run_example(run.recipe, example)
        target = example_target if target is None else target
    (prediction,) = predict(run, [input], steps=steps, halt=False)
    return plot_refinement(run.recipe.data.task or STRIP, input, prediction.per_step, target, path)


def curve_picture(run_dir: str, path: str | os.PathLike) -> str:
    """Plot accuracy against refinement step from `run_dir`'s eval_results.json to `path`; returns `path`."""
    results_path = os.path.join(run_dir, EVAL_RESULTS_NAME)
    if not os.path.isfile(results_path):
        raise FileNotFoundError(f"{results_path} does not exist: evaluate the run first with `latentreason eval {run_dir}`.")
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    accuracy = [row["accuracy"] for row in results["per_step"]]
    exact = [row["exact_match"] for row in results["per_step"]]
    name = os.path.basename(os.path.normpath(run_dir))
    return plot_curve(accuracy, path, title=f"{name}: accuracy per step (exact {exact[0]:.0%} -> {exact[-1]:.0%})")


def parse_example(spec: str) -> tuple[str, int]:
    """`"test:0"` -> `("test", 0)`; raises `ValueError` naming the expected form otherwise."""
    split, _, index = spec.partition(":")
    if split not in ("train", "test") or not index.isdigit():
        raise ValueError(f"--example must look like test:0 or train:12 (a split and an example index), got {spec!r}.")
    return split, int(index)


def run_example(recipe: recipes.Recipe, spec: str) -> tuple[str, str]:
    """The (input, target) of example `spec` ("test:0") of a run's own data: its task's split (`data.task`
    with `data.task_options`), or the pair at that 0-based index of `data.train_file` / `data.eval_file`."""
    split, index = parse_example(spec)
    data = recipe.data
    if data.task is not None:
        task = get_task(data.task, **data.task_options)
        _check_index(spec, index, task.num_examples(split), f"split {split!r} of task {data.task!r}")
        example = task.get_example(split, index)
    else:
        key = {"train": "train_file", "test": "eval_file"}[split]
        path = getattr(data, key)
        if path is None:
            raise ValueError(f"--example {spec}: the run has no {split} data (data.{key}); pass an INPUT text instead, "
                             "with --target for the right answer.")
        pairs = load_pairs(path, input_column=data.input_column, output_column=data.output_column, skip_bad_rows=data.skip_bad_rows)
        _check_index(spec, index, len(pairs), str(path))
        example = pairs[index]
    return example["input"], example["output"]


def _check_index(spec: str, index: int, count: int, where: str) -> None:
    if index >= count:
        raise ValueError(f"--example {spec}: example {index} is out of range: {where} has {count}.")


# --- helpers -----------------------------------------------------------------------------------
def _padded(text: str, length: int) -> list[str]:
    """The cells of `text`, cut or padded with `?` to `length` (a malformed prediction still draws)."""
    cells = text.split()[:length]
    return cells + ["?"] * (length - len(cells))


def _verdict(cell: str, wanted: str | None) -> str:
    if wanted is None:
        return UNSCORED
    return RIGHT if cell == wanted else WRONG


def _step_title(step: int, prediction: str, target: str | None) -> str:
    if target is None:
        return f"step {step}"
    predicted, wanted = prediction.split(), target.split()
    right = sum(p == t for p, t in zip(predicted, wanted)) / max(len(wanted), len(predicted), 1)
    return f"step {step}: {right:.0%}" + (" exact" if predicted == wanted else "")


def _save(figure: Figure, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    figure.savefig(path, dpi=DPI, format="png")
    return path
