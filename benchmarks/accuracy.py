"""Accuracy: what the recursion buys, against five comparators on the same frozen backbone.

The six models of issue 8, all `LatentReasonerModel`s (same input projection, same output head,
same training loop `latentreason.training.train`); only the module between projection and head differs:

    1. linear       frozen backbone + linear head (projection and head, no norm between: a factored linear map)
    2. one_pass     + the reasoner's net (same blocks, same parameters), applied once
    3. deep_stack   + T x (n + 1) independent copies of the net, applied once each: the reasoner's
                    effective depth T x (n + 1) x layers without weight sharing (what depth alone buys)
    4. lora_linear  backbone fine-tuned with LoRA + linear head (no feature cache possible)
    5. embeddings   the reasoner alone on learned token embeddings, no LLM (TRM as published)
    6. reasoner     frozen backbone + latentreason's recursive reasoner

Each is trained under two budgets, both reported:

    data   the same examples x epochs for all. A one-step comparator does one optimizer step per
           batch; the reasoner does up to N_sup (deep supervision), so it gets more optimizer steps.
    time   the same wall-clock seconds of training for all (`time_budget_seconds`). The training
           loop has no time limit (its learning-rate schedule needs the step count up front), so
           the seconds become steps: just before the time-budget runs, each comparator's seconds
           per optimizer step are measured under the machine's present load (`seconds_per_step`:
           two short trainings, their difference cancels the start-up cost), and it trains for
           budget / that many steps. Measuring every rate within the same few minutes keeps the
           budget fair when the machine's load drifts over the hour a benchmark takes (rates read
           off data-budget runs an hour apart were off by up to 4x here). The seconds each run
           then actually took are recorded next to the budget. A data-budget run whose step count
           is within 15% of the budget's is reused for it. With `time_budget_seconds="reasoner"`
           the budget is the reasoner's data-budget steps at its measured seconds per step.

The data comes from a built-in task (`latentreason.tasks`) through the same functions the
`latentreason train` pipeline uses (`prepare_data`, `with_features`); the frozen backbone's
features are cached once and shared by every comparator that reads them (all but `lora_linear`,
whose backbone trains, and `embeddings`, which has no backbone). Evaluation is
`latentreason.training.evaluate` on the EMA weights: per-cell accuracy and exact match after each
refinement step 1..N_sup, and with halting (mean steps used).

Over 400 lines, and kept whole: the comparators, their settings and the presets of five tasks, and the two
budgets with `--reuse` are one concept (train and score the comparators alike). The section of
docs/benchmarks.md that reads its results is `accuracy_render.py` (`render` here is that one).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoConfig

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.data import collate, torch_format
from latentreason.pipeline import with_features
from latentreason.prepare import PreparedData, load_tokenizer, prepare_data
from latentreason.reasoner import Carry, Net, Reasoner, ReasonerOutput
from latentreason.recipe import Recipe, resolve_base
from latentreason.tasks import get_task
from latentreason.training import TrainingConfig, evaluate, train

from .accuracy_render import render as render  # the section of docs/benchmarks.md, in its own module for length
from .harness import load_average, log, machine_info, training_run

# A data-budget run whose step count is within this fraction of the time budget's stands for the time budget too
# (retraining for a few percent more or fewer steps changes nothing but the machine's load).
REUSE_TOLERANCE = 0.15
# The time budget's seconds per step: the shorter of its two timed trainings takes this many optimizer steps.
CALIBRATION_STEPS = 8
TIME_BUDGET_METHOD = ("steps = budget seconds / the comparator's seconds per optimizer step, measured just before its "
                      "time-budget run (two short trainings, their difference cancels the start-up cost)")
COMPARATORS = ("linear", "one_pass", "deep_stack", "lora_linear", "embeddings", "reasoner")
# `slots`: the reasoner's net and carry with T=1, n=1, N_sup=1 (its capacity without the recursion); opt-in.
ALL_COMPARATORS = (*COMPARATORS, "slots")
BUDGETS = ("data", "time")


class DepthStack(nn.Module):
    """`depth` independent copies of the reasoner's net, applied once each, in order; no recursion.

    depth 0 is the identity (a linear head then reads the projected features directly), depth 1
    is a one-pass transformer head with the reasoner's blocks. It takes the `Reasoner`'s call
    signature so it can stand in its place inside a `LatentReasonerModel`.
    """

    def __init__(self, config: ReasonerConfig, depth: int) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleList(Net(config) for _ in range(depth))

    make_context = Reasoner.make_context  # the same padding mask and rotary tables as the reasoner

    def forward(self, x: torch.Tensor, carry: Carry | None = None, mask: torch.Tensor | None = None) -> ReasonerOutput:
        context = self.make_context(x, mask)
        h = x
        for net in self.nets:
            h = net(h, context)
        halt = x.new_full((x.shape[0],), torch.inf)  # nothing to refine: "halt" after the first step
        return ReasonerOutput(answer=h, halt_logits=halt, carry=Carry(h.detach(), h.detach()))


@dataclass(frozen=True)
class AccuracySettings:
    """The task, the reasoner the comparators share, and the training budgets."""

    backbone: str = "packaged:all-MiniLM-L6-v2"  # a `model.base` of a recipe: the frozen backbone for all
    task: str = "sudoku"
    task_options: dict[str, Any] = field(default_factory=lambda: {"size": 4, "givens": 6, "num_train": 1024, "num_test": 256, "seed": 0})
    # Task options that differ for the test split (e.g. {"min_length": 32}: train on 1..32 steps, test on exactly 32);
    # the test split is then drawn from the task with these options, apart from the training split.
    test_task_options: dict[str, Any] = field(default_factory=dict)
    # `TrainingConfig` fields every comparator trains with (e.g. {"length_curriculum": 0.5}); the ablation's
    # per-variant changes go over these.
    training: dict[str, Any] = field(default_factory=dict)
    hidden_size: int = 64
    num_heads: int = 4
    mixer: str = "mlp"  # TRM's choice for small fixed grids (as recipes/sudoku_4x4.yaml)
    backbone_layer: int = -1  # the backbone's hidden state every comparator reads (-1: the last)
    # A comparator's own mixer where it differs from `mixer` (e.g. {"reasoner": "conv"}: the recursion with a local
    # mixer, the one-pass heads with attention's global reach).
    comparator_mixers: dict[str, str] = field(default_factory=dict)
    latent_steps: int = 2  # n
    cycles: int = 2  # T
    supervision_steps: int = 8  # N_sup, in training and at test
    lora_rank: int = 8
    epochs: int = 2  # the data budget: passes over the training set, the same for every comparator
    batch_size: int = 64
    learning_rate: float = 1e-3
    warmup_steps: int = 10
    # The time budget: training seconds per comparator; "reasoner": the reasoner's data-budget steps at its
    # seconds per step measured now (every comparator gets the reasoner's wall-clock); None: data budget only.
    time_budget_seconds: float | Literal["reasoner"] | None = 30.0
    calibration_seconds: float = 10.0  # how long each comparator's seconds-per-step measurement aims to train (the time budget)
    eval_batch_size: int = 256
    # One thread: at these sizes a step is hundreds of small ops, and on a shared, oversubscribed machine
    # every multi-threaded op waits for a descheduled worker (measured: 8 one_pass steps 1.5 s on 1 thread,
    # ~20 s on 2 at load 6). All comparators run alike, so the comparison stays fair.
    threads: int | None = 1
    comparators: tuple[str, ...] = COMPARATORS
    seed: int = 0  # the weights' initialisation and the data order (the task's own seed is in task_options)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.comparators) - set(ALL_COMPARATORS))
        if unknown:
            raise ValueError(f"Unknown comparator(s) {unknown} in AccuracySettings.comparators; choose from {ALL_COMPARATORS}.")
        unknown = sorted(set(self.training) - {spec.name for spec in dataclasses.fields(TrainingConfig)})
        if unknown:
            raise ValueError(f"Unknown `training` field(s) {unknown}: each must be a field of latentreason's TrainingConfig "
                             "(see `latentreason train --help`).")
        budget = self.time_budget_seconds
        if budget == "reasoner":
            if "reasoner" not in self.comparators:
                raise ValueError('time_budget_seconds="reasoner" needs the "reasoner" comparator in `comparators`.')
        elif budget is not None and (isinstance(budget, str) or budget <= 0):
            raise ValueError(f'`time_budget_seconds` must be > 0, "reasoner" or None, got {budget!r}.')


PRESETS: dict[str, AccuracySettings] = {
    # 4x4 Sudoku, 6 givens. 12 epochs of 1024 puzzles = 1536 optimizer steps for the reasoner (N_sup=8
    # per batch), which is where it has overtaken the one-pass head in a measured check; at 256 steps
    # it is still at chance (deep supervision spends N_sup steps per batch, and the depth starts slow).
    # The time budget gives every comparator the seconds of the reasoner's own data-budget run.
    # About 35 minutes on one idle core.
    "full": AccuracySettings(
        task_options={"size": 4, "givens": 6, "num_train": 1024, "num_test": 256, "seed": 0},
        supervision_steps=8, epochs=12, time_budget_seconds="reasoner",
    ),
    "quick": AccuracySettings(epochs=1),
    "tiny": AccuracySettings(
        task_options={"size": 4, "givens": 8, "num_train": 16, "num_test": 8, "seed": 0}, hidden_size=16, num_heads=2,
        latent_steps=1, cycles=2, supervision_steps=3, lora_rank=2, epochs=1, batch_size=8, warmup_steps=1, eval_batch_size=8,
        time_budget_seconds=1.0, calibration_seconds=0.2,
    ),
}

# Running parity of 8 bits (output bit i = XOR of bits 0..i): a task whose serial depth grows with its length.
# The attention mixer: in a measured check the recursive reasoner with the mlp mixer stayed at chance on
# parity (0.55 of bits after 1536 steps) while with attention it reached 1.00 exact after 2 refinement steps.
PARITY_PRESETS: dict[str, AccuracySettings] = {
    # 6 epochs of 2000 strings = 1536 optimizer steps for the reasoner; the time budget gives every comparator the
    # reasoner's seconds. About an hour on one idle core (`--reuse` keeps the data-budget runs of an earlier result).
    "full": AccuracySettings(
        task="parity", task_options={"length": 8, "num_train": 2000, "num_test": 256, "seed": 0}, mixer="attention",
        supervision_steps=8, epochs=6, time_budget_seconds="reasoner",
    ),
    "quick": AccuracySettings(task="parity", task_options={"length": 8, "num_train": 512, "num_test": 128, "seed": 0},
                              mixer="attention", epochs=1),
    "tiny": dataclasses.replace(PRESETS["tiny"], task="parity", task_options={"length": 4, "num_train": 16, "num_test": 8, "seed": 0},
                                mixer="attention"),
}


# 6x6 Sudoku, 20 givens (16 blanks): the full Sudoku budget (1024 puzzles, 12 epochs, N_sup=8), every comparator,
# both budgets. About 1.5 hours on one idle core (`--reuse` keeps the data-budget runs of an earlier result).
SUDOKU6_PRESETS: dict[str, AccuracySettings] = {
    "full": dataclasses.replace(PRESETS["full"], task_options={"size": 6, "givens": 20, "num_train": 1024, "num_test": 256, "seed": 0}),
    "quick": dataclasses.replace(PRESETS["quick"], task_options={"size": 6, "givens": 20, "num_train": 1024, "num_test": 256, "seed": 0},
                                 time_budget_seconds=None),
    "tiny": dataclasses.replace(PRESETS["tiny"], task_options={"size": 6, "givens": 28, "num_train": 16, "num_test": 8, "seed": 0},
                                time_budget_seconds=None),
}

# 7x7 mazes (mark the shortest path): a flood fill, one cell further per step of propagation. Every comparator,
# both budgets.
MAZE_PRESETS: dict[str, AccuracySettings] = {
    # 8 epochs of 1000 mazes = 960 optimizer steps for the reasoner. About 1.5 hours on one idle core
    # (`--reuse` keeps the data-budget runs of an earlier result).
    "full": AccuracySettings(
        task="maze", task_options={"size": 7, "num_train": 1000, "num_test": 128, "seed": 0}, mixer="mlp",
        supervision_steps=8, epochs=8, time_budget_seconds="reasoner",
    ),
    "quick": AccuracySettings(task="maze", task_options={"size": 7, "num_train": 256, "num_test": 64, "seed": 0}, epochs=1,
                              time_budget_seconds=None, comparators=("linear", "one_pass", "reasoner")),
    "tiny": dataclasses.replace(PRESETS["tiny"], task="maze", task_options={"size": 5, "num_train": 16, "num_test": 8, "seed": 0},
                                time_budget_seconds=None, comparators=("linear", "one_pass", "reasoner")),
}


# Sorting 6 number words (0..49): the control. Ranking is one round of parallel comparisons for attention, so
# depth should not help here, and a one-pass head is expected to match or beat the recursion. The attention mixer
# (as recipes/sort_words.yaml), every comparator, both budgets.
SORT_PRESETS: dict[str, AccuracySettings] = {
    # 16 epochs of 2000 lists = about 2000 optimizer steps for the reasoner (N_sup=4 per batch); at 4 epochs no
    # comparator sorted a whole list under the data budget. About 40 minutes on one idle core.
    "full": AccuracySettings(
        task="sort_words", task_options={"length": 6, "max_value": 49, "num_train": 2000, "num_test": 256, "seed": 0},
        mixer="attention", supervision_steps=4, epochs=16, time_budget_seconds="reasoner",
    ),
    "quick": AccuracySettings(task="sort_words", task_options={"length": 6, "max_value": 49, "num_train": 512, "num_test": 64, "seed": 0},
                              mixer="attention", supervision_steps=4, epochs=1, time_budget_seconds=None,
                              comparators=("linear", "one_pass", "reasoner")),
    "tiny": dataclasses.replace(PRESETS["tiny"], task="sort_words", task_options={"length": 3, "max_value": 9, "num_train": 16, "num_test": 8, "seed": 0},
                                mixer="attention", time_budget_seconds=None, comparators=("linear", "one_pass", "reasoner")),
}


# --- data -----------------------------------------------------------------------------------------
def recipe_for(settings: AccuracySettings) -> Recipe:
    """The recipe whose data functions the benchmark reuses (task, backbone, feature cache)."""
    recipe = Recipe()
    recipe.model.base = settings.backbone
    recipe.data.task = settings.task
    recipe.data.task_options = dict(settings.task_options)
    return recipe


def load_data(settings: AccuracySettings) -> tuple[Recipe, PreparedData, int]:
    """The task's train and test sets, tokenized for the backbone; returns (recipe, data, pad token id)."""
    recipe = recipe_for(settings)
    tokenizer = load_tokenizer(recipe)
    data = prepare_data(recipe, tokenizer)
    if settings.test_task_options:
        test_task = get_task(settings.task, **{**settings.task_options, **settings.test_task_options})
        data = dataclasses.replace(data, eval=data.encoder.encode_dataset(test_task.to_dataset("test"), desc="Tokenizing eval"))
    return recipe, data, tokenizer.pad_token_id


