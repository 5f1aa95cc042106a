"""Test-time scaling: which way of training makes more refinement steps (and more trajectories) safe.

Issue 21 ("thinking longer at test time"). For each task, the `reasoner` comparator of the accuracy
benchmark (frozen backbone + the recursive reasoner, same code: `benchmarks.accuracy.build`) is trained
with N_sup = `supervision_steps` under each variant, all from the same initial weights and data:

    baseline        the recipe as it is: the carry starts from the init vectors, N_sup steps every batch,
                    every step trained on the whole answer
    carry_noise     + N(0, sigma^2) on the carry before every training step (`training.carry_noise`, EqR)
    random_start    + every sample starts from its own random carry (`training.carry_init: random`, EqR)
    random_steps    + each batch trains 1..N_sup steps, drawn uniformly (`training.random_supervision_steps`)
    improvement     + step s is trained on a part of the answer growing with s (`training.improvement_supervision`, DIS)

then scored by exact match on the test set after 1, 2, 4, ..., 128 refinement steps (depth) with 1, 4
and 16 trajectories (breadth: `latentreason.trajectories`, all but the first with Gaussian noise on the
carry after every step, one answer kept per example by `select`). Compute is counted in net calls per
example: steps x T x (n + 1) x trajectories, the x axis of the tables. M trajectories are scored up to
128 / M steps (`equal_compute`): depth and breadth meet at the same cost, and the evaluation of 16
trajectories costs what one trajectory's 128 steps cost, not 16 times that.

Halting is judged as users get it: each variant holds out a tenth of its training rows and picks its
halting threshold there (`calibrate_halting`, as the recipes' `training.calibrate_halting`), and the
table shows the trained threshold's figures (p > 0.5) beside it.

Tasks: 6x6 Sudoku (search), 7x7 mazes (propagation: one cell further per step) and S5 state tracking
(NC1-complete: trained on games of 1-16 swaps, tested on longer games). Each task's model, data and
training budget are those of its accuracy or state-tracking benchmark preset, with N_sup set here.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from accelerate import Accelerator
from matplotlib.figure import Figure
from torch.utils.data import DataLoader

from latentreason.data import collate, torch_format
from latentreason.pipeline import with_features
from latentreason.training import evaluate, train

from . import accuracy, state_tracking
from .harness import as_stored, load_average, log, machine_info, same_settings, training_run

VARIANTS = ("baseline", "carry_noise", "random_start", "random_steps", "improvement")
METRICS = ("exact_match", "accuracy", "last_cell")


@dataclass(frozen=True)
class TaskSpec:
    """One task: the accuracy benchmark's settings for it (data, model, budget) and what the test split changes."""

    name: str
    common: accuracy.AccuracySettings
    test_options: dict[str, Any] = field(default_factory=dict)  # task options of the test split only (e.g. longer games)


@dataclass(frozen=True)
class DepthBreadthSettings:
    """The tasks, the training variants, and the test-time depths and breadths scored."""

    tasks: tuple[TaskSpec, ...]
    variants: tuple[str, ...] = VARIANTS
    supervision_steps: int = 16  # N_sup in training, for every task and variant
    test_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    trajectories: tuple[int, ...] = (1, 4, 16)
    # M trajectories are scored at the depths whose compute (steps x M) is within the deepest single trajectory's:
    # depth and breadth meet at equal cost, and breadth costs the evaluation at most as much again per M.
    equal_compute: bool = True
    trajectory_noise: float = 0.3  # test-time noise on the carry of trajectories 2..M
    select: str = "vote"  # how one of the M answers is kept: "vote" or "halt"
    carry_noise: float = 0.1  # the `carry_noise` variant's training noise
    carry_init_std: float = 1.0  # the `random_start` variant's std
    # Every variant holds out this share of its training rows and picks its halting threshold there, as the
    # recipes do (`training.calibrate_halting`); 0 halts at the trained threshold, p > 0.5.
    calibrate_halting: float = 0.1
    threads: int | None = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown variant(s) {unknown}; choose from {VARIANTS}.")
        if not self.test_steps or min(self.test_steps) < 1 or not self.trajectories or min(self.trajectories) < 1:
            raise ValueError(f"`test_steps` and `trajectories` must be whole numbers >= 1, got {self.test_steps} and {self.trajectories}.")
        if self.select not in ("vote", "halt"):
            raise ValueError(f"`select` must be 'vote' or 'halt', got {self.select!r}.")


