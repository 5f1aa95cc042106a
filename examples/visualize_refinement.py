"""Watch a reasoner think: a PNG of a Sudoku's answer after each refinement step, and accuracy per step.

    python examples/visualize_refinement.py                         # train recipes/demo.yaml (4x4 Sudoku, MiniLM), then draw
    python examples/visualize_refinement.py --run runs/sudoku_4x4   # draw with a run folder written by `latentreason train`
    python examples/visualize_refinement.py --smoke                 # a tiny random model, a handful of steps

Writes OUTPUT_DIR/refinement.png (one panel per refinement step: givens in black, predicted digits
green where right and red where wrong) and OUTPUT_DIR/accuracy_per_step.png (cell accuracy on the
test puzzles after each step). A reasoner that refines fills the grid in over the steps.
"""

from __future__ import annotations

import argparse
import os

from latentreason.inference import evaluate_run, load_run, predict
from latentreason.pipeline import train_recipe
from latentreason.recipe import load_recipe
from latentreason.tasks import get_task
from latentreason.testing import save_tiny_backbone
from latentreason.visualize import plot_curve, plot_refinement

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes", "demo.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a run folder written by `latentreason train` on a Sudoku recipe (default: train one here)")
    parser.add_argument("--output-dir", default="outputs/visualize_refinement")
    parser.add_argument("--steps", type=int, help="refinement steps to draw (default: the reasoner's max_supervision_steps)")
    parser.add_argument("--puzzle", type=int, default=0, help="which test puzzle to draw")
    parser.add_argument("--smoke", action="store_true", help="tiny random model and a handful of training steps (seconds)")
    return parser.parse_args(argv)


def train_sudoku(args: argparse.Namespace) -> str:
    """Train on 4x4 Sudoku with the README demo's recipe (recipes/demo.yaml); returns the run folder."""
    run_dir = os.path.join(args.output_dir, "run")
    overrides = [f"training.output_dir={run_dir}", "training.report_to=none", "training.checkpoint_every=null"]
    if args.smoke:  # a tiny random BERT, few puzzles, a handful of steps
        base = save_tiny_backbone("bert", os.path.join(args.output_dir, "tiny-bert"))
        overrides += [
            f"model.base={base}",
            "data.task_options.num_train=32",
            "data.task_options.num_test=8",
            "reasoner.hidden_size=32",
            "reasoner.max_supervision_steps=3",
            "training.max_steps=4",
            "training.batch_size=8",
            "training.supervision_steps=2",
            "training.progress_bar=false",
            "eval.steps=3",
        ]
    train_recipe(load_recipe(RECIPE, overrides))
    return run_dir


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    run_dir = args.run or train_sudoku(args)
    run = load_run(run_dir)
    if run.recipe.data.task != "sudoku":
        raise SystemExit(f"{run_dir} was trained on {run.recipe.data.task or run.recipe.data.train_file}, not on the sudoku task.")

    # One test puzzle, refined step by step; the answer after each step becomes one panel.
    example = get_task("sudoku", **run.recipe.data.task_options).get_example("test", args.puzzle)
    (prediction,) = predict(run, [example["input"]], steps=args.steps, halt=False)
    picture = plot_refinement("sudoku", example["input"], prediction.per_step, example["output"], os.path.join(args.output_dir, "refinement.png"))
    for step, answer in enumerate(prediction.per_step, start=1):
        print(f"step {step}: {answer}")
    print(f"target: {example['output']}")
    print(f"wrote {picture}")

    # Accuracy on all test puzzles after each step: the refinement curve.
    results = evaluate_run(run_dir, steps=args.steps, halt=False)
    accuracies = [row["accuracy"] for row in results["per_step"]]
    curve = plot_curve(accuracies, os.path.join(args.output_dir, "accuracy_per_step.png"), title="4x4 Sudoku: cell accuracy per refinement step")
    print("cell accuracy after each refinement step: " + ", ".join(f"{value:.2f}" for value in accuracies))
    print(f"wrote {curve}")


if __name__ == "__main__":
    main()
