"""The README demo under the mixer norm and the loss it could use: which one the demo should ship.

Runs `latentreason train recipes/demo.yaml` (4x4 Sudoku on frozen all-MiniLM-L6-v2, mlp mixer) for
each variant and seed, as a user would, and reads each run's eval_results.json:
- `sequence`: the mlp mixer's norm over the sequence axis, as TRM's reference computes it, softmax CE;
- `channel`: the norm over channels, per position (what latentreason ran before), softmax CE;
- `stablemax`: the reference's norm with the reference's stablemax cross-entropy;
- `calibrated`: `stablemax` with a tenth of the training data held out to calibrate the halting
  threshold (`training.calibrate_halting=0.1`): the recipe as shipped.
Exact match after each refinement step and with halting, per seed, and their mean, min and max.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .harness import REPO_ROOT, load_average, machine_info
from .markdown import Images, provenance, table

VARIANTS: dict[str, tuple[str, ...]] = {
    "sequence": ("training.loss=softmax", "training.calibrate_halting=0"),
    "channel": ("reasoner.mlp_norm=channel", "training.loss=softmax", "training.calibrate_halting=0"),
    "stablemax": ("training.loss=stablemax", "training.calibrate_halting=0"),
    "calibrated": ("training.loss=stablemax", "training.calibrate_halting=0.1"),  # the recipe as shipped
}


@dataclass(frozen=True)
class Settings:
    seeds: tuple[int, ...] = (0, 1, 2)
    recipe: str = "recipes/demo.yaml"
    overrides: tuple[str, ...] = ()  # on top of each variant's (the tiny preset shrinks the run)
    variants: tuple[str, ...] = field(default=tuple(VARIANTS))


PRESETS = {
    "full": Settings(),
    "quick": Settings(seeds=(0,), overrides=("training.max_steps=300",)),
    "tiny": Settings(seeds=(0,), variants=("sequence", "calibrated"), overrides=(
        "training.max_steps=4", "training.supervision_steps=2", "data.task_options.num_train=64", "data.task_options.num_test=16",
        "eval.steps=2", "reasoner.max_supervision_steps=2", "training.batch_size=16", "training.checkpoint_every=null",
    )),
}


def train_once(settings: Settings, variant: str, seed: int, output_dir: Path) -> dict[str, Any]:
    """One `latentreason train` run of the recipe with the variant's overrides; its eval_results.json."""
    overrides = [*VARIANTS[variant], *settings.overrides, f"training.seed={seed}", f"training.output_dir={output_dir}",
                 "training.progress_bar=false"]
    command = [sys.executable, "-m", "latentreason.cli", "train", settings.recipe, *overrides]
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    return json.loads((output_dir / "eval_results.json").read_text(encoding="utf-8"))


def summarise(runs: dict[str, dict[int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per variant: exact match per refinement step and with halting, per seed and as mean / min / max."""
    rows = []
    for variant, by_seed in runs.items():
        per_seed = {seed: [step["exact_match"] for step in results["per_step"]] for seed, results in sorted(by_seed.items())}
        steps = list(zip(*per_seed.values()))
        halting = [results["halting"]["exact_match"] for results in by_seed.values()]
        rows.append({
            "variant": variant,
            "overrides": list(VARIANTS[variant]),
            "seeds": sorted(by_seed),
            "exact_match_per_seed": {str(seed): values for seed, values in per_seed.items()},
            "exact_match": [_spread(values) for values in steps],
            "cells_last_step": _spread([results["per_step"][-1]["accuracy"] for results in by_seed.values()]),
            "halting_exact_match": _spread(halting),
            "halting_mean_steps": _spread([results["halting"]["mean_steps"] for results in by_seed.values()]),
        })
    return rows


def _spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "min": min(values), "max": max(values)}


def run(settings: Settings) -> dict[str, Any]:
    loads = []
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for variant in settings.variants:
            runs[variant] = {}
            for seed in settings.seeds:
                loads.append(load_average())
                runs[variant][seed] = train_once(settings, variant, seed, Path(scratch) / f"{variant}_{seed}")
    return {"settings": asdict(settings), "rows": summarise(runs), "load_average": loads, "machine": machine_info()}


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The section of docs/benchmarks.md: exact match per refinement step and with halting, per variant, over seeds."""
    rows = result["rows"]
    seeds = rows[0]["seeds"]
    steps = len(rows[0]["exact_match"])

    def cell(spread: dict[str, float]) -> str:
        return f"{spread['mean']:.3f} [{spread['min']:.3f}, {spread['max']:.3f}]" if len(seeds) > 1 else f"{spread['mean']:.3f}"

    body = [[row["variant"], " ".join(f"`{o}`" for o in row["overrides"])] + [cell(s) for s in row["exact_match"]]
            + [cell(row["halting_exact_match"]) + f" @ {row['halting_mean_steps']['mean']:.2f}"] for row in rows]
    return (
        "## The README demo: the mixer's norm and the loss\n\n"
        f"`{result['settings']['recipe']}` (4x4 Sudoku, frozen all-MiniLM-L6-v2, mlp mixer) trained by `latentreason train` with each "
        f"variant's overrides, seeds {', '.join(map(str, seeds))}; exact match on its 500 test puzzles after each refinement step, "
        "and with halting (threshold 0.5; mean steps after @). Each cell: mean [min, max] over the seeds. `sequence` is the "
        "mlp mixer as TRM's reference computes it (the norm over the sequence axis), `channel` the per-position norm "
        "latentreason ran before, `stablemax` the reference's network with the reference's loss, `calibrated` that with "
        "the halting threshold calibrated on a held-out tenth of the training data (the recipe as shipped).\n\n"
        + table(["variant", "overrides", *[f"step {i}" for i in range(1, steps + 1)], "halting"], body)
        + (f"\n{result['note']}\n" if result.get("note") else "")
        + "\n" + provenance(result)
    )
