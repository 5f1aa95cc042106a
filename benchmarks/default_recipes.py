"""Defaults that learn: the recipes for your own data, trained as a newcomer would, with only the data paths set.

Each task is generated fresh for the measurement (its own seed, never used while the defaults were
chosen), written as JSON Lines, and trained from the command line exactly as the docs say:

    latentreason train custom_pairs data.train_file=train.jsonl data.eval_file=test.jsonl
    latentreason train text_pairs   data.train_file=train.jsonl data.eval_file=test.jsonl

The figure is the run's headline exact match on the held-out file (`eval_results.json`, with halting,
as the recipe's `eval.halt` says) and its wall time, command included. Goals: an 8-position aligned
task reaches >= 0.98 exact match; a 5-token text task of 2000 pairs on the packaged SmolLM2 reaches
>= 0.8 exact match within 15 minutes on 2 cores.

Aligned tasks (8 digits in, 8 digits out): `sort` (ascending), `reverse`, `neighbour_sum` (each digit
plus the one before it, mod 10). The running maximum was the task the `layer: auto` probe was checked
on while it was written, so it is not one of them. Text tasks (5 words in, 5 words out, words that
SmolLM2 writes as one token each): `sort_words` (alphabetical order). The text recipe was tried on
reversing 5 words while its defaults were set, so that is not measured here either.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from latentreason.recipe import find_recipe

from .harness import load_average, log, machine_info, same_settings
from .markdown import Images

ALIGNED_TASKS = ("sort", "reverse", "neighbour_sum")
TEXT_TASKS = ("sort_words",)
# one token each for SmolLM2's tokenizer, with and without a leading space (checked in `_check_words`)
WORDS = ("apple", "river", "stone", "cloud", "green", "music", "paper", "horse", "window", "bread", "ocean", "forest", "castle")
SEED_OFFSET = 9_000  # the data seeds of this benchmark: 9000 + seed, used nowhere else
SHARED_MARGIN = 0.5  # load above cores + this: other processes shared the cores (see `shared_machine`)
GOALS = {"custom_pairs": {"exact_match": 0.98}, "text_pairs": {"exact_match": 0.8, "seconds": 15 * 60}}


@dataclass(frozen=True)
class DefaultRecipeSettings:
    """What to generate and train; `overrides` beyond the data paths are only for the tiny preset's tiny models."""

    aligned_tasks: tuple[str, ...] = ALIGNED_TASKS
    text_tasks: tuple[str, ...] = TEXT_TASKS
    seeds: tuple[int, ...] = (0, 1, 2)
    aligned_rows: tuple[int, int] = (2000, 500)  # train, test
    text_rows: tuple[int, int] = (2000, 300)
    length: int = 8
    words: int = 5
    aligned_overrides: tuple[str, ...] = ()
    text_overrides: tuple[str, ...] = ()
    tiny_bases: bool = False  # build tiny local models and point the recipes at them (tests only)
    # custom_pairs runs trained at once, one thread each (their goal has no time). text_pairs runs always train
    # alone on every core: their goal is a wall time. Not a result setting: kept runs do not depend on it.
    aligned_jobs: int = 1


PRESETS: dict[str, DefaultRecipeSettings] = {
    "full": DefaultRecipeSettings(aligned_jobs=2),
    "quick": DefaultRecipeSettings(aligned_tasks=("sort",), text_tasks=("sort_words",), seeds=(0,)),
    "tiny": DefaultRecipeSettings(
        aligned_tasks=("reverse",), text_tasks=("sort_words",), seeds=(0,), aligned_rows=(40, 8), text_rows=(40, 8), length=4, words=2,
        aligned_overrides=("reasoner.hidden_size=16", "reasoner.num_heads=2", "training.max_steps=4", "training.batch_size=8",
                           "training.checkpoint_every=null"),
        text_overrides=("reasoner.hidden_size=16", "reasoner.num_heads=2", "training.max_steps=4", "training.batch_size=8",
                        "training.checkpoint_every=null"),
        tiny_bases=True,
    ),
}


