"""Refinement pictures and accuracy curves: PNGs of the documented size that show right and wrong cells."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest
from matplotlib.colors import to_hex

from latentreason.tasks import get_task
from latentreason.visualize import (
    DPI,
    PANEL_INCHES,
    RIGHT,
    TITLE_INCHES,
    WRONG,
    curve_figure,
    plot_curve,
    plot_refinement,
    refinement_figure,
    strip_size,
)


def read_png(path) -> np.ndarray:
    image = matplotlib.image.imread(str(path))
    assert image.ndim == 3 and image.size > 0
    return image[..., :3]


def red_pixels(image: np.ndarray) -> int:
    """Pixels in the "wrong" red (#d62728)."""
    return int(((image[..., 0] > 0.75) & (image[..., 1] < 0.3) & (image[..., 2] < 0.3)).sum())


def reddish_pixels(image: np.ndarray) -> int:
    """Pixels tinted red: the "wrong" colour, solid or light."""
    return int((image[..., 0] - image[..., 1] > 0.15).sum())


def with_errors(text: str, positions: list[int], replacement: str) -> str:
    cells = text.split()
    for position in positions:
        cells[position] = replacement if cells[position] != replacement else "1"
    return " ".join(cells)


def test_sudoku_picture_has_one_panel_per_step_and_marks_wrong_digits(tmp_path) -> None:
    example = get_task("sudoku", size=4, num_train=1, num_test=1).get_example("test", 0)
    blanks = [i for i, cell in enumerate(example["input"].split()) if cell == "0"]
    steps = [with_errors(example["output"], blanks[:3], "2"), example["output"], example["output"]]
    path = plot_refinement("sudoku", example["input"], steps, example["output"], tmp_path / "sudoku.png")
    image = read_png(path)
    assert image.shape[:2] == (round((PANEL_INCHES + TITLE_INCHES) * DPI), round(3 * PANEL_INCHES * DPI))
    panel = image.shape[1] // 3
    assert red_pixels(image[:, :panel]) > 0  # the wrong digits of step 1
    assert red_pixels(image[:, panel:]) == 0  # steps 2 and 3 are right

    # What each panel shows is the data drawn: the givens in black, every other cell the step's digit,
    # red exactly where it differs from the target, green elsewhere.
    figure = refinement_figure("sudoku", example["input"], steps, example["output"])
    givens, target = example["input"].split(), example["output"].split()
    for axes, prediction in zip(figure.axes, steps):
        drawn = [(text.get_text(), to_hex(text.get_color())) for text in axes.texts]
        expected = [
            (given, "#000000") if given != "0" else (cell, WRONG if cell != want else RIGHT)
            for given, cell, want in zip(givens, prediction.split(), target)
        ]
        assert drawn == expected


def test_maze_picture_draws_the_path(tmp_path) -> None:
    task = get_task("maze", size=9, num_train=1, num_test=1)
    example = task.get_example("test", 0)
    no_path = example["output"].replace("*", ".")
    path = plot_refinement(task, example["input"], [no_path, example["output"]], example["output"], tmp_path / "maze.png")
    image = read_png(path)
    assert image.shape[:2] == (round((PANEL_INCHES + TITLE_INCHES) * DPI), round(2 * PANEL_INCHES * DPI))
    green = (image[..., 1] > 0.55) & (image[..., 0] < 0.3) & (image[..., 2] < 0.4)  # the "right" green (#2e9d4a)
    half = image.shape[1] // 2
    assert green[:, half:].sum() > 10 * max(1, green[:, :half].sum())  # the path appears in step 2


@pytest.mark.parametrize("name", ["sort_words", "addition", "parity"])
def test_sequence_tasks_get_a_strip_of_the_documented_size(name: str, tmp_path) -> None:
    example = get_task(name, num_train=1, num_test=1).get_example("test", 0)
    steps = [example["input"], example["output"]]
    path = plot_refinement(name, example["input"], steps, example["output"], tmp_path / f"{name}.png")
    longest = max(len(cell) for text in steps for cell in text.split())
    width, height = strip_size(len(example["output"].split()), 2, True, longest)
    image = read_png(path)
    assert image.shape[:2] == (round(height * DPI), round(width * DPI))
    assert reddish_pixels(image) > 0  # step 1 (the unsorted input, say) has wrong cells
    right = plot_refinement(name, example["input"], [example["output"]], example["output"], tmp_path / "right.png")
    assert reddish_pixels(read_png(right)) == 0


def test_arc_panels_and_malformed_predictions(tmp_path) -> None:
    example = get_task("arc", max_grid_size=6, max_demonstrations=1).get_example("test", 0)
    path = plot_refinement("arc", example["input"], ["not | a grid x", example["output"]], None, tmp_path / "arc.png")
    assert read_png(path).shape[:2] == (round((PANEL_INCHES + TITLE_INCHES) * DPI), round(2 * PANEL_INCHES * DPI))


def test_plot_curve_draws_the_accuracies_it_is_given(tmp_path) -> None:
    accuracies = [0.2, 0.45, 0.6, 0.58]
    path = plot_curve(accuracies, tmp_path / "deep" / "curve.png", "Sudoku 4x4")
    assert read_png(path).shape[:2] == (350, 500)
    (axes,) = curve_figure(accuracies, "Sudoku 4x4").axes
    (line,) = axes.lines
    assert list(line.get_xdata()) == [1, 2, 3, 4] and list(line.get_ydata()) == accuracies
    assert axes.get_title() == "Sudoku 4x4" and axes.get_ylim() == (0, 1.02)


def test_plot_errors_are_clear(tmp_path) -> None:
    with pytest.raises(ValueError, match="at least one step"):
        plot_refinement("sudoku", "1 0 0 4", [], None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="at least one accuracy"):
        plot_curve([], tmp_path / "y.png")
    with pytest.raises(ValueError, match="16, 36 or 81 cells"):
        plot_refinement("sudoku", "1 0 0", ["1 2 3"], None, tmp_path / "z.png")