def feature_sets(model: LatentReasonerModel, data: PreparedData, recipe: Recipe) -> tuple[Any, Any]:
    """The (train, eval) sets with `model`'s frozen backbone features cached in them (the backbone runs once per example)."""
    return torch_format(with_features(model, data.train, recipe)), torch_format(with_features(model, data.eval, recipe))


# --- the comparators ------------------------------------------------------------------------------
def reasoner_config(settings: AccuracySettings, data: PreparedData | None = None, **changes: Any) -> ReasonerConfig:
    """The shared `ReasonerConfig`, sized for the data (labels, max length) when given."""
    sized = {} if data is None else {"num_labels": len(data.label_names), "label_names": list(data.label_names), "max_length": data.max_length}
    config = ReasonerConfig(hidden_size=settings.hidden_size, num_heads=settings.num_heads, mixer=settings.mixer,
                            latent_steps=settings.latent_steps, cycles=settings.cycles, backbone_layer=settings.backbone_layer,
                            max_supervision_steps=settings.supervision_steps, **sized)
    return config.replace(**changes)


def build(name: str, settings: AccuracySettings, data: PreparedData) -> LatentReasonerModel:
    """One comparator, by name (see `COMPARATORS`), on a freshly loaded backbone, sized for `data`."""
    if name not in ALL_COMPARATORS:
        raise ValueError(f"Unknown comparator {name!r}; choose from {ALL_COMPARATORS}.")
    torch.manual_seed(settings.seed)
    settings = dataclasses.replace(settings, mixer=settings.comparator_mixers.get(name, settings.mixer))
    base = resolve_base(settings.backbone)
    one_shot = dict(halting=False, max_supervision_steps=1)  # nothing to refine: one step, no halting head in the loss
    if name in ("linear", "lora_linear"):
        lora = {"rank": settings.lora_rank, "target_modules": "all-linear"} if name == "lora_linear" else None
        model = attach_reasoner(base, reasoner_config(settings, data, feature_norm=False, **one_shot), lora=lora)
        model.reasoner = DepthStack(model.config, depth=0)
    elif name in ("one_pass", "deep_stack"):
        config = reasoner_config(settings, data)
        model = attach_reasoner(base, config.replace(**one_shot))
        model.reasoner = DepthStack(model.config, depth=1 if name == "one_pass" else config.cycles * (config.latent_steps + 1))
    elif name == "slots":
        model = attach_reasoner(base, reasoner_config(settings, data, cycles=1, latent_steps=1, **one_shot))
    elif name == "embeddings":  # the same reasoner on learned token embeddings of the backbone's vocabulary, no backbone
        vocab_size = AutoConfig.from_pretrained(base).vocab_size
        model = LatentReasonerModel.from_config(reasoner_config(settings, data).replace(input="token_embeddings", vocab_size=vocab_size))
    else:
        model = attach_reasoner(base, reasoner_config(settings, data))
    return model


