"""The help texts of the `latentreason` command, one per subcommand (kept apart so cli.py reads as the parser)."""

TRAIN_HELP = """\
Train a reasoner as a recipe describes, and write the run folder (training.output_dir): the trained
adapter (EMA weights), eval_results.json with accuracy and exact match after each refinement step,
recipe.yaml, and resumable checkpoints.

Override any recipe key with section.key=value (sections: model, data, reasoner, training, eval, hub).

RECIPE is a YAML file, or the name of a built-in recipe (`latentreason recipes` lists them; an
installed latentreason has them too, no clone needed).

examples:
  latentreason train recipes/sudoku_6x6.yaml
  latentreason train sudoku_6x6 training.max_steps=200                                  # built-in, by name
  latentreason train recipes/custom_pairs.yaml data.train_file=mine.jsonl data.eval_file=mine_test.jsonl
  latentreason train recipes/sort_words.yaml training.max_steps=100 reasoner.hidden_size=64
  latentreason train recipes/sudoku_6x6.yaml --resume        # continue from the last checkpoint
  accelerate launch --num_processes 2 -m latentreason.cli train recipes/sort_words.yaml      # GPUs
  torchrun --standalone --nproc_per_node 2 -m latentreason.cli train recipes/sort_words.yaml  # CPUs (gloo)
"""

RECIPES_HELP = """\
List the recipes shipped with latentreason, one line each: its name and what it trains. Train one by
name (`latentreason train NAME ...`), or copy it to a file to edit and train that.

examples:
  latentreason recipes
  latentreason recipes copy custom_pairs                  # writes custom_pairs.yaml here
  latentreason recipes copy text_pairs configs/ --force    # writes configs/text_pairs.yaml, replacing it
"""

EVAL_HELP = """\
Evaluate a trained run: accuracy (per cell) and exact match (whole answers) after each refinement
step, and with halting. Uses the run's own test data unless --data gives a file of pairs (JSONL/CSV).
Results are printed and written to RUN_DIR/eval_results.json (eval_results_<file>.json for --data).
Also printed (and written): the accuracy per answer position (per cell of an aligned output, per
answer token of a text output), and the first wrongly answered examples in data order, each with
its input, prediction and target.

examples:
  latentreason eval runs/sudoku_6x6
  latentreason eval runs/sudoku_6x6 --show-wrong 20          # more wrong examples (0: none)
  latentreason eval runs/sudoku_6x6 --data hard_puzzles.jsonl --steps 16 --no-halt
  latentreason eval runs/sudoku_6x6 --steps 64 --trajectories 8 --noise 0.3 --select vote
"""

PREDICT_HELP = """\
Answer inputs with a trained run and print one answer per line. With --steps, print the answer after
every refinement step too (watch the reasoner fix its answer).

examples:
  latentreason predict runs/sort_words "seventeen three forty"
  latentreason predict runs/sudoku_4x4 "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1" --steps
  latentreason predict runs/sudoku_4x4 "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1" --steps 32 --trajectories 8 --noise 0.3 --select vote
  latentreason predict runs/text_pairs "two plus three" --max-new-tokens 8
"""

PLOT_HELP = """\
Draw a trained run refining its answers: one PNG per example with the answer after every refinement
step side by side (a Sudoku grid filling in, a maze path appearing, a strip of cells per step for
sequence tasks; green where right, red where wrong), and curve.png, the accuracy per refinement step
from RUN_DIR/eval_results.json. Halting is off, so every step is drawn. Prints each file it writes.

--example SPLIT:INDEX takes an example (and its target) from the run's own data: the task's split, or
the pair at that 0-based index of data.train_file (train) or data.eval_file (test). Without INPUT or
--example, test:0 is drawn.

examples:
  latentreason plot runs/sudoku_4x4                                       # test:0 and the curve, in runs/sudoku_4x4/plots
  latentreason plot runs/maze --example test:0 --example test:3 --out pictures
  latentreason plot runs/sudoku_4x4 "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1" --steps 8
"""

PUSH_HELP = """\
Upload a trained run (adapter config, weights, model card, eval results) to the Hugging Face Hub.
Checkpoints and recipes stay local. Before uploading, the token is checked with the Hub, and a run
whose base model is a path on this machine is refused (others could not load it) unless
--allow-local-base. With --with-app, the repo also gets app.py and requirements.txt: the demo page
of `latentreason app`, ready to back a Hugging Face Space (gradio SDK).

examples:
  latentreason push runs/sudoku_6x6 your-name/sudoku-reasoner --private
  latentreason push runs/sudoku_6x6 your-name/sudoku-reasoner --with-app
"""

APP_HELP = """\
Serve a demo page for a trained run: type an input, press Refine, and see the answer after each
refinement step with the halting head's probability (and, for Sudoku, mazes and ARC, the grids
drawn). SOURCE is a run folder, a saved adapter folder or a Hub id. Needs gradio:
pip install 'latentreason[app]'. Stop it with Ctrl+C.

examples:
  latentreason app runs/sudoku_4x4                      # http://127.0.0.1:7860
  latentreason app runs/sudoku_4x4 --port 8000 --steps 12
  latentreason app your-name/sudoku-reasoner --share     # also a public gradio.live link
"""

EXPORT_HELP = """\
Write a built-in task's examples as JSON Lines ({"input": ..., "output": ...} per line): the format
your own data needs for recipes/custom_pairs.yaml. Task options go as key=value.

examples:
  latentreason export-task sudoku sudoku4.jsonl size=4 givens=8 num_train=200
  latentreason export-task sort_words test.jsonl --split test length=5
"""


CONVERT_HELP = """\
Convert a checkpoint of the TRM reference code (SamsungSAILMontreal/TinyRecursiveModels) into a
latentreason adapter on learned token embeddings: config, safetensors weights and a model card, which
`LatentReasonerModel.from_pretrained(OUT_DIR)` loads, `refine` runs and `latentreason push` publishes,
with the reference's logits on the same inputs. The checkpoint is read with
torch.load(weights_only=True): tensors only, no code from it ever runs. The settings that its tensors
do not hold (cycles, heads, ...) come from the all_config.yaml the reference wrote beside it.

Puzzle-identifier embeddings become fixed prefix positions: exact when the checkpoint has one
identifier (Sudoku, mazes); with several (ARC) one is kept (--puzzle-id), as the command reports.

examples:
  latentreason convert-trm checkpoints/sudoku/step_50000 trm-sudoku
  latentreason convert-trm step_50000 trm-arc --config all_config.yaml --puzzle-id 0
"""
