"""The `latentreason` command: train, eval, predict, plot, push, app, recipes, tasks, export-task, convert-trm.

    latentreason train recipes/sudoku_6x6.yaml training.max_steps=200 [--resume]
    latentreason train sudoku_6x6 training.max_steps=200          # a built-in recipe by name
    latentreason eval runs/sudoku_6x6 [--data test.jsonl] [--steps 8] [--halt | --no-halt] [--show-wrong 5]
    latentreason predict runs/sudoku_6x6 "0 2 0 4 ..." [--steps]
    latentreason plot runs/sudoku_6x6 [--example test:0 ...] [--out DIR]   # the answer after each step, as PNGs
    latentreason push runs/sudoku_6x6 user/sudoku-reasoner [--private] [--with-app]
    latentreason app runs/sudoku_6x6 [--port 7860]                # a demo page: watch the answer refine
    latentreason recipes                                         # the built-in recipes and their purpose
    latentreason recipes copy custom_pairs my_pairs.yaml         # write one out to edit
    latentreason tasks
    latentreason export-task sudoku sudoku.jsonl size=4 num_train=100
    latentreason convert-trm checkpoints/sudoku/step_50000 trm-sudoku

Multi-process (DDP): `accelerate launch --num_processes 2 -m latentreason.cli train RECIPE` on GPUs;
on CPUs (gloo) `torchrun --standalone --nproc_per_node 2 -m latentreason.cli train RECIPE`.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import sys
import textwrap
from collections.abc import Callable
from typing import Any

from .cli_help import APP_HELP, CONVERT_HELP, EVAL_HELP, EXPORT_HELP, PLOT_HELP, PREDICT_HELP, PUSH_HELP, RECIPES_HELP, TRAIN_HELP
from .lock import OutputDirInUseError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentreason",
        description="Give a Hugging Face model a small recursive latent reasoner (TRM-style): train, evaluate, predict, publish.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run `latentreason COMMAND --help` for each command's options and examples.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=details, formatter_class=argparse.RawDescriptionHelpFormatter)

    train = command("train", "train a reasoner from a YAML recipe", TRAIN_HELP)
    train.add_argument("recipe", metavar="RECIPE", help="a recipe file, or a built-in recipe's name (see `latentreason recipes`)")
    train.add_argument("overrides", nargs="*", metavar="section.key=value", help="recipe overrides")
    train.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint in training.output_dir")

    evaluate = command("eval", "evaluate a trained run per refinement step", EVAL_HELP)
    evaluate.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `latentreason train`")
    evaluate.add_argument("--data", metavar="FILE", help="pairs to evaluate on (JSONL, CSV or a saved dataset); default: the run's test data")
    evaluate.add_argument("--steps", type=_positive, metavar="K", help="refinement steps (default: the recipe's eval.steps)")
    evaluate.add_argument("--halt", action=argparse.BooleanOptionalAction, default=None, help="headline numbers with halting (default: the recipe's eval.halt)")
    evaluate.add_argument("--halt-threshold", type=_probability, metavar="P",
                          help="halt once the halt probability is above P (default: the adapter's reasoner.halt_threshold, 0.5 unless set)")
    _add_breadth_flags(evaluate, "example, all but one with noise on the carry, and score the one kept")
    evaluate.add_argument("--show-wrong", type=_non_negative, default=5, metavar="N",
                          help="print the first N wrongly answered examples, in data order (default: 5; 0: none)")

    predict = command("predict", "answer inputs with a trained run", PREDICT_HELP)
    predict.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `latentreason train`")
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="input texts, in the training data's format")
    predict.add_argument("--steps", nargs="?", const=0, type=_positive, metavar="K",
                         help="print the answer after each refinement step; K sets how many steps (default: the recipe's eval.steps)")
    predict.add_argument("--halt", action=argparse.BooleanOptionalAction, default=None, help="stop refining once the halting head says so")
    predict.add_argument("--halt-threshold", type=_probability, metavar="P", help="with --halt: stop once the halt probability is above P")
    _add_breadth_flags(predict, "input, all but one with noise on the carry, and keep one")
    predict.add_argument("--max-new-tokens", type=_positive, metavar="N",
                         help="text runs only: the longest answer in tokens (latent_prefix: default 32; lm_head: default all answer slots)")

    plot = command("plot", "draw a trained run's answer after each refinement step", PLOT_HELP)
    plot.add_argument("run_dir", metavar="RUN_DIR", help="a folder written by `latentreason train`")
    plot.add_argument("input", nargs="?", metavar="INPUT", help="an input text in the training data's format, drawn as refine_input.png")
    plot.add_argument("--example", action="append", default=[], metavar="SPLIT:INDEX",
                      help="an example of the run's own data, e.g. test:0, drawn as refine_test_0.png (repeat for more)")
    plot.add_argument("--target", type=_text("the right answer for INPUT"), help="the right answer for INPUT, to colour its cells right and wrong")
    plot.add_argument("--steps", type=_positive, metavar="K", help="refinement steps to draw (default: the recipe's eval.steps)")
    plot.add_argument("--out", type=_folder_to_write, metavar="DIR", help="the folder to write the PNGs into (default: RUN_DIR/plots)")

    push = command("push", "upload a trained run to the Hugging Face Hub", PUSH_HELP)
    push.add_argument("run_dir", metavar="RUN_DIR")
    push.add_argument("repo_id", metavar="REPO_ID", help="e.g. your-name/sudoku-reasoner")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--token", type=_text("a Hub token (leave --token out to use the saved login)"), help="Hub token (default: the one saved by `hf auth login`, or HF_TOKEN)")
    push.add_argument("--allow-local-base", action="store_true",
                      help="publish even though the base model is a path on this machine (others cannot load it)")
    push.add_argument("--with-app", action="store_true",
                      help="also upload app.py and requirements.txt: the demo page (`latentreason app`), ready for a Space")

    app = command("app", "serve a demo page: type an input, watch the answer refine step by step", APP_HELP)
    app.add_argument("source", metavar="SOURCE", help="a run folder, a saved adapter folder, or a Hub id")
    app.add_argument("--steps", type=_positive, metavar="K", help="where the steps slider starts (default: the recipe's eval.steps, else N_sup)")
    app.add_argument("--host", type=_text("a host name or address to listen on"), default="127.0.0.1",
                     help="the address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    app.add_argument("--port", type=_port, default=7860, metavar="PORT", help="the port to listen on (default: 7860)")
    app.add_argument("--share", action="store_true", help="also open a public gradio.live link")

    recipes = command("recipes", "list the built-in recipes, or copy one to edit", RECIPES_HELP)
    recipe_actions = recipes.add_subparsers(dest="recipe_action", metavar="ACTION")
    copy = recipe_actions.add_parser("copy", help="write a built-in recipe to a file to edit", description="Write a built-in recipe to a file to edit.")
    copy.add_argument("name", metavar="NAME", help="the built-in recipe (see `latentreason recipes`)")
    copy.add_argument("path", nargs="?", metavar="PATH", help="file or folder to write (default: NAME.yaml here)")
    copy.add_argument("--force", action="store_true", help="replace PATH if it exists")

    command("tasks", "list the built-in tasks and their options", "List the built-in tasks, their output kind and options.")

    export = command("export-task", "write a built-in task as JSONL", EXPORT_HELP)
    export.add_argument("name", metavar="NAME", help="task name (see `latentreason tasks`)")
    export.add_argument("path", metavar="PATH", help="the .jsonl file to write")
    export.add_argument("options", nargs="*", metavar="key=value", help="task options, e.g. size=4 num_train=100")
    export.add_argument("--split", choices=("train", "test"), default="train", help="which split to write (default: train)")

    convert = command("convert-trm", "convert a TRM reference checkpoint into an adapter", CONVERT_HELP)
    convert.add_argument("checkpoint", metavar="CHECKPOINT", help="a file the reference's pretrain.py saved (its model state dict)")
    convert.add_argument("output_dir", metavar="OUT_DIR", help="the adapter folder to write")
    convert.add_argument("--config", metavar="YAML", help="the reference's all_config.yaml (default: the one beside CHECKPOINT)")
    convert.add_argument("--puzzle-id", type=_non_negative, default=0, metavar="N",
                         help="which puzzle identifier's embedding to keep when the checkpoint has several (default: 0)")
    return parser


# argparse `type=` functions: a bad value ends in `latentreason CMD: error: argument --FLAG: expected ...` (exit 2)
# before anything loads, never in a traceback from deep inside a run.
def _checked(parse: Callable[[str], Any], what: str, ok: Callable[[Any], bool]) -> Callable[[str], Any]:
    """An argparse `type=`: `parse` the text (a ValueError means a wrong type) and refuse values that are not `ok`."""

    def parse_checked(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value!r}")
        return value

    return parse_checked


# NaN fails every comparison, so each number check below refuses it too.
_positive = _checked(int, "a whole number >= 1", lambda n: n >= 1)
_non_negative = _checked(int, "a whole number >= 0", lambda n: n >= 0)
_non_negative_float = _checked(float, "a finite number >= 0", lambda x: 0 <= x < math.inf)
_probability = _checked(float, "a probability strictly between 0 and 1", lambda p: 0 < p < 1)
_port = _checked(int, "a port number from 1 to 65535", lambda n: 1 <= n <= 65535)
_folder_to_write = _checked(str, "a folder to write into (not an existing file)", lambda path: bool(path.strip()) and not os.path.isfile(path))


def _text(what: str) -> Callable[[str], str]:
    """Any text but an empty one (`--token "$UNSET_VARIABLE"` would otherwise pass silently)."""
    return _checked(str, what, lambda text: bool(text.strip()))


def _add_breadth_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """--trajectories, --noise and --select: test-time breadth (see latentreason.trajectories)."""
    parser.add_argument("--trajectories", type=_positive, default=1, metavar="M", help=f"run M refinement trajectories per {what} (default: 1)")
    parser.add_argument("--noise", type=_non_negative_float, default=0.0, metavar="SIGMA",
                        help="with --trajectories: std of the Gaussian noise added to the carry after every step (default: 0)")
    parser.add_argument("--select", choices=("halt", "vote"), default="halt",
                        help="with --trajectories: keep the most confident halting head (halt) or the most frequent answer (vote)")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `latentreason` command; returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `key=value` options may follow flags (`export-task NAME PATH --split test length=5`); argparse's
    # intermixed parsing does not work with subcommands, so collect them here.
    if args.command == "export-task":
        args.options += [token for token in extra if "=" in token and not token.startswith("-")]
        extra = [token for token in extra if token not in args.options]
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    _join_cpu_process_group()
    if not sys.stderr.isatty():
        _quiet_progress_bars()
    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, ImportError, OutputDirInUseError) as error:
        print(f"latentreason {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno != errno.ENOSPC:  # a full disk is the user's to fix; anything else is a bug to report
            raise
        print(f"latentreason {args.command}: error: {error}", file=sys.stderr)
        return 2


def _quiet_progress_bars() -> None:
    """Redirected to a file, the libraries' carriage-return bars (tokenizing, loading weights) are noise: off."""
    import datasets
    from transformers.utils import logging as transformers_logging

    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()


