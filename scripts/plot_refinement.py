#!/usr/bin/env python
"""Draw a trained run refining one answer, step by step, to a named PNG (and its accuracy-per-step curve).

    python scripts/plot_refinement.py runs/sudoku_4x4 --example test:0 --out docs/img/refine_sudoku_4x4.png
    python scripts/plot_refinement.py runs/sudoku_4x4 "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1" --steps 8
    python scripts/plot_refinement.py runs/maze --example test:3 --curve docs/img/curve_maze.png

A thin wrapper over `latentreason.visualize.refinement_picture` and `curve_picture`, which the
`latentreason plot RUN_DIR` command also uses (it writes into a folder, several examples at once):
this script names each file, as the pictures in docs/img are named. `--example SPLIT:INDEX` takes the
input and its target from the run's own data; a free INPUT is drawn uncoloured unless `--target`
gives the right answer. Every refinement step is drawn: halting is off here.
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from latentreason.visualize import curve_picture, refinement_picture  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Draw a trained run's answer after each refinement step to a PNG.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  python scripts/plot_refinement.py runs/sudoku_4x4 --example test:0 --out docs/img/refine_sudoku_4x4.png",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `latentreason train`")
    parser.add_argument("input", nargs="?", metavar="INPUT", help="an input text in the task's format (or use --example)")
    parser.add_argument("--example", metavar="SPLIT:INDEX", help="an example of the run's own data, e.g. test:0 (gives the target too)")
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
    except (ValueError, FileNotFoundError) as error:
        print(f"plot_refinement: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