def training_changes(variant: str, settings: DepthBreadthSettings) -> dict[str, Any]:
    """The `TrainingConfig` fields a variant sets on top of the recipe."""
    return {
        "baseline": {},
        "carry_noise": {"carry_noise": settings.carry_noise},
        "random_start": {"carry_init": "random", "carry_init_std": settings.carry_init_std},
        "random_steps": {"random_supervision_steps": True},
        "improvement": {"improvement_supervision": True},
    }[variant]


# --- the tasks, per preset ------------------------------------------------------------------------
_S5 = {"group": "s5", "input": "swaps", "output": "ball", "length": 16, "min_length": 1, "seed": 0}
_S5_COMMON = state_tracking.PRESETS["quick"].common  # the conv-mixer reasoner on layer 0 of MiniLM (state_tracking.py)


def _tasks(sudoku: accuracy.AccuracySettings, maze: accuracy.AccuracySettings, s5: accuracy.AccuracySettings,
           s5_test_length: int) -> tuple[TaskSpec, ...]:
    # The two tasks the issue's +10-point goal names first: a partial run (they take hours) has them.
    return (TaskSpec("sudoku", sudoku), TaskSpec("s5", s5, test_options={"length": s5_test_length, "min_length": s5_test_length}),
            TaskSpec("maze", maze))


PRESETS: dict[str, DepthBreadthSettings] = {
    # Not run yet: 5 variants x 3 tasks, each trained on its accuracy benchmark's full data budget with N_sup=16
    # (hours of CPU), then 128 steps x (1 + 4 + 16) trajectories on each test set.
    "full": DepthBreadthSettings(tasks=_tasks(
        accuracy.SUDOKU6_PRESETS["full"], accuracy.MAZE_PRESETS["full"],
        dataclasses.replace(_S5_COMMON, task="permutations", task_options={**_S5, "num_train": 4000, "num_test": 256}),
        s5_test_length=64)),
    "quick": DepthBreadthSettings(tasks=_tasks(
        dataclasses.replace(accuracy.SUDOKU6_PRESETS["quick"], task_options={"size": 6, "givens": 20, "num_train": 512, "num_test": 64, "seed": 0}),
        dataclasses.replace(accuracy.MAZE_PRESETS["quick"], task_options={"size": 7, "num_train": 256, "num_test": 64, "seed": 0}),
        dataclasses.replace(_S5_COMMON, task="permutations", epochs=2, task_options={**_S5, "num_train": 1000, "num_test": 64}),
        s5_test_length=32)),
    # Plumbing only (the test suite): 2 supervision steps on 16 examples of tiny versions of each task.
    "tiny": DepthBreadthSettings(
        tasks=_tasks(accuracy.SUDOKU6_PRESETS["tiny"], accuracy.MAZE_PRESETS["tiny"],
                     dataclasses.replace(state_tracking.PRESETS["tiny"].common,
                                         task_options={"group": "s3", "input": "swaps", "output": "ball", "length": 3, "min_length": 1,
                                                       "num_train": 16, "num_test": 8, "seed": 0}),
                     s5_test_length=4),
        supervision_steps=2, test_steps=(1, 2, 4), trajectories=(1, 2)),
}


