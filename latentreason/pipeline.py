"""From a recipe to a trained run folder, and back: what `latentreason train / eval / predict` do.

    train_recipe(recipe)          data -> tokenizer -> PairEncoder -> feature cache -> train -> OUTPUT_DIR
    load_run(run_dir)             the saved reasoner, its recipe and the encoder that re-encodes inputs
    evaluate_run(run_dir, ...)    accuracy / exact match per refinement step on the run's test data or a file
    predict(run_dir, inputs)      the answer (and the answer after each refinement step)

A run folder holds the adapter written by `model.save_pretrained` (config with the label names,
safetensors weights of the EMA, model card, eval_results.json), `recipe.yaml` (the recipe with the
data encoding filled in: output kind and max length; the tokenizer comes from the base model) and
`checkpoints/` for `--resume`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from . import recipe as recipes
from .backbone import resolve_base_model
from .config import LM_OUTPUTS
from .data import DataError, Encoder, PairEncoder, collate, infer_label_names, load_pairs, torch_format
from .features import cached_features
from .lock import hold_output_dir
from .model import LatentReasonerModel, attach_reasoner
from .tasks import get_task
from .text_pairs import TextPairEncoder
from .training.evaluation import evaluate
from .training.loop import EVAL_RESULTS_NAME, TrainResult, train

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Encoded training and evaluation sets and how they were encoded."""

    train: datasets.Dataset
    eval: datasets.Dataset | None
    encoder: Encoder
    output_kind: str
    label_names: list[str]
    max_length: int


