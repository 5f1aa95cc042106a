#!/usr/bin/env bash
# The README demo: give the real all-MiniLM-L6-v2 (shipped on PyPI, no Hub needed) a small recursive
# reasoner and train it to solve 4x4 Sudoku on this CPU, then show it refining one puzzle step by step.
#
#   scripts/demo.sh                       # set up .venv if needed, train recipes/demo.yaml, predict
#   scripts/demo.sh training.max_steps=600   # any recipe override is passed on to `latentreason train`
#
# Prints accuracy (per cell) and exact match (whole grids) after each refinement step, with halting,
# and writes the run to runs/demo (eval_results.json, the trained adapter, recipe.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
start=$(date +%s)
.venv/bin/latentreason train recipes/demo.yaml "$@"
echo "Training and evaluation took $(( $(date +%s) - start )) s."
# One test puzzle (0 = blank), refined step by step.
puzzle=$(.venv/bin/python -c "
from latentreason.recipe import load_recipe
from latentreason.tasks import get_task
recipe = load_recipe('recipes/demo.yaml')
print(get_task(recipe.data.task, **recipe.data.task_options).get_example('test', 0)['input'])
")
echo "Puzzle: $puzzle"
.venv/bin/latentreason predict runs/demo "$puzzle" --steps
