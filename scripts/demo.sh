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
# One thread: the reasoner's matmuls are tiny, and on a shared machine a second torch thread mostly
# waits at barriers (measured here under load: 0.35 s per step with 1 thread, 8-10 s with 2).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
start=$(date +%s)
.venv/bin/latentreason train recipes/demo.yaml "$@"
echo "Training and evaluation took $(( $(date +%s) - start )) s."
# A test puzzle (0 = blank) that the reasoner fixes while it refines, shown step by step.
.venv/bin/python - <<'PY'
from latentreason.tasks import get_task
from latentreason.inference import load_run, predict

run = load_run("runs/demo")
options = run.recipe.data.task_options
puzzles = get_task(run.recipe.data.task, **options).examples("test")[:100]
predictions = predict(run, [p["input"] for p in puzzles], halt=False)
shown = next((i for i, p in enumerate(predictions) if len(set(p.per_step)) > 1), 0)
print(f"Puzzle:    {puzzles[shown]['input']}")
for step, answer in enumerate(predictions[shown].per_step, start=1):
    print(f"step {step}:    {answer}")
print(f"solution:  {puzzles[shown]['output']}")
PY
