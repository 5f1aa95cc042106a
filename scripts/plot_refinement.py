#!/usr/bin/env python
"""Draw a trained run refining one answer, step by step, to a PNG (and its accuracy-per-step curve).

    python scripts/plot_refinement.py runs/sudoku_4x4 --example test:0 --out docs/img/refine_sudoku_4x4.png
    python scripts/plot_refinement.py runs/sudoku_4x4 "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1" --steps 8
    python scripts/plot_refinement.py runs/maze --example test:3 --curve docs/img/curve_maze.png

The run is loaded the way `latentreason predict` loads it (`latentreason.pipeline.load_run`: the saved
reasoner, its recipe and the encoder for new inputs) and refined with `latentreason.pipeline.predict`,
which decodes the answer after every refinement step. `latentreason.visualize.plot_refinement` draws
those answers side by side: a Sudoku grid filling in, a maze path appearing, a strip of cells per
step for sequence tasks (addition, parity, sorting). Cells are green where right, red where wrong.

`--example SPLIT:INDEX` takes the input and its target from the run's task (the recipe's `data.task`
and `data.task_options`, so the same examples it was trained and tested on). A free INPUT is drawn
uncoloured unless `--target` gives the right answer. `--curve PATH` also plots the accuracy after each
refinement step from the run's `eval_results.json` (written by `latentreason train` / `eval`).
Every refinement step is drawn: halting is off here, so the picture shows what each further step does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from latentreason.pipeline import load_run, predict  # noqa: E402
from latentreason.training import EVAL_RESULTS_NAME
from latentreason.visualize import plot_curve, plot_refinement  # noqa: E402

STRIP = "strip"  # the picture for tasks without a grid drawing (any name other than sudoku, maze, arc)


def parse_example(spec: str) -> tuple[str, int]:
    """`"test:0"` -> `("test", 0)`; raises `ValueError` naming the expected form otherwise."""
    split, _, index = spec.partition(":")
    if split not in ("train", "test") or not index.isdigit():
        raise ValueError(f"--example must look like test:0 or train:12 (a split and an example index), got {spec!r}.")
    return split, int(index)


def task_example(recipe, spec: str) -> tuple[str, str]:
    """The (input, target) of example `spec` of the run's own task, built from the recipe's task options."""
    from latentreason.tasks import get_task

    if recipe.data.task is None:
        raise ValueError(
            "--example needs a run trained on a built-in task (data.task); this run was trained on a file. "
            "Pass the input text instead, with --target for the right answer."
        )
    split, index = parse_example(spec)
    example = get_task(recipe.data.task, **recipe.data.task_options).get_example(split, index)
    return example["input"], example["output"]


def refinement_picture(
    run_dir: str,
    path: str,
    *,
    input: str | None = None,
    example: str | None = None,
    target: str | None = None,
    steps: int | None = None,
) -> str:
    """Refine one input with the run in `run_dir` and draw the answer after each step to `path` (a PNG).

    Give exactly one of `input` (a text in the task's format) or `example` (`"test:0"`, from the run's
    task, which also supplies the target). `steps` defaults to the recipe's `eval.steps`. Returns `path`.
    """
    if (input is None) == (example is None):
        raise ValueError("Give exactly one of an INPUT text or --example SPLIT:INDEX.")
    run = load_run(run_dir)
    if example is not None:
        input, example_target = task_example(run.recipe, example)
        target = example_target if target is None else target
    (prediction,) = predict(run, [input], steps=steps, halt=False)
    task = run.recipe.data.task or STRIP
    return plot_refinement(task, input, prediction.per_step, target, path)


def curve_picture(run_dir: str, path: str) -> str:
    """Plot accuracy against refinement step from `run_dir`'s eval_results.json to `path`; returns `path`."""
    results_path = os.path.join(run_dir, EVAL_RESULTS_NAME)
    if not os.path.isfile(results_path):
        raise FileNotFoundError(f"{results_path} does not exist: evaluate the run first with `latentreason eval {run_dir}`.")
    with open(results_path, encoding="utf-8") as handle:
        results = json.load(handle)
    accuracy = [row["accuracy"] for row in results["per_step"]]
    exact = [row["exact_match"] for row in results["per_step"]]
    name = os.path.basename(os.path.normpath(run_dir))
    title = f"{name}: accuracy per step (exact {exact[0]:.0%} -> {exact[-1]:.0%})"
    return plot_curve(accuracy, path, title=title)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw a trained run's answer after each refinement step to a PNG.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/plot_refinement.py runs/sudoku_4x4 --example test:0 --out docs/img/refine_sudoku_4x4.png",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `latentreason train`")
    parser.add_argument("input", nargs="?", metavar="INPUT", help="an input text in the task's format (or use --example)")
    parser.add_argument("--example", metavar="SPLIT:INDEX", help="an example of the run's own task, e.g. test:0 (gives the target too)")
    parser.add_argument("--target", help="the right answer for INPUT, to colour cells right and wrong")
    parser.add_argument("--steps", type=int, metavar="K", help="refinement steps to draw (default: the recipe's eval.steps)")
    parser.add_argument("--out", metavar="PATH", help="the PNG to write (default: RUN_DIR/refinement.png)")
    parser.add_argument("--curve", metavar="PATH", help="also plot accuracy per refinement step (from eval_results.json) to this PNG")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 with a message on a bad input)."""
    args = build_parser().parse_args(argv)
    out = args.out or os.path.join(args.run_dir, "refinement.png")
    try:
        print(refinement_picture(args.run_dir, out, input=args.input, example=args.example, target=args.target, steps=args.steps))
        if args.curve:
            print(curve_picture(args.run_dir, args.curve))
    except (ValueError, FileNotFoundError, IndexError) as error:
        print(f"plot_refinement: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
