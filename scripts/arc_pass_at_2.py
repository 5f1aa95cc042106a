"""Score a trained ARC run ARC's way: pass@2 with voting over augmented views of each test example.

    python scripts/arc_pass_at_2.py runs/arc --views 8        # writes runs/arc/pass_at_2.json

Each test example is answered on `--views` views (the example itself plus rotated/reflected,
colour-permuted copies); the answers are mapped back to the original frame and vote, and the example
counts as solved when its answer is among the two most voted (`latentreason.tasks.evaluate_pass_at_2`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a run folder written by `latentreason train recipes/arc.yaml`")
    parser.add_argument("--views", type=int, default=8, help="views per test example, the unaugmented one included (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="refinement steps (default: the recipe's eval.steps)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the augmented views")
    args = parser.parse_args(argv)

    from latentreason.inference import load_run
    from latentreason.tasks import evaluate_pass_at_2

    scores = evaluate_pass_at_2(load_run(args.run_dir), views=args.views, steps=args.steps, seed=args.seed)
    path = os.path.join(args.run_dir, "pass_at_2.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(scores, handle, indent=2)
    print(
        f"{scores['num_examples']} test examples, {scores['views']} views each: pass@1 {scores['pass_at_1']:.1%}, "
        f"pass@2 {scores['pass_at_2']:.1%}, exact (unaugmented view) {scores['exact']:.1%}. Written to {path}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
