"""A trained run folder, loaded: evaluate it and answer new inputs (what `latentreason eval / predict / plot / app` call).

    load_run(run_dir)             the saved reasoner, its recipe and the encoder that re-encodes inputs
    evaluate_run(run_dir, ...)    accuracy / exact match per refinement step on the run's test data or a file
    predict(run, inputs)          the answer (and the answer after each refinement step)

`latentreason.pipeline` writes the run folder (`train_recipe`); this module reads it back.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from . import recipe as recipes
from .config import LM_OUTPUTS
from .data import Encoder, PairEncoder, collate, load_pairs, row_origin, torch_format
from .losses import IGNORE_INDEX
from .model import LatentReasonerModel
from .prepare import load_tokenizer, read_pairs
from .text_pairs import TextPairEncoder
from .training.evaluation import evaluate
from .training.loop import EVAL_RESULTS_NAME


@dataclass
class Run:
    """A trained run folder, loaded: the model (EMA weights), its recipe and the encoder for new inputs."""

    model: LatentReasonerModel
    recipe: recipes.Recipe
    encoder: Encoder

    def predict(self, inputs: list[str], **options: Any) -> list[Prediction]:
        """`predict(self, inputs, **options)`: what a task's own scorer calls (e.g. ARC's `evaluate_pass_at_2`)."""
        return predict(self, inputs, **options)


def load_run(run_dir: str, *, halt_threshold: float | None = None) -> Run:
    """Load a run folder written by `latentreason train` (or any folder with a saved reasoner and recipe.yaml).

    `halt_threshold` overrides the saved `reasoner.halt_threshold` for this session (test-time halting only).
    """
    recipe_path = os.path.join(run_dir, recipes.RECIPE_NAME)
    if not os.path.isfile(recipe_path):
        raise FileNotFoundError(
            f"{run_dir} has no {recipes.RECIPE_NAME}: is it a folder written by `latentreason train`? "
            "(A training that was interrupted writes only checkpoints; finish it with `latentreason train RECIPE --resume`.)"
        )
    recipe = recipes.load_recipe(recipe_path)
    model = LatentReasonerModel.from_pretrained(run_dir, base_model=recipes.resolve_base(recipe.model.base))
    return run_for_model(model, recipe, halt_threshold=halt_threshold)


def run_for_model(model: LatentReasonerModel, recipe: recipes.Recipe, *, halt_threshold: float | None = None) -> Run:
    """A loaded reasoner with the encoder for its inputs (its base model's tokenizer): what `load_run` returns.

    `recipe` names the base model (its tokenizer) and the data encoding; for an adapter without a recipe
    (one loaded from the Hub), a `Recipe()` whose `model.base` is the adapter's base serves.
    """
    model.eval()
    if halt_threshold is not None:
        model.config = model.config.replace(halt_threshold=halt_threshold)  # validated: a probability in (0, 1)
    tokenizer = load_tokenizer(recipe)
    if model.config.output in LM_OUTPUTS:
        return Run(model, recipe, TextPairEncoder.for_model(tokenizer, model))
    output_kind = recipe.data.output_kind or ("aligned" if model.config.output == "token_classification" else "label")
    encoder = PairEncoder(tokenizer, output_kind, model.config.label_names, max_length=model.config.max_length)
    return Run(model, recipe, encoder)


def evaluate_run(run_dir: str, *, data_file: str | None = None, steps: int | None = None, halt: bool | None = None,
                 halt_threshold: float | None = None, trajectories: int = 1, noise: float = 0.0, select: str = "halt",
                 seed: int = 0, wrong_examples: int = 5) -> dict[str, Any]:
    """Evaluate a run on its own test data (the task's test split or `data.eval_file`) or on `data_file`.

    `trajectories`, `noise`, `select`, `seed`: test-time breadth, as in `latentreason.training.evaluate`.
    `wrong_examples`: how many of the first wrongly answered examples (in data order) to report, as
    `results["wrong_examples"]`: `[{"index", "where", "input", "prediction", "target"}, ...]`, the input and
    target as the data holds them and the prediction decoded as `predict` decodes it (for `latent_prefix`,
    the teacher-forced answer that was scored). `results["per_position"]` is the accuracy per answer cell.

    Writes `eval_results.json` into the run folder (`eval_results_<file name>.json` for another file).
    `halt_threshold` overrides the saved one (see `load_run`); the halting curve covers the others.

    Example:
        >>> results = evaluate_run("runs/sort_words", wrong_examples=3)                 # doctest: +SKIP
        >>> [row["accuracy"] for row in results["per_position"]], results["wrong_examples"][0]["prediction"]  # doctest: +SKIP
    """
    if data_file is not None and not os.path.exists(data_file):  # before the model loads: a typo fails at once
        raise FileNotFoundError(f"{data_file} (--data) does not exist: pass a .jsonl, .json or .csv file of pairs, or a folder written by save_to_disk.")
    run = load_run(run_dir, halt_threshold=halt_threshold)
    recipe = run.recipe
    if data_file is not None:
        pairs = load_pairs(data_file, input_column=recipe.data.input_column, output_column=recipe.data.output_column)
        name = f"eval_results_{os.path.splitext(os.path.basename(data_file))[0]}.json"
    else:
        pairs = read_pairs(recipe).eval
        if pairs is None:
            raise ValueError(f"The recipe of {run_dir} has no evaluation data: pass one with --data FILE.")
        name = EVAL_RESULTS_NAME
    encoded = torch_format(run.encoder.encode_dataset(pairs, desc="Tokenizing eval"))
    accelerator = Accelerator()
    loader = accelerator.prepare(
        DataLoader(encoded, batch_size=recipe.eval.batch_size, collate_fn=functools.partial(collate, pad_token_id=run.encoder.tokenizer.pad_token_id))
    )
    model = run.model.to(accelerator.device)
    results = evaluate(
        model, loader, accelerator, steps or recipe.eval.steps or model.config.max_supervision_steps, halt=recipe.eval.halt if halt is None else halt,
        trajectories=trajectories, noise=noise, select=select, seed=seed, keep_wrong=wrong_examples,
    )
    results["wrong_examples"] = [wrong_example(run, pairs, encoded, row["index"], row["prediction_ids"]) for row in results.pop("wrong", [])]
    if accelerator.is_main_process:
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, sort_keys=True)
    return results


def wrong_example(run: Run, pairs: datasets.Dataset, encoded: datasets.Dataset, index: int, prediction_ids: list[int] | int) -> dict[str, Any]:
    """Example `index` of the evaluated pairs, as the data holds it, beside the answer it got (decoded from `prediction_ids`).

    A text answer whose wrong tokens decode to nothing (a special token, or an id the tokenizer lacks, where
    the end token belongs) would read as the target: it is shown token by token over the answer's scored
    length instead, `<id N>` for an id with no text.
    """
    pair = pairs[index]
    if run.model.config.output in LM_OUTPUTS:
        prediction = run.encoder.decode([prediction_ids])[0]
        if prediction == pair["output"].strip():
            scored = int((torch.as_tensor(encoded[index]["labels"]) != IGNORE_INDEX).sum())
            pieces = [run.encoder.tokenizer.decode([token], skip_special_tokens=False).strip() for token in prediction_ids[:scored]]
            prediction = " ".join(piece or f"<id {token}>" for piece, token in zip(pieces, prediction_ids))
    else:
        prediction = run.encoder.decode(torch.tensor(prediction_ids), encoded[index]["cell_positions"])
    return {"index": index, "where": row_origin(pairs, index), "input": pair["input"], "prediction": prediction, "target": pair["output"]}


@dataclass
class Prediction:
    """The answer to one input, the answer after each refinement step, and the step it halted at."""

    input: str
    answer: str
    per_step: list[str]
    halted_at: int
    # The halting head's probability after each step, beside `per_step` (label runs; empty for the text paths).
    halt_probabilities: list[float] = dataclasses.field(default_factory=list)


@torch.no_grad()
def predict(
    run: Run, inputs: list[str], *, steps: int | None = None, halt: bool | None = None, max_new_tokens: int | None = None,
    trajectories: int = 1, noise: float = 0.0, select: str = "halt",
) -> list[Prediction]:
    """Answer each input with a loaded run: refine `steps` times (default: the recipe's eval steps).

    `trajectories`, `noise`, `select`: breadth at test time, as in `LatentReasonerModel.refine` (label runs only).

    `max_new_tokens` caps the length of a text answer (the LM output paths; default 32 for
    `latent_prefix`, the answer slots for `lm_head`); runs that predict labels raise if it is given.
    """
    model, encoder = run.model, run.encoder
    steps = steps or run.recipe.eval.steps or model.config.max_supervision_steps
    halt = run.recipe.eval.halt if halt is None else halt
    if model.config.output in LM_OUTPUTS:  # the frozen LM writes the answer
        if trajectories != 1:
            raise ValueError("--trajectories applies to runs that predict labels; text runs refine one trajectory. Leave it out.")
        return [predict_text(model, encoder, text, steps, max_new_tokens=max_new_tokens) for text in inputs]
    if max_new_tokens is not None:
        raise ValueError(
            f"max_new_tokens limits generated text, but this run predicts labels (output={model.config.output!r}): "
            "leave it out. It applies to runs with output 'lm_head' or 'latent_prefix'."
        )
    predictions = []
    for text in inputs:
        row = encoder.encode_input(text)
        input_ids = torch.tensor([row["input_ids"]])
        refined = model.refine(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), steps=steps, halt=halt,
                               trajectories=trajectories, noise=noise, select=select)
        per_step = [encoder.decode(logits[0], row["cell_positions"]) for logits in refined.step_logits]
        answer = encoder.decode(refined.logits[0], row["cell_positions"])
        halt_probabilities = [float(torch.sigmoid(logits[0])) for logits in refined.step_halt_logits]
        predictions.append(Prediction(text, answer, per_step, int(refined.halted_at[0]), halt_probabilities))
    return predictions


DEFAULT_MAX_NEW_TOKENS = 32  # latent_prefix answers written by `predict` when no limit is given


def predict_text(
    model: LatentReasonerModel, encoder: TextPairEncoder, text: str, steps: int, max_new_tokens: int | None = None
) -> Prediction:
    """Generate the answer text to one prompt with an LM output path, at most `max_new_tokens` tokens long.

    `latent_prefix` lets the LM write up to `max_new_tokens` (default 32) tokens; `lm_head` predicts
    one token per answer slot at once and keeps the first `max_new_tokens` of them (default: all).
    """
    if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1):
        raise ValueError(f"max_new_tokens must be an integer >= 1 (the longest answer in tokens), got {max_new_tokens!r}.")
    prompts = encoder.prompts([text])
    if model.config.output == "latent_prefix":
        tokens = model.generate(**prompts, steps=steps, max_new_tokens=max_new_tokens or DEFAULT_MAX_NEW_TOKENS)
        answer = encoder.decode(tokens)[0]
        return Prediction(text, answer, [answer], steps)
    # lm_head reads every slot at once, so the answer after each refinement step 1..steps is cheap to
    # show: one encoding of the prompt, one refinement run, the slots read after each step.
    per_step = [encoder.decode(tokens[:, :max_new_tokens])[0] for tokens in model.generate_steps(**prompts, steps=steps)]
    return Prediction(text, per_step[-1], per_step, steps)
