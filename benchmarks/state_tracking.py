"""State tracking: the task where fixed depth provably fails, and what the recursion and the LLM each buy.

Three parts, each over `seeds` (mean, min and max reported; one seed is not evidence):

    depth     the `permutations` task (S5, one transposition per cell, the ball's cup after each
              step) at each of `lengths`, every comparator of the accuracy benchmark plus `slots`
              (the reasoner's parameters with T=1, n=1, N_sup=1: its capacity without recursion),
              under the data and the time budget (`benchmarks.accuracy.run`, same code).
    longer    train on lengths 1..`train_length`, test at each of `long_lengths` with 1x, 2x, 4x, 8x
              the trained refinement steps (models with attention only: the mlp mixer has a fixed length).
    language  the `shell_game` in English on the frozen backbone: trained on the training phrasings,
              tested on them, on held-out phrasings (other verbs, digits, boxes and shells) and on
              games twice as long.
    language_lm  the same games and test sets with the final cup as a text answer, on a causal LM
              (SmolLM2-135M by default): the reasoner trained by the `text_pairs` recipe, its answer
              written by the LM's own head, against the LM alone prompted with solved games (few-shot).

`python -m benchmarks run state_tracking --set parts=[language_lm] --reuse` runs one part and keeps the
others' runs from the existing result (a part's runs are kept when the settings it reads are unchanged). The
depth part is hours per length and seed on a CPU: it writes its partial result after each one, and
`--set lengths=[32] --set seeds=[0] --reuse` measures the goal's length first; later runs add the rest.

The headline numbers are `last_cell` (the ball's final cup: chance is 1/5 with 5 cups) and
`exact_match` (every step of the sequence right). Goals (issue 24): at length 32, equal wall-clock,
the reasoner >= 0.9 final-state accuracy while one pass and deep stack are <= 0.4; >= 0.8 at twice
the trained length; on held-out phrasings the LM + reasoner beats the embeddings model and LoRA +
linear by >= 20 points each.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from torch.utils.data import DataLoader

from latentreason.data import PairEncoder, collate, torch_format
from latentreason.pipeline import with_features
from latentreason.tasks import get_task
from latentreason.training import evaluate, train

from . import accuracy
from .harness import as_stored, load_average, log, machine_info, training_run
from .markdown import Images

PARTS = ("depth", "longer", "language", "language_lm")
LM_COMPARATORS = ("few_shot", "reasoner")
HEADLINE = ("last_cell", "exact_match")


@dataclass(frozen=True)
class StateTrackingSettings:
    """The task, the parts to run and the shared model and training settings (`common`, as the accuracy benchmark)."""

    # The recursive comparators (reasoner, embeddings = TRM with no LLM, and the slots control) mix positions with a
    # convolution over neighbours (`mixer: conv`): the state after step i is a local function of the state after step
    # i-1, so the recursion can carry it one position further per net call, at any length. With attention (the
    # mixer before it) nothing past about 4 steps was tracked and refinement steps changed nothing (the issue-24
    # note). The one-pass comparators keep attention, whose global reach is their best chance. Layer 0 of the
    # backbone (its token embeddings): on the symbolic tasks it trained faster than layer 3 (positions 1-4 after
    # one pass over the data: 1.00 0.89 0.79 0.66 against 0.90 0.76 0.59 0.45); the language part reads layer 3.
    common: accuracy.AccuracySettings = field(default_factory=lambda: accuracy.AccuracySettings(
        task="permutations", mixer="attention", hidden_size=128, latent_steps=2, cycles=2, supervision_steps=8,
        epochs=24, batch_size=64, time_budget_seconds="reasoner", backbone_layer=0,
        comparator_mixers={"reasoner": "conv", "embeddings": "conv", "slots": "conv"}))
    task_options: dict[str, Any] = field(default_factory=lambda: {"group": "s5", "input": "swaps", "output": "ball",
                                                                  "num_train": 4000, "num_test": 256})
    parts: tuple[str, ...] = PARTS
    seeds: tuple[int, ...] = (0, 1, 2)
    lengths: tuple[int, ...] = (8, 16, 32, 64)
    comparators: tuple[str, ...] = accuracy.ALL_COMPARATORS
    # depth: train on games of depth_min_length..L swaps (a mixture from short to long, as the `longer` part trains) and
    # test on games of exactly L; None trains on exactly L. Trained on exactly 32 swaps (6 passes over 4000 games, seed
    # 0), every comparator stayed near chance per swap (reasoner 0.28, one pass 0.30, deep stack 0.37, slots 0.31):
    # without short games there is no step-by-step signal to learn the local update from. Trained on the mixture 1..32
    # the same way (seed 0), the final cup at 32 stayed at chance too (reasoner 0.18, one pass 0.20, slots 0.18), while
    # trained on 1..16 (the `longer` part) the reasoner tracks 32 at 0.97: what worked is a shorter training range.
    depth_min_length: int | None = 1
    # depth: `TrainingConfig` fields for its runs, over `common.training`. A curriculum over length: the loss covers
    # each game's first positions first, all of them from half the run on. On the mixture 1..32 (same data) it took
    # the reasoner's final cup at 32 from 0.18 (seed 0) to 0.999 (seeds 0-2; whole game 0.993).
    depth_training: dict[str, Any] = field(default_factory=lambda: {"length_curriculum": 0.5})
    train_length: int = 16
    long_lengths: tuple[int, ...] = (32, 64)
    step_multipliers: tuple[int, ...] = (1, 2, 4, 8)
    longer_comparators: tuple[str, ...] = ("one_pass", "deep_stack", "embeddings", "reasoner")
    language_options: dict[str, Any] = field(default_factory=lambda: {"cups": 5, "length": 8, "min_length": 1,
                                                                      "num_train": 4000, "num_test": 256})
    language_comparators: tuple[str, ...] = ("linear", "one_pass", "lora_linear", "embeddings", "reasoner")
    language_backbone_layer: int = 3  # sentences: a swap is spread over several words, which a contextual layer gathers
    # language_lm: a causal LM (`packaged:...`, a Hub id, a folder, or "tiny": a tiny Llama built offline, for tests)
    lm_base: str = "packaged:SmolLM2-135M-Instruct"
    lm_overrides: tuple[str, ...] = ()  # more overrides of the `text_pairs` recipe, e.g. training.max_steps=2000
    lm_comparators: tuple[str, ...] = LM_COMPARATORS
    lm_shots: int = 4  # solved games in the few-shot prompt (training phrasings, drawn with the seed)
    # the LM alone answers the first this many games of each test set: its prompts (the shots, then the game) are about
    # 400 tokens through all 30 layers of SmolLM2, some seconds each on one CPU core; None: all of them
    lm_few_shot_tests: int | None = 128

    def __post_init__(self) -> None:
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"Unknown part(s) {unknown}; choose from {PARTS}.")
        for name in ("comparators", "longer_comparators", "language_comparators"):
            bad = sorted(set(getattr(self, name)) - set(accuracy.ALL_COMPARATORS))
            if bad:
                raise ValueError(f"Unknown comparator(s) {bad} in `{name}`; choose from {accuracy.ALL_COMPARATORS}.")
        bad = sorted(set(self.lm_comparators) - set(LM_COMPARATORS))
        if bad:
            raise ValueError(f"Unknown comparator(s) {bad} in `lm_comparators`; choose from {LM_COMPARATORS}.")
        if self.lm_few_shot_tests is not None and self.lm_few_shot_tests < 1:
            raise ValueError(f"`lm_few_shot_tests` must be >= 1 or None (all), got {self.lm_few_shot_tests}.")
        if self.lm_shots < 0:
            raise ValueError(f"`lm_shots` must be >= 0 (solved games in the prompt), got {self.lm_shots}.")


_TINY_COMMON = dataclasses.replace(accuracy.PRESETS["tiny"], task="permutations", mixer="attention", backbone_layer=0,
                                   comparator_mixers=StateTrackingSettings().common.comparator_mixers)
PRESETS: dict[str, StateTrackingSettings] = {
    "full": StateTrackingSettings(),
    # Train on S5 games of 1-16 swaps, test at 16, 32 and 64 swaps after 8 to 64 refinement steps: three seeds, the
    # data budget (6 passes over 4000 games: about 3000 optimizer steps for the recursive comparators; at 3 passes TRM
    # on token embeddings tracked 16 swaps at 0.48), four comparators. About 40 minutes a seed on one busy core;
    # `--reuse` keeps the seeds an earlier result already has.
    "quick": StateTrackingSettings(
        common=dataclasses.replace(StateTrackingSettings().common, epochs=6, time_budget_seconds=None),
        parts=("longer",), seeds=(0, 1, 2), long_lengths=(32, 64), step_multipliers=(1, 2, 4, 8),
        longer_comparators=("one_pass", "deep_stack", "embeddings", "reasoner")),
    "tiny": StateTrackingSettings(
        common=_TINY_COMMON, task_options={"group": "s3", "input": "swaps", "output": "ball", "num_train": 16, "num_test": 8},
        seeds=(0, 1), lengths=(3,), comparators=("one_pass", "slots", "reasoner"), train_length=3, long_lengths=(6,),
        step_multipliers=(1, 2), longer_comparators=("one_pass", "reasoner"),
        language_options={"cups": 3, "length": 2, "num_train": 16, "num_test": 8}, language_comparators=("one_pass", "reasoner"),
        language_backbone_layer=1, lm_base="tiny", lm_shots=2,
        lm_overrides=("training.max_steps=4", "training.batch_size=8", "training.supervision_steps=2", "training.warmup_steps=1",
                      "training.checkpoint_every=null", "reasoner.hidden_size=16", "reasoner.max_supervision_steps=2")),
}

# The settings each part's runs depend on: `--reuse` keeps a part's runs when these are unchanged (the seeds may grow).
PART_FIELDS = {
    "depth": ("common", "task_options", "comparators", "depth_min_length", "depth_training"),  # its runs are per length: other lengths keep the ones measured
    "longer": ("common", "task_options", "train_length", "long_lengths", "step_multipliers", "longer_comparators"),
    "language": ("common", "language_options", "language_comparators", "language_backbone_layer"),
    "language_lm": ("language_options", "lm_base", "lm_overrides", "lm_comparators", "lm_shots", "lm_few_shot_tests"),
}


def spread(values: list[float]) -> dict[str, float]:
    """Mean, min and max of per-seed values."""
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values), "n": len(values)}


# --- depth: the accuracy benchmark's comparators, per length ---------------------------------------
def depth_run(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One (length, seed)'s `accuracy.run` result, kept compact: per comparator its size and, per budget, the headline
    numbers after all N_sup steps (the recursion's full depth), the optimizer steps and the training seconds."""
    compact = []
    for entry in result["comparators"]:
        run: dict[str, Any] = {"name": entry["name"], "trainable_parameters": entry["trainable_parameters"],
                               "layers_per_step": entry["layers_per_step"]}
        for budget in ("data", "time"):
            if budget in entry:
                run[budget] = {key: entry[budget]["all_steps"][key] for key in HEADLINE} | {
                    key: entry[budget][key] for key in ("optimizer_steps", "train_seconds")}
        compact.append(run)
    return compact


