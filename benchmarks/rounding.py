"""Rounding: how much one training run of each comparator says, when only floating-point rounding changes.

Two runs of the same seeded settings of the maze reasoner gave different exact matches (and different
optimizer step counts: halting ends some batches early) while the one-pass head and the deep stack
repeated to the digit. This benchmark separates the two possible causes:

    fused          latentreason's hand-written RMSNorm / SwiGLU-gate backwards on CPU (the default)
    autograd       the same model with torch's autograd for them: the same mathematics, other rounding
    fused again    the first run repeated in the same process: is training deterministic?

Each comparator (from `benchmarks.accuracy`) trains three times on the same cached features. If the
repeat matches and `autograd` differs, a run's figures are exact for its code but move with any change
of rounding (another torch, another CPU, another kernel): read them as one draw from that spread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

from latentreason.kernels import cpu_kernels

from . import accuracy
from .harness import log, machine_info, training_run
from .markdown import Images, provenance, table, task_options, two_standard_errors

# name -> whether latentreason's hand-written CPU backwards are used (`latentreason.kernels.cpu_kernels`)
VARIANTS: dict[str, bool] = {"fused": True, "autograd": False, "fused again": True}


@dataclass(frozen=True)
class RoundingSettings:
    """The accuracy benchmark's settings and the comparators to train three times each."""

    base: accuracy.AccuracySettings = field(default_factory=lambda: accuracy.MAZE_PRESETS["quick"])
    comparators: tuple[str, ...] = ("one_pass", "deep_stack", "reasoner")
    threads: int | None = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.comparators) - set(accuracy.COMPARATORS))
        if unknown:
            raise ValueError(f"Unknown comparator(s) {unknown} in RoundingSettings.comparators; choose from {accuracy.COMPARATORS}.")


PRESETS: dict[str, RoundingSettings] = {
    # The accuracy_maze data budget (7x7, 1000 mazes x 8 epochs). About 15 minutes on one idle core.
    "full": RoundingSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["full"], time_budget_seconds=None)),
    "quick": RoundingSettings(base=accuracy.MAZE_PRESETS["quick"], comparators=("one_pass", "reasoner")),
    "tiny": RoundingSettings(base=accuracy.MAZE_PRESETS["tiny"], comparators=("one_pass", "reasoner")),
}


def run(settings: RoundingSettings) -> dict[str, Any]:
    """Train every comparator under each variant; return the JSON result."""
    with training_run(settings.threads):
        return _run(settings)


def _run(settings: RoundingSettings) -> dict[str, Any]:
    recipe, data, pad_token_id = accuracy.load_data(settings.base)
    cached: tuple[Any, Any] | None = None
    rows = []
    for name in settings.comparators:
        for variant, fused in VARIANTS.items():
            with cpu_kernels(fused):
                model = accuracy.build(name, settings.base, data)
                if cached is None:  # the same frozen features for every run
                    cached = accuracy.feature_sets(model, data, recipe)
                result = accuracy.train_and_evaluate(model, settings.base, *cached, pad_token_id)
            row = {"name": name, "variant": variant,
                   **{k: result[k] for k in ("accuracy", "exact_match", "mean_steps", "optimizer_steps", "train_seconds", "load_average")},
                   "all_steps_exact_match": result["all_steps"]["exact_match"]}
            rows.append(row)
            log(f"rounding: {name}, {variant}: exact {row['exact_match']:.3f} (all steps {row['all_steps_exact_match']:.3f}), "
                f"{row['optimizer_steps']} optimizer steps")
    return {
        "benchmark": "rounding",
        "machine": machine_info(),
        "settings": asdict(settings) | {"comparators": list(settings.comparators)},
        "data": {"task": settings.base.task, "task_options": dict(settings.base.task_options), "num_train": len(data.train),
                 "num_test": len(data.eval)},
        "rows": rows,
    }



# --- the section of docs/benchmarks.md ---------------------------------------------------------------
METRICS = ("accuracy", "exact_match", "mean_steps", "optimizer_steps", "all_steps_exact_match")


def summary(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per comparator: does the repeat match the first run exactly, and how far `autograd` moves each metric."""
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_name.setdefault(row["name"], {})[row["variant"]] = row
    out = {}
    for name, runs in by_name.items():
        first, repeat, other = runs["fused"], runs["fused again"], runs["autograd"]
        out[name] = {"repeats_exactly": all(first[k] == repeat[k] for k in METRICS),
                     "moves": {k: other[k] - first[k] for k in METRICS}}
    return out


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """Every run in a table, then per comparator: does it repeat, and how far the other rounding moves it."""
    data = result["data"]
    rows = [[f"`{r['name']}`", r["variant"], r["optimizer_steps"], f"{r['accuracy']:.4f}", f"{r['exact_match']:.3f}",
             f"{r['mean_steps']:.2f}", f"{r['all_steps_exact_match']:.3f}"] for r in result["rows"]]
    header = ["comparator", "run", "optimizer steps", "cell accuracy", "exact match (halting)", "mean test steps", "exact match, all steps"]
    summaries = summary(result)
    moved = [name for name, s in summaries.items() if any(v != 0 for v in s["moves"].values())]
    lines = []
    for name, s in summaries.items():
        moves = s["moves"]
        repeat = "repeats exactly in the same process" if s["repeats_exactly"] else "**does not repeat** in the same process"
        if name not in moved:
            lines.append(f"- `{name}`: {repeat}, and the other rounding changes none of its figures.")
        else:
            lines.append(f"- `{name}`: {repeat}, but the other rounding moves it: exact match {moves['exact_match']:+.3f} with halting, "
                         f"{moves['all_steps_exact_match']:+.3f} after all steps, {moves['optimizer_steps']:+d} optimizer steps, "
                         f"mean test steps {moves['mean_steps']:+.2f}.")
    if moved:
        runs = {(r["name"], r["variant"]): r["all_steps_exact_match"] for r in result["rows"]}
        largest = max(moved, key=lambda m: abs(summaries[m]["moves"]["all_steps_exact_match"]))
        gap = summaries[largest]["moves"]["all_steps_exact_match"]
        band = two_standard_errors(runs[largest, "fused"], runs[largest, "autograd"], data["num_test"])
        lines.append(f"- So a single run of {', '.join(f'`{m}`' for m in moved)} is exact for its code but one draw from a spread that any "
                     "change of rounding (another torch, CPU or kernel) samples again. The largest move here, "
                     f"{abs(gap):.3f} of `{largest}`'s exact match after all steps, is "
                     f"{'within' if abs(gap) <= band else 'beyond'} two standard errors of test-set sampling noise "
                     f"({band:.3f} on {data['num_test']} examples), the yardstick the other sections use for a tie.")
    return (
        "## Rounding: how much one training run says\n\n"
        f"Task `{data['task']}` ({task_options(data['task_options'])}), the accuracy benchmark's data budget. Each comparator trains three times on the same "
        "cached features: *fused* (latentreason's hand-written RMSNorm and SwiGLU-gate backwards on CPU, the default), "
        "*autograd* (torch's autograd for them: the same mathematics, other floating-point rounding) and *fused again* (the first "
        "run repeated in the same process). A repeat that matches says training is deterministic; a change under *autograd* "
        "says how far rounding alone moves a run.\n\n"
        + provenance(result) + "\n" + table(header, rows) + "\n" + "\n".join(lines) + "\n"
    )
