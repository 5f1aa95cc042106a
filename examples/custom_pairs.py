"""Your own CSV of input/output pairs -> a trained reasoner, through a recipe (what `latentreason train` runs).

    python examples/custom_pairs.py                                  # an example CSV (sorting digits), MiniLM, the recipe's 3000 steps
    python examples/custom_pairs.py --steps 300                      # a shorter run
    python examples/custom_pairs.py --csv my_pairs.csv --eval-csv my_test.csv
    python examples/custom_pairs.py --csv data.csv --input-column question --output-column answer
    python examples/custom_pairs.py --smoke                          # a tiny random model, a handful of steps

Your CSV needs a header and two columns (by default `input` and `output`). The output is either
*aligned*, one whitespace-separated output cell per input cell (`"3 1 2" -> "1 2 3"`: a label per
cell), or a *label*, one class per row (`"3 1 2" -> "unsorted"`); the kind is guessed from the data.
Bad rows stop the run with the file and line; `data.skip_bad_rows=true` skips them instead.

Runs unchanged on CPU or GPUs. The same run from the command line:

    latentreason train recipes/custom_pairs.yaml data.train_file=my_pairs.csv data.eval_file=my_test.csv
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import sys

from latentreason.inference import load_run, predict
from latentreason.pipeline import train_recipe
from latentreason.recipe import load_recipe
from latentreason.testing import save_tiny_backbone

RECIPE = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "recipes", "custom_pairs.yaml")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", help="your training pairs (CSV with a header); default: write an example file")
    parser.add_argument("--eval-csv", help="pairs to evaluate on (same columns); default: none, or the example's test file")
    parser.add_argument("--input-column", default="input")
    parser.add_argument("--output-column", default="output")
    parser.add_argument("--base", help="Hugging Face model id or folder (default: the recipe's, all-MiniLM-L6-v2)")
    parser.add_argument("--output-dir", default="outputs/custom_pairs")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's, or 4 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model and a handful of steps (seconds)")
    return parser.parse_args(argv)


def write_example_csv(path: str, rows: int, seed: int) -> str:
    """Pairs that sort five digits: "7 3 9 0 3" -> "0 3 3 7 9" (an aligned output: one cell per input cell)."""
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input", "output"])
        for _ in range(rows):
            digits = [rng.randrange(10) for _ in range(5)]
            writer.writerow([" ".join(map(str, digits)), " ".join(map(str, sorted(digits)))])
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    train_csv, eval_csv = args.csv, args.eval_csv
    if train_csv is None:
        rows = 64 if args.smoke else 2000
        train_csv = write_example_csv(os.path.join(args.output_dir, "pairs_train.csv"), rows, seed=0)
        eval_csv = eval_csv or write_example_csv(os.path.join(args.output_dir, "pairs_test.csv"), rows // 8, seed=1)

    # recipes/custom_pairs.yaml with `section.key=value` overrides, exactly as on the command line.
    overrides = [
        f"data.train_file={train_csv}",
        f"data.input_column={args.input_column}",
        f"data.output_column={args.output_column}",
        f"training.output_dir={os.path.join(args.output_dir, 'run')}",
        "training.report_to=none",
    ]
    if eval_csv:
        overrides.append(f"data.eval_file={eval_csv}")
    if args.steps:
        overrides.append(f"training.max_steps={args.steps}")
    if args.base:
        overrides.append(f"model.base={args.base}")
    if args.smoke:  # a tiny random BERT, a small reasoner, a handful of steps
        overrides += [
            f"model.base={save_tiny_backbone('bert', os.path.join(args.output_dir, 'tiny-bert'))}",
            "reasoner.hidden_size=32",
            "reasoner.num_heads=2",
            "reasoner.max_supervision_steps=2",
            "training.supervision_steps=2",
            f"training.max_steps={args.steps or 4}",
            "training.batch_size=8",
            "training.checkpoint_every=null",
            "training.progress_bar=false",
        ]
    recipe = load_recipe(RECIPE, overrides)
    print(f"training with {RECIPE} and the overrides {' '.join(overrides)}")

    result = train_recipe(recipe)  # read + check + tokenize, cache features, train, evaluate, save the run folder
    if result.eval_results is not None:
        per_step = ", ".join(f"{row['accuracy']:.2f}" for row in result.eval_results["per_step"])
        print(f"cell accuracy after each refinement step: {per_step}")
    run_dir = recipe.training.output_dir
    print(f"run folder {run_dir}: {sorted(os.listdir(run_dir))}")

    # Reload the run (adapter + recipe + tokenizer) and answer new inputs, as `latentreason predict` does.
    run = load_run(run_dir)
    with open(train_csv, newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    for prediction in predict(run, [first[args.input_column]], halt=False):
        print(f"input:   {prediction.input}")
        for step, answer in enumerate(prediction.per_step, start=1):
            print(f"step {step}:  {answer}")
        print(f"target:  {first[args.output_column]}")
    if not result.finished:
        sys.exit("training stopped before its last step")


if __name__ == "__main__":
    main()