def load_tokenizer(recipe: recipes.Recipe) -> Any:
    """The base model's tokenizer (with a padding token: the EOS token when it has none)."""
    from transformers import AutoTokenizer

    base = resolve_base_model(recipe.model.base, recipe.model.revision)  # fails in one line when it cannot load
    tokenizer = AutoTokenizer.from_pretrained(base.path, revision=base.revision, trust_remote_code=recipe.model.trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"The tokenizer of {recipe.model.base} has neither a padding nor an EOS token; set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def read_pairs(recipe: recipes.Recipe) -> tuple[datasets.Dataset, datasets.Dataset | None, str, list[str] | None]:
    """Raw pairs of the recipe: (train, eval or None, output kind, label names or None to infer)."""
    data = recipe.data
    if data.task is not None:
        task = get_task(data.task, **data.task_options)
        return task.to_dataset("train"), task.to_dataset("test"), task.output_kind, task.labels()
    columns = {"input_column": data.input_column, "output_column": data.output_column, "skip_bad_rows": data.skip_bad_rows}
    train_pairs = load_pairs(data.train_file, **columns)
    eval_pairs = load_pairs(data.eval_file, **columns) if data.eval_file else None
    if text_output(recipe) is not None:  # free-text answers through the LM: nothing to line up
        return train_pairs, eval_pairs, "text", None
    output_kind = data.output_kind or guess_output_kind(train_pairs, str(data.train_file), skip_bad_rows=data.skip_bad_rows)
    if output_kind == "aligned":  # every row must line up; a row that does not is named (or skipped), never trained on
        train_pairs = aligned_rows(train_pairs, str(data.train_file), data.skip_bad_rows)
        eval_pairs = aligned_rows(eval_pairs, str(data.eval_file), data.skip_bad_rows) if eval_pairs is not None else None
    return train_pairs, eval_pairs, output_kind, None


# A file whose rows line up cell for cell except for a few is aligned data with bad rows, not a label task.
ALIGNED_MAJORITY = 0.9


def _misaligned(pairs: datasets.Dataset) -> list[int]:
    """Indices of the rows whose output has another number of whitespace-separated cells than their input."""
    return [index for index, (i, o) in enumerate(zip(pairs["input"], pairs["output"])) if len(i.split()) != len(o.split())]


def guess_output_kind(pairs: datasets.Dataset, where: str = "the pairs", *, skip_bad_rows: bool = False) -> str:
    """`aligned` when the outputs line up with their inputs cell for cell (and have more than one cell), else `label`.

    When nearly all rows line up (`ALIGNED_MAJORITY`) but a few do not, that is aligned data with bad rows:
    a `DataError` names them (with `skip_bad_rows` the kind is `aligned` and `aligned_rows` drops them),
    rather than a silent switch to one class per whole output string.
    """
    bad = _misaligned(pairs)
    if not any(len(output.split()) > 1 for output in pairs["output"]):
        return "label"
    if not bad:
        return "aligned"
    if len(bad) > (1 - ALIGNED_MAJORITY) * len(pairs):
        return "label"
    if skip_bad_rows:
        return "aligned"
    raise DataError(
        f"{where}: {len(pairs) - len(bad)} of {len(pairs)} rows have one output cell per input cell, but {_rows(bad)} "
        "do not. Fix or remove those rows, or set data.skip_bad_rows=true to skip them; if each whole output is one "
        "class label, set data.output_kind=label."
    )


def aligned_rows(pairs: datasets.Dataset, where: str, skip_bad_rows: bool) -> datasets.Dataset:
    """`pairs` whose every output lines up with its input; misaligned rows are an error naming them, or skipped."""
    bad = _misaligned(pairs)
    if not bad:
        return pairs
    if not skip_bad_rows:
        raise DataError(
            f"{where}: {_rows(bad)} {'has' if len(bad) == 1 else 'have'} another number of output cells than input cells; "
            "aligned outputs need one output cell per whitespace-separated input cell. Fix or remove "
            f"{'it' if len(bad) == 1 else 'them'}, or set data.skip_bad_rows=true to skip {'it' if len(bad) == 1 else 'them'}."
        )
    logger.warning("%s: skipped %s (another number of output cells than input cells).", where, _rows(bad))
    keep = sorted(set(range(len(pairs))) - set(bad))
    return pairs.select(keep)


def _rows(indices: list[int]) -> str:
    """`row 4` or `rows 4, 9, 12 and 3 more` (1-based, in the order read)."""
    shown = ", ".join(str(index + 1) for index in indices[:5])
    more = f" and {len(indices) - 5} more" if len(indices) > 5 else ""
    return f"row {shown}" if len(indices) == 1 else f"rows {shown}{more}"


def text_output(recipe: recipes.Recipe) -> str | None:
    """The recipe's LM output path (`reasoner.output` lm_head or latent_prefix), or None for the label outputs."""
    output = recipe.reasoner.get("output")
    return output if output in LM_OUTPUTS else None


def prepare_data(recipe: recipes.Recipe, tokenizer: Any) -> PreparedData:
    """Read, check and tokenize the recipe's data (labels from all splits; max_length from the data when unset)."""
    if text_output(recipe) is not None:
        return prepare_text_data(recipe, tokenizer)
    train_pairs, eval_pairs, output_kind, label_names = read_pairs(recipe)
    if output_kind == "text":
        raise recipes.RecipeError(
            f"Task {recipe.data.task!r} answers in free text (output kind 'text': an answer need not line up with the input), "
            "which the label heads cannot write. Train it through a causal LM: reasoner.output=lm_head (or latent_prefix) "
            "with a causal LM as model.base, e.g. packaged:SmolLM2-135M-Instruct (see recipes/arc.yaml)."
        )
    if output_kind not in ("aligned", "label"):
        raise recipes.RecipeError(f"data.output_kind={output_kind!r} is not supported by the trainer yet; use 'aligned' or 'label'.")
    if label_names is None:
        every_split = datasets.concatenate_datasets([train_pairs, eval_pairs]) if eval_pairs is not None else train_pairs
        label_names = infer_label_names(every_split, output_kind)
    encoder = PairEncoder(tokenizer, output_kind, label_names, max_length=recipe.data.max_length)
    train_set = encoder.encode_dataset(train_pairs, desc="Tokenizing train")
    eval_set = encoder.encode_dataset(eval_pairs, desc="Tokenizing eval") if eval_pairs is not None else None
    lengths = [len(ids) for ids in train_set["input_ids"]] + ([len(ids) for ids in eval_set["input_ids"]] if eval_set else [])
    max_length = recipe.data.max_length or max(lengths)
    encoder.max_length = max_length
    return PreparedData(train_set, eval_set, encoder, output_kind, label_names, max_length)


def prepare_text_data(recipe: recipes.Recipe, tokenizer: Any) -> PreparedData:
    """Tokenize text pairs for an LM output path with `TextPairEncoder` (answers are token ids of the base LM).

    The pairs come from data.train_file / data.eval_file, or from a built-in task (its train and test
    splits): a task's output is text like any file's, so e.g. ARC's answer grids go through the same encoder.
    """
    output = text_output(recipe)
    data = recipe.data
    if data.task is not None:
        train_pairs, eval_pairs, _, _ = read_pairs(recipe)
    else:
        columns = {"input_column": data.input_column, "output_column": data.output_column, "skip_bad_rows": data.skip_bad_rows}
        train_pairs = load_pairs(data.train_file, **columns)
        eval_pairs = load_pairs(data.eval_file, **columns) if data.eval_file else None
    slots = recipe.reasoner_config(output=output).answer_slots
    # Without data.max_length every prompt is accepted, and max_length becomes the longest one.
    encoder = TextPairEncoder(tokenizer, output, num_slots=slots, max_length=data.max_length or 1_000_000)

    train_set = encoder.encode_dataset(train_pairs, desc="Tokenizing train")
    eval_set = encoder.encode_dataset(eval_pairs, desc="Tokenizing eval") if eval_pairs is not None else None
    lengths = [len(ids) for ids in train_set["input_ids"]] + ([len(ids) for ids in eval_set["input_ids"]] if eval_set else [])
    encoder.max_length = data.max_length or max(lengths)
    return PreparedData(train_set, eval_set, encoder, output, [], encoder.max_length)


def build_model(recipe: recipes.Recipe, data: PreparedData) -> LatentReasonerModel:
    """A fresh reasoner on the recipe's base model, sized for the data (labels, max length, output path)."""
    if data.output_kind in LM_OUTPUTS:
        config = recipe.reasoner_config(max_length=data.max_length, output=data.output_kind)
    else:
        output = "token_classification" if data.output_kind == "aligned" else "sequence_classification"
        config = recipe.reasoner_config(
            num_labels=len(data.label_names), label_names=list(data.label_names), max_length=data.max_length, output=output
        )
    set_seed(recipe.training.seed)  # the same initial weights in every process and every run
    return attach_reasoner(
        recipe.model.base,  # a packaged: name is recorded as the Hub id it copies
        config,
        revision=recipe.model.revision,
        trust_remote_code=recipe.model.trust_remote_code,
        dtype=recipe.model.dtype,
        lora=dict(recipe.model.lora) if recipe.model.lora is not None else None,
    )


def with_features(model: LatentReasonerModel, dataset: datasets.Dataset | None, recipe: recipes.Recipe) -> datasets.Dataset | None:
    """Add cached backbone features as `recipe.training` asks (see `latentreason.features.cached_features`)."""
    return cached_features(model, dataset, recipe.training)


def train_recipe(recipe: recipes.Recipe, *, resume: bool = False, stop_after_steps: int | None = None) -> TrainResult:
    """Train what a recipe describes and write the run folder `recipe.training.output_dir`.

    Example:
        >>> recipe = recipes.load_recipe("recipes/sort_words.yaml", ["training.max_steps=20"])   # doctest: +SKIP
        >>> result = train_recipe(recipe)                                                # doctest: +SKIP
        >>> result.eval_results["per_step"]                                              # doctest: +SKIP
    """
    # One run per output folder: a second run into a folder a live run holds stops here, before it reads anything.
    holding = hold_output_dir(recipe.training.output_dir) if PartialState().is_main_process else contextlib.nullcontext()
    with holding:
        return _train_recipe(recipe, resume=resume, stop_after_steps=stop_after_steps)


def _train_recipe(recipe: recipes.Recipe, *, resume: bool, stop_after_steps: int | None) -> TrainResult:
    tokenizer = load_tokenizer(recipe)
    data = prepare_data(recipe, tokenizer)
    model = build_model(recipe, data)
    train_set = torch_format(with_features(model, data.train, recipe))
    eval_set = torch_format(with_features(model, data.eval, recipe))
    result = train(
        model,
        train_set,
        recipe.training,
        collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id),
        eval_dataset=eval_set,
        eval_steps=recipe.eval.steps,
        eval_halt=recipe.eval.halt,
        eval_batch_size=recipe.eval.batch_size,
        resume=resume,
        stop_after_steps=stop_after_steps,
    )
    if result.finished and PartialState().is_main_process:
        output_dir = recipe.training.output_dir
        model.save_pretrained(output_dir, eval_results=result.eval_results, state_dict=result.adapter_state_dict)
        output_kind = None if data.output_kind in LM_OUTPUTS else data.output_kind  # the LM paths are named by reasoner.output
        resolved = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, output_kind=output_kind, max_length=data.max_length))
        resolved.save(os.path.join(output_dir, recipes.RECIPE_NAME))
    return result


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
                 seed: int = 0) -> dict[str, Any]:
    """Evaluate a run on its own test data (the task's test split or `data.eval_file`) or on `data_file`.

    `trajectories`, `noise`, `select`, `seed`: test-time breadth, as in `latentreason.training.evaluate`.

    Writes `eval_results.json` into the run folder (`eval_results_<file name>.json` for another file).
    `halt_threshold` overrides the saved one (see `load_run`); the halting curve covers the others.
    """
    run = load_run(run_dir, halt_threshold=halt_threshold)
    recipe = run.recipe
    if data_file is not None:
        pairs = load_pairs(data_file, input_column=recipe.data.input_column, output_column=recipe.data.output_column)
        name = f"eval_results_{os.path.splitext(os.path.basename(data_file))[0]}.json"
    else:
        _, pairs, _, _ = read_pairs(recipe)
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
        trajectories=trajectories, noise=noise, select=select, seed=seed,
    )
    if accelerator.is_main_process:
        with open(os.path.join(run_dir, name), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2, sort_keys=True)
    return results


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