def builders(data: PreparedData) -> dict[str, Callable[[AccuracySettings], LatentReasonerModel]]:
    """A builder per comparator, for the data given."""
    return {name: functools.partial(build, name, data=data) for name in ALL_COMPARATORS}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def layers_per_step(name: str, model: LatentReasonerModel) -> int:
    """Transformer layers one supervision step applies (0 for a linear head)."""
    if isinstance(model.reasoner, DepthStack):
        return len(model.reasoner.nets) * model.config.num_layers
    return model.config.effective_depth


# --- training and evaluation ----------------------------------------------------------------------
def training_config(settings: AccuracySettings, output_dir: str, max_steps: int | None, **changes: Any) -> TrainingConfig:
    """The `TrainingConfig` every comparator shares (with `settings.training`); `changes` override fields (the ablation
    benchmark's knobs)."""
    return TrainingConfig(
        output_dir=output_dir, seed=settings.seed, learning_rate=settings.learning_rate, warmup_steps=settings.warmup_steps,
        batch_size=settings.batch_size, epochs=settings.epochs, max_steps=max_steps, checkpoint_every=None,
        report_to="none", progress_bar=False, log_every=10**9, **{**settings.training, **changes},
    )


def train_and_evaluate(model: LatentReasonerModel, settings: AccuracySettings, train_set: Any, eval_set: Any, pad_token_id: int,
                       max_steps: int | None = None, training_changes: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train `model` (for `settings.epochs`, or `max_steps` optimizer steps), then evaluate its EMA weights.

    Returns the evaluation of `latentreason.training.evaluate` plus the training's optimizer steps,
    seconds (training only, evaluation excluded) and the load average at its end.
    """
    collate_fn = functools.partial(collate, pad_token_id=pad_token_id)
    with tempfile.TemporaryDirectory(prefix="bench_accuracy_") as output_dir:
        start = time.perf_counter()
        config = training_config(settings, output_dir, max_steps, **(training_changes or {}))
        result = train(model, train_set, config, collate_fn=collate_fn)
        train_seconds = time.perf_counter() - start
    load = load_average()
    state = model.state_dict()
    unknown = sorted(set(result.adapter_state_dict) - set(state))
    if unknown:
        raise RuntimeError(f"The trained weights name tensors the model lacks: {unknown[:5]}")
    model.load_state_dict(result.adapter_state_dict, strict=False)  # the EMA weights (LoRA's included), as train() saves them
    accelerator = Accelerator()
    loader = accelerator.prepare(DataLoader(eval_set, batch_size=settings.eval_batch_size, collate_fn=collate_fn))
    evaluation = evaluate(model, loader, accelerator, model.config.max_supervision_steps, halt=True)
    return {
        "optimizer_steps": result.global_step,
        "train_seconds": round(train_seconds, 2),
        "load_average": load,
        "accuracy": evaluation["accuracy"],
        "exact_match": evaluation["exact_match"],
        "last_cell": evaluation["last_cell"],
        "mean_steps": evaluation["mean_steps"],
        "per_step": evaluation["per_step"],
        "all_steps": evaluation["all_steps"],
        "halting_curve": evaluation["halting_curve"],
        "num_examples": evaluation["num_examples"],
    }


def timed_training(model: LatentReasonerModel, settings: AccuracySettings, train_set: Any, pad_token_id: int, steps: int) -> float:
    """Seconds `train` takes for `steps` optimizer steps of `model` (start-up included), nothing evaluated."""
    with tempfile.TemporaryDirectory(prefix="bench_rate_") as output_dir:
        start = time.perf_counter()
        train(model, train_set, training_config(settings, output_dir, steps), collate_fn=functools.partial(collate, pad_token_id=pad_token_id))
        return time.perf_counter() - start


def seconds_per_step(name: str, settings: AccuracySettings, data: PreparedData, train_set: Any, pad_token_id: int,
                     first_model: LatentReasonerModel | None = None) -> float:
    """Seconds per optimizer step of comparator `name`, under the machine's load now.

    Two trainings of fresh models: `CALIBRATION_STEPS` steps, then as many more as fill about
    `settings.calibration_seconds`; the difference of their times over the difference of their steps
    cancels the loop's start-up cost (if a burst of load makes it non-positive, the longer run's
    plain average stands in). `first_model`: a fresh build of `name` for the first training, if one is at hand.
    """
    short = timed_training(first_model or build(name, settings, data), settings, train_set, pad_token_id, CALIBRATION_STEPS)
    more = max(CALIBRATION_STEPS, min(round(settings.calibration_seconds * CALIBRATION_STEPS / short), 50 * CALIBRATION_STEPS))
    long = timed_training(build(name, settings, data), settings, train_set, pad_token_id, CALIBRATION_STEPS + more)
    marginal = (long - short) / more
    return marginal if marginal > 0 else long / (CALIBRATION_STEPS + more)


def warm_up(settings: AccuracySettings, data: PreparedData, pad_token_id: int) -> None:
    """One untimed optimizer step and evaluation: the first `train` call of a process pays seconds of
    one-time costs (lazy imports, allocator and kernel set-up) that would otherwise land on the first
    comparator's time, and so on the time budget."""
    batch = min(settings.batch_size, len(data.train))
    few = torch_format(data.train.select(range(batch)))
    train_and_evaluate(build("linear", settings, data), settings, few, torch_format(data.eval.select(range(min(8, len(data.eval))))),
                       pad_token_id, max_steps=1)