def aligned_pairs(task: str, count: int, length: int, rng: random.Random) -> list[dict[str, str]]:
    rows = []
    for _ in range(count):
        digits = [rng.randrange(10) for _ in range(length)]
        if task == "sort":
            answer = sorted(digits)
        elif task == "reverse":
            answer = digits[::-1]
        elif task == "neighbour_sum":
            answer = [digits[0]] + [(digits[i] + digits[i - 1]) % 10 for i in range(1, length)]
        else:
            raise ValueError(f"unknown aligned task {task!r}; choose from {ALIGNED_TASKS}")
        rows.append({"input": " ".join(map(str, digits)), "output": " ".join(map(str, answer))})
    return rows


def text_pairs(task: str, count: int, words: int, rng: random.Random) -> list[dict[str, str]]:
    if task != "sort_words":
        raise ValueError(f"unknown text task {task!r}; choose from {TEXT_TASKS}")
    rows = []
    for _ in range(count):
        chosen = [rng.choice(WORDS) for _ in range(words)]
        rows.append({"input": "sort: " + " ".join(chosen), "output": " ".join(sorted(chosen))})
    return rows


def split_without_overlap(rows: list[dict[str, str]], test_count: int) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """The last `test_count` distinct inputs are the test set; training rows never repeat a test input."""
    test, test_inputs = [], set()
    for row in reversed(rows):
        if len(test) == test_count:
            break
        if row["input"] not in test_inputs:
            test.append(row)
            test_inputs.add(row["input"])
    train = [row for row in rows if row["input"] not in test_inputs]
    return train, test


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def train_once(recipe: str, train: Path, test: Path, output_dir: Path, overrides: tuple[str, ...],
               threads: int | None = None) -> dict[str, Any]:
    """`latentreason train RECIPE data.train_file=... data.eval_file=...` in a fresh process; its exact match and wall time.
    `threads`: the process's torch threads (OMP_NUM_THREADS); None leaves torch's default, every core."""
    command = [sys.executable, "-m", "latentreason.cli", "train", recipe, f"data.train_file={train}", f"data.eval_file={test}",
               f"training.output_dir={output_dir}", *overrides]
    start = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    finished = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({finished.returncode}):\n{finished.stderr[-3000:]}")
    results = json.loads((output_dir / "eval_results.json").read_text(encoding="utf-8"))
    chosen = [line for line in finished.stdout.splitlines() if line.startswith("model.layer=auto")]
    recipe_saved = (output_dir / "recipe.yaml").read_text(encoding="utf-8")
    layer = next((line.split(":", 1)[1].strip() for line in recipe_saved.splitlines() if line.strip().startswith("layer:")), None)
    return {"exact_match": results["exact_match"], "accuracy": results["accuracy"], "mean_steps": results.get("mean_steps"),
            "per_step_exact_match": [row["exact_match"] for row in results["per_step"]], "seconds": round(seconds, 1),
            "layer": layer, "layer_line": chosen[0] if chosen else None}


def _tiny_bases(folder: Path) -> dict[str, str]:
    from latentreason.testing import save_tiny_backbone

    return {"custom_pairs": save_tiny_backbone("bert", folder / "tiny-bert"),
            "text_pairs": save_tiny_backbone("llama", folder / "tiny-llama", causal_lm=True)}


def _plan(settings: DefaultRecipeSettings) -> list[tuple[str, str]]:
    return [("custom_pairs", task) for task in settings.aligned_tasks] + [("text_pairs", task) for task in settings.text_tasks]


def recipe_digest(recipe: str) -> str:
    """The SHA-256 of a built-in recipe's file: a kept run counts only if the recipe has not changed since."""
    return hashlib.sha256(find_recipe(recipe).read_bytes()).hexdigest()


