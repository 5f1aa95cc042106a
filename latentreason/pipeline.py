"""From a recipe to a trained run folder: what `latentreason train` does.

    train_recipe(recipe)          data -> tokenizer -> PairEncoder -> feature cache -> train -> OUTPUT_DIR

`latentreason.prepare` reads and encodes the recipe's data; `latentreason.inference` reads a run
folder back (`load_run`, `evaluate_run`, `predict`).

A run folder holds the adapter written by `model.save_pretrained` (config with the label names,
safetensors weights of the EMA, model card, eval_results.json), `recipe.yaml` (the recipe with the
data encoding filled in: output kind and max length; the tokenizer comes from the base model) and
`checkpoints/` for `--resume`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from typing import Any

import datasets
from accelerate import PartialState
from accelerate.utils import set_seed

from . import recipe as recipes
from .config import LM_OUTPUTS
from .data import (
    collate,
)
from .feature_storage import decoded
from .features import cached_features, to_process_device
from .lock import hold_output_dir
from .model import LatentReasonerModel, attach_reasoner
from .prepare import PreparedData, load_tokenizer, prepare_data
from .training.halting import held_out_count
from .training.layer_probe import choose_layer
from .training.loop import TrainResult, train

logger = logging.getLogger(__name__)


def build_model(recipe: recipes.Recipe, data: PreparedData) -> LatentReasonerModel:
    """A fresh reasoner on the recipe's base model, sized for the data (labels, max length, output path)."""
    if data.output_kind in LM_OUTPUTS:
        config = recipe.reasoner_config(max_length=data.max_length, output=data.output_kind, num_answer_slots=data.answer_slots)
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
        device_map=recipe.model.device_map,
        offload_folder=recipe.model.offload_folder,
        max_memory=recipe.model.max_memory,
    )


# The LM output paths have no per-cell labels to probe with: they read the layer at this fraction of the
# depth (8 of SmolLM2-135M's 30 blocks, the layer the text demo reads).
LM_LAYER_FRACTION = 0.27


def choose_backbone_layer(model: LatentReasonerModel, data: PreparedData, recipe: recipes.Recipe) -> int:
    """`model.layer: auto`: the layer a quick probe on the training rows scores best (see training.layer_probe)."""
    main = PartialState().is_main_process
    num_layers = model.backbone.num_layers
    if data.output_kind in LM_OUTPUTS:
        layer = max(1, round(LM_LAYER_FRACTION * num_layers))
        if main:
            print(f"model.layer=auto: layer {layer} of {num_layers} (the text outputs read about a quarter of the depth; "
                  "set model.layer to choose another)", flush=True)
        return layer
    choice = choose_layer(model.backbone, data.train, len(data.label_names), pooled=data.output_kind == "label", seed=recipe.training.seed)
    if main:
        print(choice.describe(), flush=True)
    return choice.layer


def fit_batch_to_data(recipe: recipes.Recipe, rows: int) -> recipes.Recipe:
    """The recipe with `training.batch_size` lowered to what `rows` training examples can fill, logged; an error if not one.

    Recipes default to batches sized for a few thousand rows; a smaller file trains in batches of all of its
    rows (those left after `training.calibrate_halting` holds its share out), rounded down to a multiple of
    processes x gradient_accumulation_steps so every process gets an equal slice. The saved recipe keeps the
    batch size used, so a resumed run reads the same.
    """
    training = recipe.training
    held_out = held_out_count(rows, training.calibrate_halting)
    usable = rows - held_out
    if usable >= training.batch_size:
        return recipe
    split = PartialState().num_processes * training.gradient_accumulation_steps
    fitted = usable // split * split
    if fitted < 1:
        after = f" ({usable} once `training.calibrate_halting` holds {held_out} out)" if held_out else ""
        raise recipes.RecipeError(
            f"The training set has {rows} examples{after}, too few for one batch split over {split} processes x gradient "
            "accumulation steps: add examples" + (" or set `training.calibrate_halting=0`." if held_out else ".")
        )
    if PartialState().is_main_process:
        print(f"training.batch_size={training.batch_size} is more than the {usable} training rows: training in batches of {fitted} "
              "(set training.batch_size to choose)", flush=True)
    return dataclasses.replace(recipe, training=dataclasses.replace(training, batch_size=fitted))


def with_features(model: LatentReasonerModel, dataset: datasets.Dataset | None, recipe: recipes.Recipe) -> Any:
    """What the trainer reads: `dataset` as tensors, with cached backbone features as `recipe.training` asks
    (see `latentreason.features.cached_features`), decoded to float32 whatever their storage dtype."""
    return decoded(cached_features(model, dataset, recipe.training))


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
    if PartialState().is_main_process:
        print("Data:\n" + "\n".join(f"  {line}" for line in data.summary), flush=True)
    recipe = fit_batch_to_data(recipe, len(data.train))  # before the backbone spends minutes on features
    model = build_model(recipe, data)
    to_process_device(model)  # the layer probe and the feature extraction run where training will
    if recipe.model.layer == "auto":
        layer = choose_backbone_layer(model, data, recipe)
        model.read_backbone_layer(layer)
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, layer=layer))  # saved as chosen
    train_set = with_features(model, data.train, recipe)
    eval_set = with_features(model, data.eval, recipe)
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
        reasoner = {**recipe.reasoner, **({"num_answer_slots": data.answer_slots} if data.answer_slots is not None else {})}
        resolved = dataclasses.replace(recipe, data=dataclasses.replace(recipe.data, output_kind=output_kind, max_length=data.max_length),
                                       reasoner=reasoner)
        resolved.save(os.path.join(output_dir, recipes.RECIPE_NAME))
    return result
