"""Feature cache: sharded extraction over processes, and what each storage option costs and keeps.

Two parts, one run:

    extraction  the backbone's features of the task's training split, written to a fresh cache by
                1 and by 2 processes (torchrun, gloo on CPU; the cores split evenly between the
                processes), timed inside the processes from the first barrier to the last; the
                examples per second of each and their ratio.
    storage     per storage option (`training.cache_dtype`, with or without `reasoner.feature_projection`),
                the cache bytes per example and the accuracy `latentreason train` reaches on one small
                task (4x4 Sudoku on all-MiniLM-L6-v2 by default) in `max_steps` optimizer steps.

    .venv/bin/python -m benchmarks run feature_cache --quick
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from latentreason import recipe as recipes
from latentreason.features import FEATURES_FILE, shard_records
from latentreason.pipeline import train_recipe
from latentreason.prepare import load_tokenizer, prepare_data

from .harness import load_average, log, machine_info, same_settings, training_run
from .markdown import Images, table

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "sudoku_4x4.yaml"
TINY_BACKBONE = "tiny"  # `backbone: tiny`: a tiny Llama built offline (latentreason.testing), for tests


@dataclass(frozen=True)
class FeatureCacheSettings:
    """The task and backbone, the process counts to time, and the storage options to train on."""

    backbone: str = "packaged:all-MiniLM-L6-v2"  # a recipe's `model.base`, or "tiny"
    task_options: dict[str, Any] = field(default_factory=lambda: {"size": 4, "givens": 6, "num_train": 1000, "num_test": 200,
                                                                  "augment": False, "seed": 0})
    processes: tuple[int, ...] = (1, 2)  # timed in this order, each on a fresh cache
    batch_size: int = 32
    shard_rows: int = 64  # 1000 rows: 16 shards, 8 per process with 2
    # (training.cache_dtype, reasoner.feature_projection): float32 is the exact reference.
    storage: tuple[tuple[str, int | None], ...] = (("float32", None), ("float16", None), ("bfloat16", None), ("int8", None),
                                                   ("float16", 96), ("int8", 96))
    max_steps: int = 400
    overrides: tuple[str, ...] = ("training.checkpoint_every=null", "training.warmup_steps=20", "eval.batch_size=100")


PRESETS: dict[str, FeatureCacheSettings] = {
    "full": FeatureCacheSettings(task_options={"size": 4, "givens": 6, "num_train": 2500, "num_test": 400, "augment": False, "seed": 0},
                                 max_steps=1200, shard_rows=128),
    # About 30 minutes on this 2-core machine when busy (load 9): two extractions of 500 puzzles, 4 trainings of 150 steps.
    "quick": FeatureCacheSettings(task_options={"size": 4, "givens": 6, "num_train": 500, "num_test": 200, "augment": False, "seed": 0},
                                  shard_rows=32, storage=(("float32", None), ("float16", None), ("int8", None), ("int8", 96)),
                                  max_steps=150),
    "tiny": FeatureCacheSettings(backbone=TINY_BACKBONE, task_options={"size": 4, "givens": 8, "num_train": 16, "num_test": 8,
                                                                        "augment": False, "seed": 0},
                                 processes=(), batch_size=8, shard_rows=4, storage=(("float16", None), ("int8", 8)), max_steps=4,
                                 overrides=("training.checkpoint_every=null", "training.warmup_steps=1", "training.batch_size=8",
                                            "training.supervision_steps=2", "reasoner.hidden_size=16", "eval.batch_size=8")),
}


def base_model(settings: FeatureCacheSettings, scratch: Path) -> str:
    if settings.backbone != TINY_BACKBONE:
        return settings.backbone
    from latentreason.testing import save_tiny_backbone

    return save_tiny_backbone("llama", scratch / "tiny-backbone")


def recipe_for(settings: FeatureCacheSettings, base: str, scratch: Path, name: str, *extra: str) -> recipes.Recipe:
    task = [f"data.task_options.{key}={json.dumps(value)}" for key, value in settings.task_options.items()]
    return recipes.load_recipe(RECIPE, [f"model.base={base}", *task, f"training.max_steps={settings.max_steps}",
                                        f"training.output_dir={scratch / name}", f"training.cache_dir={scratch / ('cache-' + name)}",
                                        *settings.overrides, *extra])


# --- extraction: 1 and 2 processes ---------------------------------------------------------------
def run_extraction(settings: FeatureCacheSettings, base: str, scratch: Path) -> dict[str, Any]:
    recipe = recipe_for(settings, base, scratch, "extraction")
    data = prepare_data(recipe, load_tokenizer(recipe))
    data.train.save_to_disk(str(scratch / "train"))  # reloaded, it keeps its fingerprint: one key in every process
    cores = len(os.sched_getaffinity(0))
    runs = []
    for processes in settings.processes:
        threads = max(1, cores // processes)
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   "--module", "benchmarks.feature_cache", "extract", recipe.model.base, str(scratch / "train"),
                   str(scratch / f"extract-{processes}"), str(settings.batch_size), str(settings.shard_rows), str(threads)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "ACCELERATE_USE_CPU": "true"}
        log(f"feature_cache: extracting {len(data.train)} examples with {processes} process(es), {threads} thread(s) each")
        completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if completed.returncode != 0:
            raise RuntimeError(f"extraction with {processes} processes failed:\n{completed.stderr[-3000:]}")
        found = [json.loads(text) for text in re.findall(r"EXTRACTION (\{[^}]*\})", completed.stdout)]
        (entry,) = [path for path in (scratch / f"extract-{processes}").iterdir() if path.is_dir()]
        rows = {}
        for record in shard_records(entry):
            process = record["computed_by"]["process"]
            rows[process] = rows.get(process, 0) + record["stop"] - record["start"]
        seconds = found[0]["seconds"]
        runs.append({"processes": processes, "threads_per_process": threads, "examples": len(data.train), "seconds": seconds,
                     "examples_per_second": len(data.train) / seconds, "rows_per_process": [rows.get(i, 0) for i in range(processes)],
                     "load_average": load_average()})
    same = None
    if len(settings.processes) > 1:
        files = [{path.parent.name: path.read_bytes() for path in (scratch / f"extract-{p}").glob("*/rows-*/" + FEATURES_FILE)}
                 for p in settings.processes]
        same = all(other == files[0] for other in files[1:])
    by_count = {run["processes"]: run["examples_per_second"] for run in runs}
    ratio = by_count[2] / by_count[1] if 1 in by_count and 2 in by_count else None
    return {"runs": runs, "speedup_2_over_1": ratio, "identical_caches": same, "cores": cores}


def _extract_main(argv: list[str]) -> None:
    """One torchrun process of the extraction part: join the group, warm up, time `features_for` between barriers."""
    parser = argparse.ArgumentParser()
    for name in ("base", "data", "cache_dir", "batch_size", "shard_rows", "threads"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    from accelerate import PartialState

    state = PartialState(cpu=True)
    import torch
    from datasets import load_from_disk

    from latentreason import ReasonerConfig, attach_reasoner
    from latentreason.features import FeatureCache

    torch.set_num_threads(int(args.threads))
    model = attach_reasoner(args.base, ReasonerConfig(hidden_size=32, num_heads=2, num_labels=2))
    data = load_from_disk(args.data)
    ids = torch.tensor(data[0]["input_ids"])[None]
    model.encode(ids, torch.ones_like(ids))  # warm-up, outside the timing
    state.wait_for_everyone()
    start = time.perf_counter()
    FeatureCache(args.cache_dir, shard_rows=int(args.shard_rows)).features_for(model, data, batch_size=int(args.batch_size), progress=False)
    state.wait_for_everyone()
    if state.is_main_process:
        print("EXTRACTION " + json.dumps({"seconds": time.perf_counter() - start}), flush=True)


# --- storage: bytes and accuracy per option -----------------------------------------------------------
def run_storage(settings: FeatureCacheSettings, base: str, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    for dtype, projection in settings.storage:
        name = f"{dtype}" + (f"-p{projection}" if projection else "")
        recipe = recipe_for(settings, base, scratch, name, f"training.cache_dtype={dtype}",
                            f"reasoner.feature_projection={'null' if projection is None else projection}")
        log(f"feature_cache: training with {name} features")
        start = time.perf_counter()
        result = train_recipe(recipe)
        seconds = time.perf_counter() - start
        cache = scratch / f"cache-{name}"
        stored_rows = sum(record["stop"] - record["start"] for entry in cache.iterdir() if entry.is_dir() for record in shard_records(entry))
        stored_bytes = sum(path.stat().st_size for path in cache.glob("*/rows-*/" + FEATURES_FILE))
        evaluation = result.eval_results or {}
        rows.append({"dtype": dtype, "projection": projection, "bytes_per_example": stored_bytes / max(1, stored_rows),
                     "examples": stored_rows, "accuracy": evaluation.get("accuracy"), "exact_match": evaluation.get("exact_match"),
                     "seconds": seconds, "load_average": load_average()})
    return rows


def run(settings: FeatureCacheSettings, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both parts. `previous` (`--reuse`): an earlier result of the same settings keeps its storage trainings, and
    only the extraction is timed again (a few minutes: what to rerun on a quiet machine)."""
    result: dict[str, Any] = {"settings": asdict(settings)}
    same = same_settings(previous, settings)
    with tempfile.TemporaryDirectory() as folder, training_run(None):
        scratch = Path(folder)
        base = base_model(settings, scratch)
        if settings.processes:
            result["extraction"] = run_extraction(settings, base, scratch)
        if same and "storage" in previous:
            log("feature_cache: storage kept from the earlier result (same settings)")
            result["storage"] = previous["storage"]
            result["storage_machine"] = previous.get("storage_machine", previous.get("machine"))
        else:
            result["storage"] = run_storage(settings, base, scratch)
    result["machine"] = machine_info()
    return result