# --- one task: every variant from the same start ----------------------------------------------------
def kept_variants(task: TaskSpec, settings: DepthBreadthSettings, previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The variants of `task` in `previous` (`--reuse`, or an interrupted run's partial result) trained and scored
    exactly as `settings` would: the same task settings and the same depths, breadths and switch strengths."""
    if not same_settings(previous, settings, ignore=("tasks", "variants")) or as_stored(task) not in previous["settings"].get("tasks", []):
        return {}
    stored = next((entry for entry in previous.get("tasks", []) if entry["task"] == task.name), None)
    return {variant["variant"]: variant for variant in stored["variants"]} if stored else {}


def run_task(task: TaskSpec, settings: DepthBreadthSettings, kept: dict[str, dict[str, Any]] | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train each variant of `task` from the same initial weights; score each at every test depth and breadth.

    `kept`: variants already measured with these settings (by name), not trained again. `progress` is called
    with the task's entry after each variant, so an interrupted run keeps what it finished.
    """
    kept = kept or {}
    common = dataclasses.replace(task.common, supervision_steps=settings.supervision_steps)
    entry: dict[str, Any] = {"task": task.name, "task_options": dict(common.task_options), "test_changes": dict(task.test_options),
                             "variants": []}
    todo = [variant for variant in settings.variants if variant not in kept]
    if todo:
        recipe, data, pad_token_id = accuracy.load_data(common)
        test_options = {**common.task_options, **task.test_options}
        test = state_tracking.encoded(common.task, test_options, "test", data.encoder) if task.test_options else data.eval
        longest = max(data.max_length, max(len(ids) for ids in test["input_ids"]))
        initial = accuracy.build("reasoner", common, dataclasses.replace(data, max_length=longest))
        if initial.backbone_trains:
            train_set, test_set = torch_format(data.train), torch_format(test)
        else:  # the frozen backbone reads every example once, for all variants
            train_set, test_set = torch_format(with_features(initial, data.train, recipe)), torch_format(with_features(initial, test, recipe))
        entry["num_test"] = len(test_set)
    else:
        entry["num_test"] = next(iter(kept.values()))["num_test"]
    entry["calls_per_step"] = common.cycles * (common.latent_steps + 1)
    for variant in settings.variants:
        if variant in kept:
            log(f"test_time_scaling: {task.name}, {variant}: kept from the earlier result")
            entry["variants"].append(kept[variant])
        else:
            log(f"test_time_scaling: {task.name}, {variant}")
            entry["variants"].append({"variant": variant, "changes": training_changes(variant, settings), "num_test": entry["num_test"],
                                      **run_variant(copy.deepcopy(initial), common, train_set, test_set, pad_token_id, variant, settings,
                                                    entry["calls_per_step"])})
        if progress is not None:
            progress(entry)
    return entry


def run_variant(model: Any, common: accuracy.AccuracySettings, train_set: Any, test_set: Any, pad_token_id: int, variant: str,
                settings: DepthBreadthSettings, calls_per_step: int) -> dict[str, Any]:
    """Train `model` under `variant`, then its EMA weights' scores after each test depth, for each breadth."""
    collate_fn = functools.partial(collate, pad_token_id=pad_token_id)
    with tempfile.TemporaryDirectory(prefix="bench_test_time_") as output_dir:
        start = time.perf_counter()
        config = accuracy.training_config(common, output_dir, None, calibrate_halting=settings.calibrate_halting,
                                          **training_changes(variant, settings))
        result = train(model, train_set, config, collate_fn=collate_fn)
        seconds = time.perf_counter() - start
    model.load_state_dict(result.adapter_state_dict, strict=False)
    accelerator = Accelerator()
    loader = accelerator.prepare(DataLoader(test_set, batch_size=common.eval_batch_size, collate_fn=collate_fn))
    curves, halting, halting_curve = {}, None, None
    for count in settings.trajectories:
        depths = scored_depths(settings, count)
        if not depths:
            continue
        scores = evaluate(model, loader, accelerator, max(depths), halt=False, trajectories=count,
                          noise=settings.trajectory_noise if count > 1 else 0.0, select=settings.select, seed=common.seed)
        curves[str(count)] = [{"steps": steps, "net_calls": steps * calls_per_step * count,
                               **{key: scores["per_step"][steps - 1][key] for key in METRICS}} for steps in depths]
        if count == 1:
            halting, halting_curve = scores["halting"], scores["halting_curve"]
    return {"optimizer_steps": result.global_step, "train_seconds": round(seconds, 1), "load_average": load_average(),
            "curves": curves, "halting": halting, "halting_curve": halting_curve}


def scored_depths(settings: DepthBreadthSettings, trajectories: int) -> list[int]:
    """The test depths scored with `trajectories` trajectories (with `equal_compute`, those within the deepest single one's compute)."""
    if not settings.equal_compute:
        return list(settings.test_steps)
    return [steps for steps in settings.test_steps if steps * trajectories <= max(settings.test_steps)]


def run(settings: DepthBreadthSettings, previous: dict[str, Any] | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every task, every variant: the JSON result.

    `previous` (`--reuse`): an earlier result, complete or partial; its variants trained with the same settings
    are kept. `progress` is called with the partial result after every variant (the runner writes it to disk,
    marked `partial`), so hours of training survive an interrupted run.
    """
    result: dict[str, Any] = {"benchmark": "test_time_scaling", "settings": asdict(settings), "tasks": []}
    finished: list[dict[str, Any]] = []

    def update(entry: dict[str, Any]) -> None:  # the task in progress, after the tasks already finished
        result["tasks"] = [*finished, entry]
        if progress is not None:
            progress({**result, "partial": True, "machine": machine_info()})

    with training_run(settings.threads):
        for task in settings.tasks:
            finished.append(run_task(task, settings, kept_variants(task, settings, previous), update))
    result["tasks"] = finished
    result["machine"] = machine_info()
    return result


# --- the report section ---------------------------------------------------------------------------
def _score(curve: list[dict[str, Any]], steps: int, key: str = "exact_match") -> float | None:
    return next((point[key] for point in curve if point["steps"] == steps), None)


def summary_rows(task: dict[str, Any], trained_steps: int) -> list[dict[str, Any]]:
    """Per variant: exact match at the trained depth, at the deepest test depth, and whether more steps kept it (within 1 point)."""
    rows = []
    for variant in task["variants"]:
        plain = variant["curves"]["1"]
        deepest = max(point["steps"] for point in plain)
        at_trained, at_deepest = _score(plain, trained_steps), _score(plain, deepest)
        best = max(plain, key=lambda point: point["exact_match"])
        widest = max(variant["curves"], key=int)
        widest_last = variant["curves"][widest][-1]
        rows.append({"variant": variant["variant"], "trained": at_trained, "deepest_steps": deepest, "deepest": at_deepest,
                     "best": best["exact_match"], "best_steps": best["steps"], "widest": widest,
                     "widest_deepest": widest_last["exact_match"], "widest_steps": widest_last["steps"],
                     "holds": None if at_trained is None or at_deepest is None else at_deepest >= at_trained - 0.01,
                     "optimizer_steps": variant["optimizer_steps"], "train_seconds": variant["train_seconds"]})
    return rows


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def figure(result: dict[str, Any]) -> Figure:
    """Exact match against net calls per example, one panel per task: a colour per variant, a line style per breadth."""
    tasks = result["tasks"]
    plot = Figure(figsize=(4.2 * len(tasks), 3.6))
    styles = ["-", "--", ":", "-."]
    for index, task in enumerate(tasks):
        axes = plot.add_subplot(1, len(tasks), index + 1)
        for colour, variant in enumerate(task["variants"]):
            for style, (count, curve) in enumerate(sorted(variant["curves"].items(), key=lambda item: int(item[0]))):
                axes.plot([point["net_calls"] for point in curve], [point["exact_match"] for point in curve], color=f"C{colour}",
                          linestyle=styles[style % len(styles)], marker=".", label=f"{variant['variant']}, {count} traj.")
        axes.set_xscale("log", base=2)
        axes.set_ylim(-0.02, 1.02)
        axes.set_xlabel("net calls per example")
        axes.set_ylabel("exact match")
        axes.set_title(task["task"])
    plot.axes[-1].legend(fontsize=6, loc="best")
    return plot


def render(result: dict[str, Any], images: Any = None) -> str:
    """The benchmark's section of docs/benchmarks.md, every figure read from `result`; the plot through `images` when given."""
    settings = result["settings"]
    trained = settings["supervision_steps"]
    lines = ["## Test-time scaling: which training makes more steps safe", "",
             f"Command: `{result.get('command', 'python -m benchmarks run test_time_scaling')}`. Every variant trained with "
             f"N_sup={trained} from the same initial weights; exact match on the test set. Breadth: {settings['trajectories']} "
             f"trajectories, noise {settings['trajectory_noise']} on the carry, one answer kept by `{settings['select']}`"
             f"{', scored up to the compute of the deepest single trajectory' if settings.get('equal_compute') else ''}. "
             "Net calls per example = steps x T x (n + 1) x trajectories.", ""]
    if result.get("partial"):
        planned = [task["name"] for task in settings["tasks"]]
        measured = {task["task"]: [variant["variant"] for variant in task["variants"]] for task in result["tasks"]}
        missing = [f"{name} ({', '.join(v for v in settings['variants'] if v not in measured.get(name, []))})"
                   for name in planned if len(measured.get(name, [])) < len(settings["variants"])]
        lines += [f"**Partial result** ({result.get('elapsed_s', 0):.0f} s of training so far): not measured yet: "
                  f"{'; '.join(missing)}. `--reuse` continues the run and keeps what is here.", ""]
    for task in result["tasks"]:
        calls = task["calls_per_step"]
        tested = f"test on {task['test_changes']}" if task["test_changes"] else "test split of the same task"
        lines += [f"### {task['task']}: train {task['task_options']}, {tested} ({task['num_test']} examples, "
                  f"{calls} net calls per step)", "",
                  f"| variant | optimizer steps | train s | {trained} steps (trained) | deepest | best (at steps) | widest (traj. x steps) | "
                  "more steps hold |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for row in summary_rows(task, trained):
            holds = "-" if row["holds"] is None else ("yes" if row["holds"] else "**no**")
            lines.append(f"| {row['variant']} | {row['optimizer_steps']} | {row['train_seconds']} | {_cell(row['trained'])} | "
                         f"{_cell(row['deepest'])} ({row['deepest_steps']}) | {_cell(row['best'])} ({row['best_steps']}) | "
                         f"{_cell(row['widest_deepest'])} ({row['widest']} x {row['widest_steps']}) | {holds} |")
        budgets = sorted({point["net_calls"] for variant in task["variants"] for curve in variant["curves"].values() for point in curve})
        lines += ["", "Exact match against net calls per example (columns; each row fills the budgets its steps x trajectories reach):", "",
                  "| variant | trajectories | " + " | ".join(str(budget) for budget in budgets) + " |",
                  "|---|---:|" + "---:|" * len(budgets)]
        for variant in task["variants"]:
            for count, curve in sorted(variant["curves"].items(), key=lambda item: int(item[0])):
                by_budget = {point["net_calls"]: point["exact_match"] for point in curve}
                lines.append(f"| {variant['variant']} | {count} | " + " | ".join(_cell(by_budget.get(budget)) for budget in budgets) + " |")
        lines.append("")
        lines += halting_lines(task, trained, calibrated=bool(settings.get("calibrate_halting")))
    if images is not None:
        lines.append(images.add(figure(result), "test_time_scaling", "exact match against net calls, per task, variant and breadth"))
    return "\n".join(lines)


def halting_lines(task: dict[str, Any], trained: int, calibrated: bool = False) -> list[str]:
    """Halting at each variant's threshold against all N_sup steps, judged by the issue's goal: within 1 point of the
    exact match after all N_sup steps, using at most a third of them. `calibrated`: the thresholds were picked on
    held-out training rows (`training.calibrate_halting`); the trained threshold's row (p > 0.5) is shown beside."""
    rows = [(variant, _score(variant["curves"]["1"], trained)) for variant in task["variants"] if variant.get("halting")]
    if not rows:
        return []
    cap = max(point["steps"] for point in rows[0][0]["curves"]["1"])
    if calibrated:
        lines = [f"Halting at the threshold each variant calibrated on a held-out tenth of its training rows "
                 f"(`training.calibrate_halting`; a sample that never halts runs all {cap} test steps), against all {trained} steps; "
                 f"goal: within 1 point of all {trained} steps with at most {trained / 3:.1f} steps on average:", "",
                 f"| variant | threshold | with halting | mean steps | at p > 0.5 | all {trained} steps | goal |",
                 "|---|---:|---:|---:|---:|---:|---|"]
    else:
        lines = [f"Halting at the trained threshold (p > {rows[0][0]['halting']['threshold']}; a sample that never halts runs all {cap} "
                 f"test steps), against all {trained} steps; goal: within 1 point of all {trained} steps with at most {trained / 3:.1f} "
                 "steps on average:", "",
                 f"| variant | with halting | mean steps | all {trained} steps | goal |", "|---|---:|---:|---:|---|"]
    for variant, all_steps in rows:
        halting = variant["halting"]
        close = all_steps is not None and halting["exact_match"] >= all_steps - 0.01
        cheap = halting["mean_steps"] <= trained / 3
        verdict = "met" if close and cheap else "missed (" + ", ".join(
            part for part, bad in (("more than 1 point below", not close), ("too many steps", not cheap)) if bad) + ")"
        figures = f"{halting['exact_match']:.3f} | {halting['mean_steps']:.2f}"
        if calibrated:
            default = next((point for point in variant.get("halting_curve") or [] if point["threshold"] == 0.5), None)
            at_default = f"{default['exact_match']:.3f} in {default['mean_steps']:.2f}" if default else "-"
            figures = f"{halting['threshold']} | {figures} | {at_default}"
        lines.append(f"| {variant['variant']} | {figures} | {_cell(all_steps)} | {verdict} |")
    lines.append("")
    if calibrated:
        return lines
    for variant, all_steps in rows:  # what a calibrated threshold could reach (read on the test set, so an upper bound)
        close = [point for point in variant.get("halting_curve") or [] if all_steps is not None and point["exact_match"] >= all_steps - 0.01]
        if close:
            best = min(close, key=lambda point: point["mean_steps"])
            lines.append(f"- {variant['variant']}: the cheapest threshold within 1 point of all {trained} steps on the test set is "
                         f"p > {best['threshold']}: {best['exact_match']:.3f} in {best['mean_steps']:.2f} steps "
                         "(`training.calibrate_halting` picks one on held-out training rows instead).")
    return [*lines, ""]