def kept_runs(settings: DefaultRecipeSettings, previous: dict[str, Any] | None) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The runs of `previous` (`--reuse`, or an interrupted run's partial result) that these settings would repeat:
    the same data sizes and overrides, and a recipe file unchanged since (its digest is stored with each run)."""
    if not same_settings(previous, settings, ignore=("aligned_tasks", "text_tasks", "seeds", "aligned_jobs")):
        return {}
    return {(row["recipe"], row["task"], run["seed"]): run for row in previous.get("rows", []) for run in row["runs"]
            if run.get("recipe_sha256") == recipe_digest(row["recipe"])}


def run(settings: DefaultRecipeSettings, previous: dict[str, Any] | None = None,
        progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Every task and seed trained from the command line. `previous`: runs to keep (see `kept_runs`); `progress` is
    called with the partial result after every run, so an interrupted benchmark keeps what it finished."""
    kept = kept_runs(settings, previous)
    rows: list[dict[str, Any]] = []
    result = {"settings": asdict(settings), "machine": machine_info(), "rows": rows, "goals": GOALS}
    with tempfile.TemporaryDirectory(prefix="latentreason-defaults-") as scratch:
        root = Path(scratch)
        bases = _tiny_bases(root) if settings.tiny_bases else {}
        rows.extend({"recipe": recipe, "task": task, "runs": []} for recipe, task in _plan(settings))

        def finished(row: dict[str, Any], run_: dict[str, Any]) -> None:
            _add_run(row, run_)
            if progress is not None:
                progress({**result, "rows": [done for done in rows if done["runs"]], "partial": True})

        # Seed by seed, every task of a recipe before the next seed: an interrupted run has each task at least once.
        for recipe in ("custom_pairs", "text_pairs"):
            jobs = settings.aligned_jobs if recipe == "custom_pairs" else 1
            todo = []
            for seed in settings.seeds:
                for row in (row for row in rows if row["recipe"] == recipe):
                    key = (recipe, row["task"], seed)
                    if key in kept:
                        log(f"default_recipes: {recipe} {row['task']} seed {seed}: kept from the earlier result")
                        _add_run(row, kept[key])
                    else:
                        todo.append((row, seed))

            if jobs == 1:
                for row, seed in todo:
                    finished(row, _run_seed(settings, recipe, row["task"], seed, root, bases))
                continue
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # each job is a subprocess: threads only wait on it
                futures = {pool.submit(_run_seed, settings, recipe, row["task"], seed, root, bases, 1): row for row, seed in todo}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
    return result


def _add_run(row: dict[str, Any], run_: dict[str, Any]) -> None:
    """`run_` into its row, the row's runs in seed order (concurrent runs finish in any order), and the row's summary."""
    row["runs"] = sorted([*row["runs"], run_], key=lambda kept_run: kept_run["seed"])
    row.update(_summary(row["runs"]))


def _run_seed(settings: DefaultRecipeSettings, recipe: str, task: str, seed: int, root: Path, bases: dict[str, str],
              threads: int | None = None) -> dict[str, Any]:
    """One task's data for `seed`, generated fresh and trained from the command line (`threads`: see `train_once`)."""
    rng = random.Random(SEED_OFFSET + seed)
    total, test_count = settings.aligned_rows if recipe == "custom_pairs" else settings.text_rows
    generated = (aligned_pairs(task, 3 * total, settings.length, rng) if recipe == "custom_pairs"
                 else text_pairs(task, 3 * total, settings.words, rng))
    train, test = split_without_overlap(generated, test_count)
    train = train[:total]
    folder = root / f"{recipe}-{task}-{seed}"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test)
    overrides = settings.aligned_overrides if recipe == "custom_pairs" else settings.text_overrides
    if recipe in bases:
        overrides = (f"model.base={bases[recipe]}", *overrides)
    log(f"default_recipes: {recipe} {task} seed {seed}: {len(train)} train rows, {len(test)} test rows")
    digest = recipe_digest(recipe)
    result = train_once(recipe, folder / "train.jsonl", folder / "test.jsonl", folder / "run", overrides, threads)
    log(f"default_recipes: {recipe} {task} seed {seed}: exact match {result['exact_match']:.3f} in {result['seconds']:.0f} s")
    return {"seed": seed, "train_rows": len(train), "test_rows": len(test), "recipe_sha256": digest,
            "load_average": load_average(), **result}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    exact = [run["exact_match"] for run in runs]
    seconds = [run["seconds"] for run in runs]
    return {"exact_match_mean": statistics.fmean(exact), "exact_match_min": min(exact), "exact_match_max": max(exact),
            "seconds_mean": statistics.fmean(seconds), "seconds_max": max(seconds)}


def goal_met(row: dict[str, Any]) -> bool:
    goal = GOALS[row["recipe"]]
    return row["exact_match_min"] >= goal["exact_match"] and row["seconds_max"] <= goal.get("seconds", float("inf"))


def shared_machine(machine: dict[str, Any]) -> bool:
    """Other processes used the cores while this ran: wall times say little then. A run that uses every core reads
    about the core count by itself (a text run alone read 1.91-2.02 on 2 cores), so shared means more than half a
    core of other work on top: load above cores + 0.5."""
    load, cores = machine.get("load_average"), machine.get("cores")
    return isinstance(load, (int, float)) and isinstance(cores, int) and load > cores + SHARED_MARGIN