def _join_cpu_process_group() -> None:
    """Under torchrun on a machine without GPUs, join the process group over gloo before anything asks.

    Accelerate's own `accelerate launch --cpu --num_processes N` starts one process unless MPI is set up,
    and without `cpu=True` a torchrun process on a GPU-less machine would train alone, silently.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if not torch.cuda.is_available():
            from accelerate import PartialState

            PartialState(cpu=True)


def run_train(args: argparse.Namespace) -> int:
    from .pipeline import train_recipe
    from .recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    result = train_recipe(recipe, resume=args.resume)
    if result.eval_results is not None and _is_main_process():
        print(format_results(result.eval_results))
    if _is_main_process():
        print(f"Saved to {recipe.training.output_dir}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_run

    results = evaluate_run(args.run_dir, data_file=args.data, steps=args.steps, halt=args.halt, halt_threshold=args.halt_threshold,
                           trajectories=args.trajectories, noise=args.noise, select=args.select, wrong_examples=args.show_wrong)
    if _is_main_process():
        print(format_results(results))
        print(format_mistakes(results))
    return 0


def format_mistakes(results: dict[str, Any]) -> str:
    """The accuracy per answer position (when there is more than one) and the wrong examples `evaluate_run` kept."""
    lines = []
    if len(results["per_position"]) > 1:
        cells = " ".join(f"{row['position']}:{row['accuracy']:.3f}" for row in results["per_position"])
        lines.append(textwrap.fill(cells, width=110, initial_indent="accuracy per answer position: ", subsequent_indent="  "))
    examples = results["wrong_examples"]
    wrong = results["num_examples"] - round(results["exact_match"] * results["num_examples"])
    if examples:
        lines.append(f"wrong answers: {wrong} of {results['num_examples']}; the first {len(examples)}, in data order:")
        for example in examples:
            lines += [f"  {example['where']}", f"    input:      {example['input']}", f"    prediction: {example['prediction'] or '(empty)'}",
                      f"    target:     {example['target']}"]
    return "\n".join(lines)


def run_predict(args: argparse.Namespace) -> int:
    from .inference import load_run, predict

    run = load_run(args.run_dir, halt_threshold=args.halt_threshold)
    halt = run.recipe.eval.halt if args.halt is None else args.halt
    answers = predict(run, args.inputs, steps=args.steps or None, halt=halt, max_new_tokens=args.max_new_tokens,
                      trajectories=args.trajectories, noise=args.noise, select=args.select)
    for prediction in answers:
        if args.steps is not None:
            for step, answer in enumerate(prediction.per_step, start=1):
                print(f"step {step}: {answer}")
            how = f"halted at step {prediction.halted_at}" if halt else f"after {len(prediction.per_step)} steps"
            print(f"answer ({how}): {prediction.answer}")
        else:
            print(prediction.answer)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from .visualize import CURVE_NAME, plot_run

    written = plot_run(args.run_dir, args.out, examples=args.example, input=args.input, target=args.target, steps=args.steps)
    for path in written:
        print(f"wrote {path}")
    if not any(os.path.basename(path) == CURVE_NAME for path in written):
        print(f"no {CURVE_NAME}: {args.run_dir} has no eval_results.json yet (`latentreason eval {args.run_dir}` writes it)")
    return 0


def run_push(args: argparse.Namespace) -> int:
    from .hub import push_folder

    extra_files = None
    if args.with_app:
        from .app import space_files

        extra_files = space_files(args.repo_id)
    info = push_folder(args.run_dir, args.repo_id, private=args.private or None, token=args.token,
                       allow_local_base=args.allow_local_base, extra_files=extra_files)
    print(f"Pushed {args.run_dir} to {getattr(info, 'repo_url', args.repo_id)}")
    if extra_files:
        print(f"With {' and '.join(extra_files)}: create a Space (gradio SDK) with these two files to serve the demo page.")
    return 0


def run_app(args: argparse.Namespace) -> int:
    from .app import launch

    launch(args.source, host=args.host, port=args.port, share=args.share, steps=args.steps)
    return 0


def run_recipes(args: argparse.Namespace) -> int:
    from .recipe import builtin_recipes, copy_recipe, recipe_purpose

    if args.recipe_action == "copy":
        target = copy_recipe(args.name, args.path, overwrite=args.force)
        print(f"Wrote the {os.path.splitext(os.path.basename(args.name))[0]} recipe to {target}; train it with `latentreason train {target}`")
        return 0
    shipped = builtin_recipes()
    width = max(map(len, shipped))
    for name, path in shipped.items():
        print(textwrap.fill(recipe_purpose(path), width=110, initial_indent=f"{name:<{width}}  ", subsequent_indent=" " * (width + 2)))
    return 0


def run_tasks(args: argparse.Namespace) -> int:
    from .tasks import TASKS

    for name in sorted(TASKS):
        task = TASKS[name]
        summary = (task.__doc__ or "").strip().splitlines()[0] if task.__doc__ else ""
        print(f"{name}  ({task.output_kind})  {summary}")
        for option, text in task.option_help().items():
            print(textwrap.fill(f"{option}: {text}", width=110, initial_indent="    ", subsequent_indent="        "))
        print("    (every task also takes: seed, num_train, num_test, augment, augment_copies)")
    return 0


def run_export_task(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from .tasks import get_task

    options = OmegaConf.to_container(OmegaConf.from_dotlist(args.options)) if args.options else {}
    task = get_task(args.name, **options)
    task.export_jsonl(args.path, args.split)
    print(f"Wrote {task.num_examples(args.split)} {args.split} examples of {args.name} to {args.path}")
    return 0


def run_convert_trm(args: argparse.Namespace) -> int:
    from .convert_trm import convert_trm

    conversion = convert_trm(args.checkpoint, args.output_dir, config_path=args.config, puzzle_id=args.puzzle_id)
    for note in conversion.notes:
        print(f"note: {note}", file=sys.stderr)
    config = conversion.config
    print(
        f"Converted {args.checkpoint} ({config.mixer} mixer, hidden {config.hidden_size}, n={config.latent_steps}, "
        f"T={config.cycles}, N_sup={config.max_supervision_steps}, vocabulary {config.vocab_size}) to {args.output_dir}"
    )
    return 0


COMMANDS = {
    "train": run_train,
    "eval": run_eval,
    "predict": run_predict,
    "plot": run_plot,
    "push": run_push,
    "app": run_app,
    "recipes": run_recipes,
    "tasks": run_tasks,
    "export-task": run_export_task,
    "convert-trm": run_convert_trm,
}


def format_results(results: dict[str, Any]) -> str:
    """A small table: accuracy and exact match after each refinement step, then the headline numbers."""
    lines = ["step  accuracy  exact_match"]
    lines += [f"{row['step']:>4}  {row['accuracy']:>8.4f}  {row['exact_match']:>11.4f}" for row in results["per_step"]]
    halting = results.get("halting")
    if halting:
        lines.append(f"halt  {halting['accuracy']:>8.4f}  {halting['exact_match']:>11.4f}   (mean steps {halting['mean_steps']:.2f})")
    curve = results.get("halting_curve")
    if curve:
        from .training.evaluation import suggest_halt_threshold

        lines.append("halting curve: halt when p >  accuracy  exact_match  mean steps")
        lines += [f"{row['threshold']:>30g}  {row['accuracy']:>8.4f}  {row['exact_match']:>11.4f}  {row['mean_steps']:>10.2f}" for row in curve]
        best = suggest_halt_threshold(results)
        if best is not None:
            lines.append(f"fewest steps within 1 point of all {results['steps']} steps: halt when p > {best['threshold']:g} "
                         f"({best['mean_steps']:.2f} steps); set reasoner.halt_threshold to it, choosing on held-out data, not the test set")
    lines.append(json.dumps({k: results[k] for k in ("accuracy", "exact_match", "mean_steps")}))
    return "\n".join(lines)


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


if __name__ == "__main__":
    sys.exit(main())