def depth_rows(settings: StateTrackingSettings, runs: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per length and comparator: the headline numbers under each budget, per seed and as a spread over the seeds run."""
    rows = []
    for length in settings.lengths:
        by_seed = {seed: runs[f"{length}/{seed}"] for seed in settings.seeds if f"{length}/{seed}" in runs}
        if not by_seed:
            continue
        for name in settings.comparators:  # a comparator's seeds are those that ran it (runs added later may cover fewer)
            entries = {seed: run for seed, seed_runs in by_seed.items() for run in seed_runs if run["name"] == name}
            if not entries:
                continue
            first = next(iter(entries.values()))
            row: dict[str, Any] = {"length": length, "name": name, "trainable_parameters": first["trainable_parameters"],
                                   "layers_per_step": first["layers_per_step"]}
            for budget in ("data", "time"):
                measured = {seed: entry[budget] for seed, entry in entries.items() if budget in entry}
                if measured:
                    row[budget] = {key: spread([run[key] for run in measured.values()]) for key in HEADLINE}
                    row[budget]["per_seed"] = {str(seed): run for seed, run in measured.items()}
            rows.append(row)
    return rows


def run_depth(settings: StateTrackingSettings, previous: dict[str, Any] | None = None,
              done: Callable[[list[dict[str, Any]], dict[str, Any]], None] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every comparator at every length and seed: the rows (`depth_rows`) and the per-(length, seed) runs they are read from.

    `previous` (`--reuse`): its runs of the same settings are kept (a run is one length and one seed). `done` is called
    with the rows and runs so far after each (length, seed), so a long run can be written to disk as it goes.
    """
    kept = previous.get("depth_runs", {}) if same_part(previous, settings, "depth") and previous else {}
    runs: dict[str, Any] = {}
    for length in settings.lengths:
        for seed in settings.seeds:
            key = f"{length}/{seed}"
            if key in kept:
                log(f"state_tracking: depth, length {length}, seed {seed}: kept from the earlier result")
                runs[key] = kept[key]
                continue
            mixture = {} if settings.depth_min_length is None else {"min_length": min(settings.depth_min_length, length)}
            common = dataclasses.replace(settings.common, task="permutations", seed=seed, comparators=settings.comparators,
                                         task_options={**settings.task_options, "length": length, "seed": seed, **mixture},
                                         test_task_options={"min_length": length} if mixture else {},
                                         training={**settings.common.training, **settings.depth_training})
            log(f"state_tracking: depth, length {length}, seed {seed}")
            runs[key] = depth_run(accuracy.run(common))
            if done is not None:
                done(depth_rows(settings, runs), runs)
    return depth_rows(settings, runs), runs


# --- training once, testing on several sets and step counts -----------------------------------------
def encoded(task_name: str, options: dict[str, Any], split: str, encoder: PairEncoder) -> Any:
    """A task's split, tokenized with `encoder`'s tokenizer and labels (no length limit: test sets may be longer)."""
    unbounded = PairEncoder(encoder.tokenizer, encoder.output_kind, encoder.label_names, max_length=None)
    return unbounded.encode_dataset(get_task(task_name, **options).to_dataset(split), desc=f"Tokenizing {split}")


def train_and_test(name: str, common: accuracy.AccuracySettings, test_sets: dict[str, tuple[str, dict[str, Any]]],
                   step_counts: tuple[int, ...], max_steps: int | None = None) -> dict[str, Any]:
    """Train comparator `name` on `common`'s task, then score it on each test set after each of `step_counts` refinement steps.

    `test_sets`: name -> (task name, task options); each is the test split of that task.
    `max_steps`: optimizer steps to train for (default: `common.epochs` passes over the data).
    """
    recipe, data, pad_token_id = accuracy.load_data(common)
    tests = {label: encoded(task, options, "test", data.encoder) for label, (task, options) in test_sets.items()}
    longest = max([data.max_length] + [max(len(ids) for ids in ds["input_ids"]) for ds in tests.values()])
    model = accuracy.build(name, common, dataclasses.replace(data, max_length=longest))  # the longest test input fits
    if model.backbone_trains or model.config.input == "token_embeddings":
        train_set, test_sets_ready = torch_format(data.train), {label: torch_format(ds) for label, ds in tests.items()}
    else:
        train_set = torch_format(with_features(model, data.train, recipe))
        test_sets_ready = {label: torch_format(with_features(model, ds, recipe)) for label, ds in tests.items()}
    collate_fn = functools.partial(collate, pad_token_id=pad_token_id)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_state_") as output_dir:
        result = train(model, train_set, accuracy.training_config(common, output_dir, max_steps), collate_fn=collate_fn)
    seconds = time.perf_counter() - start
    model.load_state_dict(result.adapter_state_dict, strict=False)
    accelerator = Accelerator()
    scores: dict[str, Any] = {}
    for label, dataset in test_sets_ready.items():
        loader = accelerator.prepare(DataLoader(dataset, batch_size=common.eval_batch_size, collate_fn=collate_fn))
        steps = max(step_counts) if model.config.max_supervision_steps > 1 else 1
        evaluation = evaluate(model, loader, accelerator, steps, halt=False)
        scores[label] = {str(count): {key: evaluation["per_step"][min(count, steps) - 1][key] for key in HEADLINE}
                         for count in step_counts}
    return {"name": name, "optimizer_steps": result.global_step, "train_seconds": round(seconds, 1), "load_average": load_average(),
            "scores": scores}


def summarise_tests(runs: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per comparator: each test set and step count's headline numbers as a spread over seeds."""
    rows = []
    names = [run["name"] for run in next(iter(runs.values()))]
    for index, name in enumerate(names):
        seeds = [runs[seed][index] for seed in runs]
        scores = {label: {count: {key: spread([run["scores"][label][count][key] for run in seeds]) for key in HEADLINE}
                          for count in seeds[0]["scores"][label]}
                  for label in seeds[0]["scores"]}
        rows.append({"name": name, "scores": scores, "train_seconds": spread([run["train_seconds"] for run in seeds]),
                     "optimizer_steps": seeds[0]["optimizer_steps"]})
    return rows


# Settings added since results were first written, as the runs before them were trained (see `same_part`).
LATER_FIELDS: dict[str, Any] = {"depth_training": {}}


def same_part(previous: dict[str, Any] | None, settings: StateTrackingSettings, part: str) -> bool:
    """Whether `previous` holds `part`, made with the settings that part reads (`PART_FIELDS`) equal to `settings`'."""
    if not previous or part not in previous:
        return False
    before, now = LATER_FIELDS | previous.get("settings", {}), as_stored(settings)
    if isinstance(before.get("common"), dict):  # the shared accuracy settings: fields added since read as they were trained
        before = before | {"common": accuracy.with_later_fields(before["common"])}
    return all(before.get(name) == now[name] for name in PART_FIELDS[part])


def previous_runs(settings: StateTrackingSettings, previous: dict[str, Any] | None, part: str) -> dict[str, list[dict[str, Any]]]:
    """The per-seed runs of `part` in `previous` that were trained as `settings` would train them (all but `seeds` equal).

    A result written before per-seed runs were stored holds one seed's runs only as rows with n = 1; those are read back.
    """
    if not same_part(previous, settings, part):
        return {}
    assert previous is not None
    before = previous["settings"]
    stored = previous[part]
    if "runs" in stored:
        return stored["runs"]
    if len(before.get("seeds", [])) != 1:
        return {}
    return {str(before["seeds"][0]): [
        {"name": row["name"], "optimizer_steps": row["optimizer_steps"], "train_seconds": row["train_seconds"]["mean"],
         "scores": {label: {count: {key: value[key]["mean"] for key in HEADLINE} for count, value in by_count.items()}
                    for label, by_count in row["scores"].items()}}
        for row in stored["rows"]]}


def _seed_runs(settings: StateTrackingSettings, part: str, seed: int, names: tuple[str, ...], kept: dict[str, list[dict[str, Any]]],
               train: Any) -> list[dict[str, Any]]:
    """One seed's runs of `names`: the kept ones where `kept` has them, the others trained by `train(name)`."""
    by_name = {run["name"]: run for run in kept.get(str(seed), [])}
    runs = []
    for name in names:
        if name in by_name:
            log(f"state_tracking: {part}, {name}, seed {seed}: kept from the earlier result")
            runs.append(by_name[name])
        else:
            log(f"state_tracking: {part}, {name}, seed {seed}")
            runs.append(train(name))
    return runs


def run_longer(settings: StateTrackingSettings, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on lengths 1..train_length; test at the trained length and each long length, at multiples of N_sup steps."""
    nsup = settings.common.supervision_steps
    counts = tuple(nsup * m for m in settings.step_multipliers)
    kept = previous_runs(settings, previous, "longer")
    runs = {}
    for seed in settings.seeds:
        options = {**settings.task_options, "length": settings.train_length, "min_length": 1, "seed": seed}
        common = dataclasses.replace(settings.common, task="permutations", seed=seed, task_options=options)
        tests = {str(length): ("permutations", {**options, "length": length, "min_length": length})
                 for length in (settings.train_length, *settings.long_lengths)}
        runs[seed] = _seed_runs(settings, "longer", seed, settings.longer_comparators, kept,
                                lambda name, common=common, tests=tests: train_and_test(name, common, tests, counts))
    return {"train_lengths": [1, settings.train_length], "step_counts": list(counts), "rows": summarise_tests(runs),
            "runs": {str(seed): seed_runs for seed, seed_runs in runs.items()}}


def run_language(settings: StateTrackingSettings, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shell game in English: train on the training phrasings; test on them, on held-out phrasings, on longer games."""
    nsup = settings.common.supervision_steps
    counts = (1, nsup)
    kept = previous_runs(settings, previous, "language")
    runs = {}
    for seed in settings.seeds:
        options = {**settings.language_options, "phrasing": "train", "seed": seed}
        common = dataclasses.replace(settings.common, task="shell_game", seed=seed, task_options=options,
                                     backbone_layer=settings.language_backbone_layer)
        longer = 2 * options["length"]
        tests = {"train_phrasings": ("shell_game", options),
                 "held_out_phrasings": ("shell_game", {**options, "phrasing": "held_out"}),
                 f"length_{longer}": ("shell_game", {**options, "length": longer, "min_length": longer})}
        runs[seed] = _seed_runs(settings, "language", seed, settings.language_comparators, kept,
                                lambda name, common=common, tests=tests: train_and_test(name, common, tests, counts))
    return {"task_options": dict(settings.language_options), "step_counts": list(counts), "rows": summarise_tests(runs),
            "runs": {str(seed): seed_runs for seed, seed_runs in runs.items()}}


# --- language through the LM's own head: the final cup as text ------------------------------------
def final_cup_pairs(options: dict[str, Any], split: str) -> list[dict[str, str]]:
    """The shell game's `split` as text pairs: the story in, the ball's final cup out (a digit)."""
    task = get_task("shell_game", **options)
    return [{"input": row["input"], "output": task.final_answer(row["output"])} for row in task.to_dataset(split)]


def causal_lm_base(base: str, scratch: Path) -> str:
    """`base` as `from_pretrained` takes it: a packaged model's folder, "tiny" built into `scratch`, else as given."""
    if base == "tiny":
        from latentreason.testing import save_tiny_backbone

        return save_tiny_backbone("llama", scratch / "tiny-lm", causal_lm=True)
    if base.startswith("packaged:"):
        from latentreason.packaged import packaged_path

        return packaged_path(base)
    return base


def few_shot_prompt(shots: list[dict[str, str]], story: str) -> str:
    """The LM alone: an instruction, solved games, then the game to answer (the answer follows `Answer:`)."""
    lines = ["Follow the ball as the cups are swapped. Answer with the number of the cup the ball ends under."]
    lines += [f"Story: {shot['input']}\nAnswer: {shot['output']}" for shot in shots]
    return "\n".join(lines + [f"Story: {story}\nAnswer:"])


def first_word(text: str) -> str:
    """The first word of a generated answer, without punctuation around it ("" when there is none)."""
    words = text.strip().split()
    return words[0].strip(".,;:!?\"'") if words else ""


def few_shot_run(base: str, shots: list[dict[str, str]], tests: dict[str, list[dict[str, str]]], batch_size: int = 8) -> dict[str, Any]:
    """The frozen causal LM alone, prompted with `shots`: its greedy answer to each test game, scored against the final cup."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    start = time.perf_counter()
    scores = {}
    for label, rows in tests.items():
        right = 0
        for first in range(0, len(rows), batch_size):
            chunk = rows[first:first + batch_size]
            inputs = tokenizer([few_shot_prompt(shots, row["input"]) for row in chunk], return_tensors="pt", padding=True)
            with torch.no_grad():
                generated = lm.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=tokenizer.pad_token_id)
            answers = tokenizer.batch_decode(generated[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
            right += sum(first_word(answer) == row["output"] for answer, row in zip(answers, chunk))
        accuracy = right / len(rows)
        scores[label] = {"answer": {key: accuracy for key in HEADLINE}}
    return {"name": "few_shot", "optimizer_steps": 0, "train_seconds": round(time.perf_counter() - start, 1), "scores": scores}


def lm_reasoner_run(settings: StateTrackingSettings, base: str, seed: int, files: dict[str, Path], folder: Path) -> dict[str, Any]:
    """`latentreason train text_pairs` on the training games (Python API, same recipe), then `evaluate_run` on each test file."""
    from transformers import AutoTokenizer

    from latentreason.inference import evaluate_run
    from latentreason.pipeline import train_recipe
    from latentreason.recipe import load_recipe

    labels = [label for label in files if label != "train"]
    output_dir = folder / "reasoner"
    tokenizer = AutoTokenizer.from_pretrained(base)
    longest = max(len(tokenizer(json.loads(line)["input"])["input_ids"])  # the longer games' prompts must fit the model too
                  for path in files.values() for line in path.read_text(encoding="utf-8").splitlines())
    recipe = load_recipe("text_pairs", [f"model.base={base}", f"data.train_file={files['train']}", f"data.eval_file={files[labels[0]]}",
                                        f"data.max_length={longest}", f"training.output_dir={output_dir}", f"training.seed={seed}",
                                        *settings.lm_overrides])
    start = time.perf_counter()
    trained = train_recipe(recipe)
    seconds = time.perf_counter() - start
    scores = {}
    for label in labels:
        results = evaluate_run(str(output_dir), data_file=str(files[label]), wrong_examples=0)
        scores[label] = {"answer": {key: results["exact_match"] for key in HEADLINE},  # as `latentreason eval` reports it
                         "all_steps": {key: results["per_step"][-1]["exact_match"] for key in HEADLINE},
                         "step_1": {key: results["per_step"][0]["exact_match"] for key in HEADLINE}}
    return {"name": "reasoner", "optimizer_steps": trained.global_step, "train_seconds": round(seconds, 1), "load_average": load_average(),
            "scores": scores}


def run_language_lm(settings: StateTrackingSettings, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shell game with the final cup as text, on a causal LM: the reasoner through its lm_head, and the LM few-shot."""
    kept = previous_runs(settings, previous, "language_lm")
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bench_state_lm_") as scratch_name:
        scratch = Path(scratch_name)
        base = causal_lm_base(settings.lm_base, scratch)
        for seed in settings.seeds:
            options = {**settings.language_options, "phrasing": "train", "seed": seed}
            longer = 2 * options["length"]
            sets = {"train": (options, "train"), "train_phrasings": (options, "test"),
                    "held_out_phrasings": ({**options, "phrasing": "held_out"}, "test"),
                    f"length_{longer}": ({**options, "length": longer, "min_length": longer}, "test")}
            rows = {label: final_cup_pairs(task_options, split) for label, (task_options, split) in sets.items()}
            folder = scratch / f"seed-{seed}"
            folder.mkdir()
            files = {label: folder / f"{label}.jsonl" for label in rows}
            for label, path in files.items():
                path.write_text("".join(json.dumps(row) + "\n" for row in rows[label]), encoding="utf-8")
            shots = random.Random(seed).sample(rows["train"], min(settings.lm_shots, len(rows["train"])))
            tests = {label: value for label, value in rows.items() if label != "train"}

            def train_one(name: str, seed: int = seed, files: dict[str, Path] = files, folder: Path = folder,
                          shots: list[dict[str, str]] = shots, tests: dict[str, list[dict[str, str]]] = tests) -> dict[str, Any]:
                if name == "few_shot":
                    return few_shot_run(base, shots, {label: rows[:settings.lm_few_shot_tests] for label, rows in tests.items()})
                return lm_reasoner_run(settings, base, seed, files, folder)

            runs[seed] = _seed_runs(settings, "language_lm", seed, settings.lm_comparators, kept, train_one)
    return {"task_options": dict(settings.language_options), "base": settings.lm_base, "shots": settings.lm_shots,
            "few_shot_tests": settings.lm_few_shot_tests,
            "rows": summarise_tests(runs), "runs": {str(seed): seed_runs for seed, seed_runs in runs.items()}}


def run(settings: StateTrackingSettings, previous: dict[str, Any] | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run the parts named in `settings.parts`; the JSON result.

    `previous` (`--reuse`, or an interrupted run's partial result): an earlier result. Its runs of each part (one
    seed, and for depth one length) are kept where the settings the part reads are the same, so adding seeds or
    lengths trains only the new ones; a part not run now is carried over whole (with its own seeds) when those
    settings are unchanged. `progress` is called with the partial result (marked `partial`) after every finished run
    of the depth part and after every other part, so hours of training survive an interrupted run.
    """
    result: dict[str, Any] = {"benchmark": "state_tracking", "settings": asdict(settings)}
    for part in PARTS:  # carried over first, so a partial result written along the way keeps them too
        if part not in settings.parts and same_part(previous, settings, part) and previous:
            log(f"state_tracking: {part}: kept whole from the earlier result")
            result[part] = previous[part]
            if part == "depth" and "depth_runs" in previous:
                result["depth_runs"] = previous["depth_runs"]

    def save() -> None:
        if progress is not None:
            progress({**result, "partial": True, "machine": machine_info()})

    def depth_done(rows: list[dict[str, Any]], runs: dict[str, Any]) -> None:
        result["depth"], result["depth_runs"] = rows, dict(runs)  # a copy: the runs go on growing
        save()

    with training_run(settings.common.threads):
        for part in PARTS:
            if part not in settings.parts:
                continue
            if part == "depth":
                result["depth"], result["depth_runs"] = run_depth(settings, previous, depth_done)
            else:
                result[part] = {"longer": run_longer, "language": run_language, "language_lm": run_language_lm}[part](settings, previous)
            save()
    result.pop("partial", None)
    result["machine"] = machine_info()
    return result


# --- the report section -------------------------------------------------------------------------------
def _cell(value: dict[str, float] | None) -> str:
    if not value:
        return "-"
    if value.get("n", 1) == 1 or value["min"] == value["max"]:
        return f"{value['mean']:.3f}"
    return f"{value['mean']:.3f} ({value['min']:.2f}-{value['max']:.2f})"


def _row(rows: list[dict[str, Any]], name: str, **match: Any) -> dict[str, Any] | None:
    return next((row for row in rows if row["name"] == name and all(row.get(k) == v for k, v in match.items())), None)


def goal_lines(result: dict[str, Any]) -> list[str]:
    """Each goal of issue 24 that the result can judge, with the figure that meets or misses it."""
    lines = []
    if "depth" in result:
        rows = result["depth"]
        budget = "time" if any("time" in row for row in rows) else "data"
        length = 32 if any(row["length"] == 32 for row in rows) else max(row["length"] for row in rows)
        reasoner = _row(rows, "reasoner", length=length)
        shallow = [_row(rows, name, length=length) for name in ("one_pass", "deep_stack")]
        if reasoner and budget in reasoner and all(row and budget in row for row in shallow):
            mine = reasoner[budget]["last_cell"]["mean"]
            theirs = max(row[budget]["last_cell"]["mean"] for row in shallow)
            met = mine >= 0.9 and theirs <= 0.4
            seeds = f"{reasoner[budget]['last_cell']['n']} and {'/'.join(str(row[budget]['last_cell']['n']) for row in shallow)} seed(s)"
            lines.append(f"- Goal (depth): at length {length}, {budget} budget, the reasoner's final-state accuracy >= 0.9 while one "
                         f"pass and deep stack stay <= 0.4: reasoner {mine:.3f}, best of the two {theirs:.3f} ({seeds}): "
                         f"**{'met' if met else 'missed'}**.")
    if "longer" in result:
        part = result["longer"]
        reasoner = _row(part["rows"], "reasoner")
        longest = str(min(int(label) for label in (reasoner or {}).get("scores", {}) if int(label) > part["train_lengths"][1]) if reasoner else "")
        if reasoner and longest:
            best = max(value["last_cell"]["mean"] for value in reasoner["scores"][longest].values())
            per_seed = [max(value["last_cell"] for value in run["scores"][longest].values())
                        for runs in part.get("runs", {}).values() for run in runs if run["name"] == "reasoner"]
            seeds = f" (per seed: {', '.join(f'{value:.3f}' for value in per_seed)})" if len(per_seed) > 1 else ""
            lines.append(f"- Goal (longer than trained): >= 0.8 final-state accuracy at length {longest} after training on "
                         f"{part['train_lengths'][0]}-{part['train_lengths'][1]}: the best step count's mean over seeds "
                         f"{best:.3f}{seeds}: **{'met' if best >= 0.8 else 'missed'}**.")
    if "language" in result:
        part = result["language"]
        last = str(part["step_counts"][-1])
        scores = {row["name"]: row["scores"]["held_out_phrasings"][last]["last_cell"]["mean"] for row in part["rows"]}
        if "reasoner" in scores:
            for other, what in (("embeddings", "what the LLM buys"), ("lora_linear", "what the recursion buys")):
                if other in scores:
                    gap = scores["reasoner"] - scores[other]
                    lines.append(f"- Goal (language, {what}): on held-out phrasings the reasoner beats {other} by >= 20 points: "
                                 f"{scores['reasoner']:.3f} vs {scores[other]:.3f}: **{'met' if gap >= 0.2 else 'missed'}**.")
    return lines + ([""] if lines else [])


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The benchmark's section of docs/benchmarks.md, every figure read from `result` (tables only: `images` is unused)."""
    lines = ["## State tracking (S5 and the shell game)", "",
             f"Command: `{result.get('command', 'python -m benchmarks run state_tracking')}`. "
             "Each cell: the mean over the part's seeds (its heading, or the depth table's `seeds` column as data/time, says how "
             "many), (min-max) where they differ. "
             "`final`: the ball's last cup (chance 0.2); `exact`: every step right.", ""]
    if result.get("partial"):
        lines += ["**Partial result**: the run was interrupted or is still going; the tables show the runs finished so far "
                  "(`--reuse` continues it).", ""]
    if "depth" in result:
        low = result.get("settings", {}).get("depth_min_length")
        trained_on = f"trained on games of {low} to L swaps, tested on games of exactly L" if low else "trained and tested on games of exactly L swaps"
        curriculum = result.get("settings", {}).get("depth_training", {}).get("length_curriculum")
        if curriculum:
            trained_on += f", with a curriculum over length (`length_curriculum: {curriculum}`)"
        lines += [f"### Depth: S5 (one transposition per step) at each length L, {trained_on}", "",
                  "| length | comparator | params | seeds | data: final | data: exact | time: final | time: exact |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for row in result["depth"]:
            data, timed = row.get("data", {}), row.get("time", {})
            seeds = "/".join(str(len(budget.get("per_seed", {}))) for budget in (data, timed) if budget)  # data/time
            lines.append(f"| {row['length']} | {row['name']} | {row['trainable_parameters']:,d} | {seeds} | {_cell(data.get('last_cell'))} | "
                         f"{_cell(data.get('exact_match'))} | {_cell(timed.get('last_cell'))} | {_cell(timed.get('exact_match'))} |")
        lines.append("")
    lines += goal_lines(result)
    if "longer" in result:
        part = result["longer"]
        counts = part["step_counts"]
        lines += [f"### Longer than trained: trained on lengths {part['train_lengths'][0]}-{part['train_lengths'][1]}, "
                  f"final-state accuracy at each test length and refinement steps, {part_seeds(result, 'longer')} seed(s)", "",
                  "| comparator | test length | " + " | ".join(f"{c} steps" for c in counts) + " |",
                  "|---|---:|" + "---:|" * len(counts)]
        for row in part["rows"]:
            for label, by_count in row["scores"].items():
                lines.append(f"| {row['name']} | {label} | " + " | ".join(_cell(by_count[str(c)]["last_cell"]) for c in counts) + " |")
        lines.append("")
    if "language" in result:
        part = result["language"]
        last = str(part["step_counts"][-1])
        tests = list(part["rows"][0]["scores"])
        lines += [f"### The shell game in English (options {part['task_options']}), final-state accuracy after {last} steps, "
                  f"{part_seeds(result, 'language')} seed(s)", "",
                  "| comparator | " + " | ".join(tests) + " |", "|---|" + "---:|" * len(tests)]
        for row in part["rows"]:
            lines.append(f"| {row['name']} | " + " | ".join(_cell(row["scores"][t][last]["last_cell"]) for t in tests) + " |")
        lines.append("")
    if "language_lm" in result:
        lines += language_lm_lines(result["language_lm"], part_seeds(result, "language_lm"))
    return "\n".join(lines)


def part_seeds(result: dict[str, Any], part: str) -> int:
    """How many seeds a part of `result` was run with (a part carried over from an earlier result keeps its own)."""
    stored = result[part]
    return len(stored["runs"]) if "runs" in stored else len(result["settings"]["seeds"])


def language_lm_lines(part: dict[str, Any], seeds: int) -> list[str]:
    """The language_lm table: each comparator's final-cup exact match per test set, and its training seconds."""
    tests = list(part["rows"][0]["scores"])
    lines = [f"### The shell game with a text answer on `{part['base']}` (options {part['task_options']}): the final cup right, "
             f"{seeds} seed(s)", "",
             "`reasoner`: the `text_pairs` recipe (its answer written by the LM's own head, scored as `latentreason eval` "
             f"scores it); `few_shot`: the LM alone, {part['shots']} solved games in the prompt, greedy answer"
             + (f", on the first {part['few_shot_tests']} games of each set" if part.get("few_shot_tests") else "") + ". "
             f"Chance {1 / part['task_options'].get('cups', 5):.2f}.", "",
             "| comparator | " + " | ".join(tests) + " | seconds |", "|---|" + "---:|" * (len(tests) + 1)]
    for row in part["rows"]:
        lines.append(f"| {row['name']} | " + " | ".join(_cell(row["scores"][t]["answer"]["last_cell"]) for t in tests)
                     + f" | {row['train_seconds']['mean']:.0f} |")
    return lines + [""]