def row_shared(row: dict[str, Any], machine: dict[str, Any]) -> bool:
    """Whether any run of `row` shared the cores (its load average, read as it ended: see `shared_machine`); a row
    whose runs record no load is judged by the load at the start."""
    loads = [run["load_average"] for run in row["runs"] if run.get("load_average") is not None]
    return any(shared_machine({**machine, "load_average": load}) for load in loads) if loads else shared_machine(machine)


def verdict(row: dict[str, Any], loaded: bool) -> str:
    """met / missed; on a shared machine a time goal is not judged, only the accuracy part of it."""
    goal = GOALS[row["recipe"]]
    if not (loaded and "seconds" in goal):
        return "met" if goal_met(row) else "missed"
    accuracy = "met" if row["exact_match_min"] >= goal["exact_match"] else "missed"
    return f"exact match {accuracy}; time not judged (shared machine)"


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The benchmark's section of docs/benchmarks.md, every figure read from `result` (tables only: `images` is unused)."""
    settings = result["settings"]
    lines = ["## Defaults that learn (the recipes for your own data)", "",
             f"Command: `{result.get('command', 'python -m benchmarks run default_recipes')}`. Each task is generated fresh "
             f"(data seeds {SEED_OFFSET}+seed) and trained with `latentreason train RECIPE data.train_file=... data.eval_file=...` "
             f"and nothing else, {len(settings['seeds'])} seed(s); exact match on the held-out file, with halting. "
             "Goals: custom_pairs >= 0.98 on an 8-position aligned task; text_pairs >= 0.8 within 15 minutes on 2 cores "
             "(every seed).", "",
             "| recipe | task | train / test rows | exact match: mean (min-max) | wall time: mean (max) | layer read | goal |",
             "|---|---|---:|---:|---:|---|---|"]
    machine = result.get("machine", {})
    loaded = any(row_shared(row, machine) for row in result["rows"])
    if result.get("partial"):
        planned = _plan(DefaultRecipeSettings(aligned_tasks=tuple(settings["aligned_tasks"]), text_tasks=tuple(settings["text_tasks"])))
        done = {(row["recipe"], row["task"]): {run["seed"] for run in row["runs"]} for row in result["rows"]}
        missing = [f"{recipe} / {task} (seeds {', '.join(str(seed) for seed in settings['seeds'] if seed not in done.get((recipe, task), set()))})"
                   for recipe, task in planned if len(done.get((recipe, task), set())) < len(settings["seeds"])]
        lines[-2:-2] = [f"**Partial result**: not measured yet: {'; '.join(missing)}. `--reuse` continues the run and keeps what is here.", ""]
    for row in result["rows"]:
        first = row["runs"][0]
        layers = ", ".join(sorted({str(run["layer"]) for run in row["runs"]}))
        spread = f"{row['exact_match_mean']:.3f} ({row['exact_match_min']:.3f}-{row['exact_match_max']:.3f})"
        lines.append(f"| {row['recipe']} | {row['task']} | {first['train_rows']} / {first['test_rows']} | {spread} | "
                     f"{row['seconds_mean']:.0f} s ({row['seconds_max']:.0f} s) | {layers} | {verdict(row, row_shared(row, machine))} |")
    lines.append("")
    for row in result["rows"]:
        for run in row["runs"]:
            seed = run["seed"]
            steps = " ".join(f"{value:.3f}" for value in run["per_step_exact_match"])
            halted = f"; with halting, {run['mean_steps']:.2f} steps on average" if run.get("mean_steps") is not None else ""
            lines.append(f"- {row['recipe']} / {row['task']}, seed {seed}: exact match after each refinement step {steps}{halted}.")
    lines += ["", f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, load {machine.get('load_average', '?')} at the start."]
    if loaded:
        lines.append("Some runs shared the cores (the load average as they ended was above the core count + 0.5): their wall times "
                     "are inflated, and a time goal is judged only from rows whose runs had the cores to themselves. Exact match "
                     "does not depend on the load (each recipe trains a fixed number of steps). custom_pairs runs train "
                     f"{result['settings'].get('aligned_jobs', 1)} at a time on one thread each; text_pairs runs train alone.")
    lines.append("")
    return "\n".join(lines)
