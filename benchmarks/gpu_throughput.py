"""Throughput on a GPU: feature extraction (examples per second) and training (optimizer steps per second).

One run of the library's own pipeline, timed in two parts: the frozen backbone, loaded in `dtype`
(bfloat16 by default), computes the features of the training split into a fresh cache; then the
reasoner trains on them for `max_steps` optimizer steps. Both run on this process's device (a GPU
when there is one). On a machine without a GPU the full and quick presets write a result that says
so and measure nothing (a CPU's figures are in the other sections); the tiny preset runs on any
device, for the tests.

    .venv/bin/python -m benchmarks run gpu_throughput      # on a machine with a GPU: under 8 minutes
"""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState

from latentreason.data import collate
from latentreason.pipeline import build_model, with_features
from latentreason.prepare import load_tokenizer, prepare_data
from latentreason.recipe import load_recipe
from latentreason.training import train

from .harness import log, machine_info
from .markdown import Images, table

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class GpuThroughputSettings:
    """The recipe and overrides of the run; `needs_gpu`: measure nothing where there is no GPU."""

    recipe: str = "recipes/sudoku_4x4.yaml"
    overrides: tuple[str, ...] = ("model.base=packaged:SmolLM2-135M-Instruct", "model.layer=8", "model.dtype=bfloat16",
                                  "data.task_options.num_train=4000", "data.task_options.augment=false",
                                  "training.batch_size=256", "training.max_steps=400", "training.checkpoint_every=null",
                                  "training.warmup_steps=20")
    needs_gpu: bool = True


PRESETS: dict[str, GpuThroughputSettings] = {
    "full": GpuThroughputSettings(),
    "quick": GpuThroughputSettings(overrides=(*GpuThroughputSettings().overrides, "data.task_options.num_train=1000",
                                              "training.max_steps=100")),
    "tiny": GpuThroughputSettings(overrides=("data.task_options.num_train=16", "data.task_options.num_test=8",
                                             "data.task_options.augment=false", "training.batch_size=8", "training.max_steps=3",
                                             "training.checkpoint_every=null", "training.warmup_steps=1", "reasoner.hidden_size=16",
                                             "training.supervision_steps=2"), needs_gpu=False),
}


def device_name(device: torch.device) -> str:
    """The accelerator's name (e.g. "NVIDIA H100 80GB HBM3"), or "cpu"."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def run(settings: GpuThroughputSettings) -> dict[str, Any]:
    """Extract and train once on this process's device; examples per second and steps per second."""
    device = PartialState().device
    result: dict[str, Any] = {"benchmark": "gpu_throughput", "settings": asdict(settings), "device": device_name(device)}
    if settings.needs_gpu and device.type != "cuda":
        result["skipped"] = "no GPU on this machine (torch.cuda.is_available() is False)"
        log(f"gpu_throughput: {result['skipped']}: nothing measured")
        result["machine"] = machine_info()
        return result
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as scratch:
        recipe = load_recipe(REPO / settings.recipe, [*settings.overrides, f"training.output_dir={scratch}/run",
                                                       f"training.cache_dir={scratch}/cache"])
        tokenizer = load_tokenizer(recipe)
        data = prepare_data(recipe, tokenizer)
        model = build_model(recipe, data)
        synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        synchronize()
        start = time.perf_counter()
        train_set = with_features(model, data.train, recipe)  # a fresh cache: every example through the backbone
        synchronize()
        extraction_seconds = time.perf_counter() - start
        log(f"gpu_throughput: {len(data.train)} examples extracted in {extraction_seconds:.1f} s on {result['device']}")
        start = time.perf_counter()
        trained = train(model, train_set, recipe.training, collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id))
        synchronize()
        training_seconds = time.perf_counter() - start
    result |= {
        "backbone": recipe.model.base, "dtype": recipe.model.dtype, "examples": len(data.train),
        "extraction_seconds": extraction_seconds, "examples_per_second": len(data.train) / extraction_seconds,
        "optimizer_steps": trained.global_step, "training_seconds": training_seconds,
        "steps_per_second": trained.global_step / training_seconds, "batch_size": recipe.training.batch_size,
        "max_memory_bytes": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        "machine": machine_info(),
    }
    log(f"gpu_throughput: {trained.global_step} optimizer steps in {training_seconds:.1f} s")
    return result


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The benchmark's section of docs/benchmarks.md (a table only: `images` is unused)."""
    lines = ["## Throughput on a GPU: feature extraction and training", "",
             f"Command: `{result.get('command', 'python -m benchmarks run gpu_throughput')}`, on {result['device']}.", ""]
    if "skipped" in result:
        return "\n".join(lines + [f"Not measured: {result['skipped']}. Run the command on a machine with a GPU.", ""])
    memory = f"{result['max_memory_bytes'] / 2**30:.1f} GiB" if result.get("max_memory_bytes") else "n/a"
    lines += [table(["backbone", "dtype", "examples", "extraction: examples / s", "batch", "optimizer steps", "training: steps / s",
                     "peak GPU memory"],
                    [[f"`{result['backbone']}`", result["dtype"] or "as saved", result["examples"], f"{result['examples_per_second']:.1f}",
                      result["batch_size"], result["optimizer_steps"], f"{result['steps_per_second']:.2f}", memory]]),
              "Extraction is the frozen backbone over every training example once, into a fresh feature cache; training reads "
              "the cache (no backbone call), so its steps per second are the reasoner's alone.", ""]
    return "\n".join(lines)

