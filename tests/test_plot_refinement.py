"""`latentreason plot` and scripts/plot_refinement.py on a tiny run: the step-by-step pictures and the accuracy curve, at their fixed sizes."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
from conftest import TINY_SUDOKU_STEPS
from matplotlib.image import imread

from latentreason import cli
from latentreason.visualize import DPI, PANEL_INCHES, TITLE_INCHES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "plot_refinement.py")
STEPS = TINY_SUDOKU_STEPS


def load_script():
    spec = importlib.util.spec_from_file_location("plot_refinement", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return load_script()


@pytest.fixture(scope="module")
def tiny_run(tiny_sudoku_run: str) -> str:
    return tiny_sudoku_run


def png_size(path: str) -> tuple[int, int]:
    height, width = imread(path).shape[:2]
    return width, height


def test_example_picture_has_one_panel_per_step(script, tiny_run: str, tmp_path) -> None:
    out = str(tmp_path / "img" / "refine.png")
    assert script.main([tiny_run, "--example", "test:0", "--out", out]) == 0
    # Grid pictures are PANEL_INCHES wide per refinement step (the recipe's eval.steps here).
    assert png_size(out) == (round(PANEL_INCHES * DPI * STEPS), round((PANEL_INCHES + TITLE_INCHES) * DPI))


def test_free_input_with_steps_and_the_curve(script, tiny_run: str, tmp_path) -> None:
    out, curve = str(tmp_path / "free.png"), str(tmp_path / "curve.png")
    puzzle = "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1"
    assert script.main([tiny_run, puzzle, "--steps", "2", "--out", out, "--curve", curve]) == 0
    assert png_size(out) == (round(PANEL_INCHES * DPI * 2), round((PANEL_INCHES + TITLE_INCHES) * DPI))
    assert png_size(curve) == (5 * DPI, round(3.5 * DPI))
    with open(os.path.join(tiny_run, "eval_results.json")) as handle:
        assert len(json.load(handle)["per_step"]) == STEPS  # the curve's points come from here


def test_the_example_is_the_run_tasks_own(tiny_run: str) -> None:
    from latentreason.recipe import load_recipe
    from latentreason.tasks import get_task
    from latentreason.visualize import run_example

    recipe = load_recipe(os.path.join(tiny_run, "recipe.yaml"))
    puzzle, solution = run_example(recipe, "test:1")
    assert (puzzle, solution) == tuple(get_task("sudoku", **recipe.data.task_options).get_example("test", 1).values())
    assert sum(cell != "0" for cell in puzzle.split()) == recipe.data.task_options["givens"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["--example", "test-0"], "test:0"),
    (["--example", "test:99"], "out of range"),
    (["1 0 0 4", "--example", "test:0"], "exactly one"),
])
def test_bad_arguments_exit_with_a_clear_error(script, tiny_run: str, tmp_path, capsys, arguments, message) -> None:
    assert script.main([tiny_run, *arguments, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_plot_command_writes_the_pictures_it_names(tiny_run: str, tmp_path, capsys) -> None:
    from latentreason.inference import load_run, predict
    from latentreason.visualize import plot_refinement, run_example

    out = tmp_path / "plots"
    assert cli.main(["plot", tiny_run, "--example", "test:0", "--example", "test:2", "--out", str(out)]) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.strip().splitlines()]
    assert written == [str(out / "refine_test_0.png"), str(out / "refine_test_2.png"), str(out / "curve.png")]
    for path in written[:2]:  # one panel per refinement step (eval.steps)
        assert png_size(path) == (round(PANEL_INCHES * DPI * STEPS), round((PANEL_INCHES + TITLE_INCHES) * DPI))
    assert png_size(written[2]) == (5 * DPI, round(3.5 * DPI))
    puzzle, solution = run_example(load_run(tiny_run).recipe, "test:2")
    (prediction,) = predict(load_run(tiny_run), [puzzle], halt=False)
    direct = plot_refinement("sudoku", puzzle, prediction.per_step, solution, tmp_path / "direct.png")
    assert open(written[1], "rb").read() == open(direct, "rb").read()  # the same picture as drawing it by hand


def test_plot_command_defaults_and_errors(tiny_run: str, tmp_path, capsys) -> None:
    puzzle = "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1"
    assert cli.main(["plot", tiny_run, puzzle, "--steps", "2"]) == 0  # a free input, and test:0 only when neither is given
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.strip().splitlines()]
    plots = os.path.join(tiny_run, "plots")
    assert written == [os.path.join(plots, "refine_input.png"), os.path.join(plots, "curve.png")]
    assert png_size(written[0]) == (round(PANEL_INCHES * DPI * 2), round((PANEL_INCHES + TITLE_INCHES) * DPI))
    for arguments, message in ((["--example", "test-0"], "test:0"), (["--example", "test:99"], "out of range"),
                               (["--target", "1 2 3 4"], "INPUT")):
        assert cli.main(["plot", tiny_run, *arguments, "--out", str(tmp_path / "bad")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