def run(settings: AccuracySettings, previous: dict[str, Any] | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train and evaluate every comparator under the data budget (and the time budget); return the JSON result.

    `previous`: an earlier result of this benchmark, complete or partial. Runs it holds for the same settings (all
    those that shape a training, see `comparable_settings`) are reused instead of trained again (see `reusable_runs`).
    `progress` is called with the result so far (marked `partial`) after every training, so an interrupted run keeps
    what it finished: `--reuse` continues it.
    """
    with training_run(settings.threads):
        return _run(settings, previous, progress)


# Fields added after results were written, with the value that reproduces how those results were trained.
LATER_FIELDS: dict[str, Any] = {"seed": 0, "backbone_layer": -1, "comparator_mixers": {}, "test_task_options": {}, "training": {}}


def with_later_fields(stored: dict[str, Any]) -> dict[str, Any]:
    """Stored `AccuracySettings` (as JSON holds them) with the fields added since filled in: an older result reads as
    it was trained."""
    return LATER_FIELDS | json.loads(json.dumps(stored))


def comparable_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings as JSON stores them, less those that choose which runs happen (or how the budget is timed), not how each trains."""
    plain = with_later_fields(settings)
    return {key: value for key, value in plain.items() if key not in ("comparators", "time_budget_seconds", "calibration_seconds")}


def reusable_runs(settings: AccuracySettings, previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The comparator entries of `previous` that were trained exactly as `settings` would train them, by name.

    A result of other settings (another task size, epochs, learning rate, ...) gives nothing. An entry's
    time-budget run is kept only where its budget equals the one this run will use (checked in `_run`).
    Kept data-budget runs are safe to mix with new ones: the time budget's rates are measured afresh
    for every comparator it trains, not read off those runs.
    """
    if not previous or comparable_settings(previous.get("settings", {})) != comparable_settings(asdict(settings)):
        return {}
    when = previous.get("machine", {}).get("date", "an earlier run")  # an entry kept already keeps its first date
    return {entry["name"]: {"reused_from": when} | entry for entry in previous.get("comparators", []) if entry.get("name") in settings.comparators}


def _run(settings: AccuracySettings, previous: dict[str, Any] | None = None,
         progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    recipe, data, pad_token_id = load_data(settings)
    plain_train, plain_eval = torch_format(data.train), torch_format(data.eval)
    cached: tuple[Any, Any] | None = None
    warmed_up = False

    def sets_for(model: LatentReasonerModel) -> tuple[Any, Any]:
        """The (train, eval) sets `model` reads: token ids where its backbone trains, else cached features
        (the backbone runs once per example, for all comparators that read it); warms up before the first training."""
        nonlocal cached, warmed_up
        if not warmed_up:
            warm_up(settings, data, pad_token_id)
            warmed_up = True
        if model.backbone_trains:
            return plain_train, plain_eval
        if cached is None:
            start = time.perf_counter()
            cached = feature_sets(model, data, recipe)
            log(f"accuracy: features cached in {time.perf_counter() - start:.1f} s")
        return cached

    reused = reusable_runs(settings, previous)
    order = settings.comparators
    comparators: dict[str, dict[str, Any]] = {}
    for name in order:
        if name in reused:
            comparators[name] = reused[name]
            log(f"accuracy: {name}: data budget reused from {reused[name]['reused_from']}")
            continue
        model = build(name, settings, data)
        entry = {
            "name": name,
            "trainable_parameters": trainable_parameters(model),
            "layers_per_step": layers_per_step(name, model),
            "cacheable_features": not model.backbone_trains,
            "supervision_steps": model.config.max_supervision_steps,
        }
        log(f"accuracy: {name} ({entry['trainable_parameters']:,d} parameters), data budget")
        entry["data"] = train_and_evaluate(model, settings, *sets_for(model), pad_token_id)
        comparators[name] = entry
        if progress is not None:
            progress(_result(settings, data, comparators, None, {}) | {"partial": True})
        log(f"accuracy: {name}: accuracy {entry['data']['accuracy']:.3f}, exact {entry['data']['exact_match']:.3f}, "
            f"{entry['data']['optimizer_steps']} steps in {entry['data']['train_seconds']:.0f} s")

    budget_seconds: float | None = None
    rates: dict[str, float] = {}  # seconds per optimizer step, measured for the time budget
    previous_time = ((previous or {}).get("budgets") or {}).get("time") or {}
    if settings.time_budget_seconds is not None:
        # Runs kept from an earlier result of the same budget need no retraining; the rest are timed now.
        keep_time = previous_time.get("method") == TIME_BUDGET_METHOD and (
            settings.time_budget_seconds == "reasoner" or previous_time.get("seconds") == settings.time_budget_seconds)
        to_train = [name for name in order if not (keep_time and "reused_from" in comparators[name] and "time" in comparators[name])]
        by_reasoner = settings.time_budget_seconds == "reasoner"
        if keep_time:  # the rates the kept runs were timed with
            rates.update({name: rate for name, rate in previous_time.get("seconds_per_step", {}).items() if name in order})
        for name in to_train:  # the reasoner's too under `by_reasoner`: the budget is its steps at its present speed
            model = build(name, settings, data)
            rates[name] = seconds_per_step(name, settings, data, sets_for(model)[0], pad_token_id, first_model=model)
            log(f"accuracy: {name}: {rates[name] * 1000:.1f} ms per optimizer step now")
        if not by_reasoner:
            budget_seconds = float(settings.time_budget_seconds)
        elif keep_time and previous_time.get("seconds"):  # the budget the kept runs had (a partial result's too)
            budget_seconds = previous_time["seconds"]
        elif "reasoner" in rates:
            budget_seconds = comparators["reasoner"]["data"]["optimizer_steps"] * rates["reasoner"]
        else:
            budget_seconds = previous_time["seconds"]  # every run it was measured against is kept
        for name in order:
            entry = comparators[name]
            if name not in to_train:
                continue  # trained for this very budget before
            if name == "reasoner" and by_reasoner:  # its time run is its data run
                entry["time"] = dict(entry["data"], estimated_steps=entry["data"]["optimizer_steps"], reused_data_run=True)
                continue
            steps = max(1, round(budget_seconds / rates[name]))
            calibration = {"estimated_steps": steps, "seconds_per_step": rates[name]}
            # A data-budget run of about the budget's step count stands for it: retraining for a few percent
            # more or fewer steps changes nothing but the machine's load.
            if abs(steps - entry["data"]["optimizer_steps"]) <= REUSE_TOLERANCE * steps:
                entry["time"] = dict(entry["data"], **calibration, reused_data_run=True)
                continue
            log(f"accuracy: {name}, time budget {budget_seconds:.0f} s = {steps} steps")
            model = build(name, settings, data)
            entry["time"] = train_and_evaluate(model, settings, *sets_for(model), pad_token_id, max_steps=steps) | calibration
            if progress is not None:
                progress(_result(settings, data, comparators, budget_seconds, rates) | {"partial": True})
    if budget_seconds is None:  # no time budget: none of a kept entry's either
        for entry in comparators.values():
            entry.pop("time", None)

    return _result(settings, data, comparators, budget_seconds, rates)


def _result(settings: AccuracySettings, data: Any, comparators: dict[str, dict[str, Any]], budget_seconds: float | None,
            rates: dict[str, float]) -> dict[str, Any]:
    """The JSON result of the comparators trained so far (all of them at the end of `_run`)."""
    data_summary = {
        "task": settings.task, "task_options": dict(settings.task_options), "output_kind": data.output_kind,
        "labels": list(data.label_names), "max_length": data.max_length, "num_train": len(data.train), "num_test": len(data.eval),
    }
    return {
        "benchmark": "accuracy",
        "machine": machine_info(),  # torch_threads: the threads the training ran on
        "settings": asdict(settings) | {"comparators": list(settings.comparators)},
        "data": data_summary,
        "budgets": {
            "data": {"epochs": settings.epochs, "examples": len(data.train), "batch_size": settings.batch_size},
            "time": {"seconds": budget_seconds, "method": TIME_BUDGET_METHOD,
                     "seconds_per_step": dict(rates)} if budget_seconds is not None else None,
        },
        "comparators": [comparators[name] for name in settings.comparators if name in comparators],
    }