# --- the section ---------------------------------------------------------------------------------------
def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The benchmark's section of docs/benchmarks.md, every figure read from `result` (tables only: `images` is unused)."""
    settings = result["settings"]
    options = settings["task_options"]
    lines = ["## Feature cache: sharded extraction and storage options", "",
             f"Command: `{result.get('command', 'python -m benchmarks run feature_cache')}`. Backbone `{settings['backbone']}`, "
             f"{options['size']}x{options['size']} Sudoku ({options['num_train']} training puzzles, {options['num_test']} test).", ""]
    extraction = result.get("extraction")
    if extraction:
        rows = [[run["processes"], run["threads_per_process"], run["examples"], f"{run['seconds']:.1f}", f"{run['examples_per_second']:.1f}",
                 " / ".join(map(str, run["rows_per_process"])), run["load_average"]] for run in extraction["runs"]]
        lines += ["### Extraction: every process computes its shards", "",
                  table(["processes", "threads each", "examples", "seconds", "examples / s", "rows per process", "load average"], rows)]
        if max(run["load_average"] for run in extraction["runs"]) > extraction["cores"]:
            lines.append(f"The machine was busy (load average above its {extraction['cores']} cores): other work competed for "
                         "the cores, more with more threads per process, so the ratio below is not a clean speed-up.\n")
        if extraction.get("speedup_2_over_1") is not None:
            lines.append(f"2 processes extract {extraction['speedup_2_over_1']:.2f}x as many examples per second as 1 on "
                         f"{extraction['cores']} cores; the two caches are "
                         f"{'identical, bit for bit' if extraction['identical_caches'] else 'NOT identical'}.")
            runs = extraction["runs"]
            if all(run["processes"] * run["threads_per_process"] == extraction["cores"] for run in runs):
                lines.append("Both runs use every core (one process on all of them through its threads, or one thread per "
                             "process), so on a CPU the ratio is what sharding costs or saves against torch's own threads, "
                             "not a speed-up: sharding pays where each process has a device of its own (GPUs), and there "
                             "every process computes only its share.")
            lines.append("")
    reference = next((row for row in result["storage"] if row["dtype"] == "float32" and row["projection"] is None), None)
    rows = []
    for row in result["storage"]:
        smaller = f"{reference['bytes_per_example'] / row['bytes_per_example']:.1f}x" if reference else "n/a"
        rows.append([row["dtype"], row["projection"] or "none", f"{row['bytes_per_example']:,.0f}", smaller,
                     _score(row["accuracy"]), _score(row["exact_match"])])
    lines += [f"### Storage: cache bytes per example and accuracy after {settings['max_steps']} steps", "",
              table(["cache_dtype", "feature_projection", "bytes / example", "smaller than float32", "cell accuracy", "exact match"], rows)]
    if reference and reference["exact_match"] is not None:
        gaps = [row["exact_match"] - reference["exact_match"] for row in result["storage"] if row is not reference and row["exact_match"] is not None]
        tests = options["num_test"]
        noise = 2 * (reference["exact_match"] * (1 - reference["exact_match"]) / tests) ** 0.5
        if gaps:
            lines.append(f"Against float32, exact match moves by {min(gaps):+.3f} to {max(gaps):+.3f}; one training per option on "
                         f"{tests} test puzzles, where two binomial standard errors are {noise:.3f}: "
                         + ("every option is within that noise." if max(abs(g) for g in gaps) <= noise
                            else "options outside that band differ by more than this run's noise (one seed each).") + "\n")
    earlier = result.get("storage_machine")
    if earlier:
        lines.append(f"The storage trainings are kept from an earlier run of the same settings (`--reuse`, {earlier.get('date', 'date unknown')}); "
                     f"the extraction above was timed again ({result['machine'].get('date', 'date unknown')}).\n")
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "extract":
    _extract_main(sys.argv[2:])
