"""Ablation: why the reasoner starts slower than a one-pass head, and what each of its parts costs early on.

At a small number of optimizer steps the recursive reasoner of the `accuracy` benchmark is far behind
the one-pass head with the same blocks (it overtakes it later). This benchmark trains the reasoner
with one part changed at a time, each for the same number of optimizer steps on the same cached
features, so the culprit shows as the variant that closes the gap:

    reasoner        as in the accuracy benchmark (T=2 cycles of n=2 latent steps, N_sup=8, EMA, halting)
    n_sup_1         one supervision step per batch in training (tested with N_sup steps): as many
                    batches as the one-pass head sees, instead of N_sup x fewer
    depth_1         T=1, n=1: the shallowest recursion (2 net calls per step instead of 6)
    depth_1_n_sup_1 both: per step, the nearest a reasoner gets to the one-pass head
    no_ema          the raw weights evaluated instead of the EMA
    no_halting      no early stopping of samples in training
    lr_low, lr_high the learning rate / 3 and x 3
    one_pass        the one-pass head (same blocks, applied once), for reference

Every variant is built by `benchmarks.accuracy.build` and trained by `latentreason.training.train`
through `accuracy.train_and_evaluate`, so it differs from the accuracy benchmark's reasoner only in
the named knob.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import accuracy
from .harness import log, machine_info, training_run
from .markdown import Images, noise_note, provenance, table, task_options, within_noise

# name -> (comparator, changes to AccuracySettings, changes to TrainingConfig, what it tests)
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any], str]] = {
    "reasoner": ("reasoner", {}, {}, "as in the accuracy benchmark"),
    "n_sup_1": ("reasoner", {}, {"supervision_steps": 1}, "1 supervision step per batch in training (N_sup at test)"),
    "depth_1": ("reasoner", {"cycles": 1, "latent_steps": 1}, {}, "T=1, n=1: 2 net calls per step instead of T(n+1)"),
    "depth_1_n_sup_1": ("reasoner", {"cycles": 1, "latent_steps": 1, "supervision_steps": 1}, {}, "T=1, n=1 and N_sup=1"),
    "no_ema": ("reasoner", {}, {"ema": False}, "raw weights instead of the EMA"),
    "no_halting": ("reasoner", {}, {"halting": False}, "no early stopping of samples in training"),
    "lr_low": ("reasoner", {"learning_rate": 3e-4}, {}, "learning rate 3e-4 (the benchmarks' 1e-3 / 3)"),
    "lr_high": ("reasoner", {"learning_rate": 3e-3}, {}, "learning rate 3e-3 (the benchmarks' 1e-3 x 3)"),
    "one_pass": ("one_pass", {}, {}, "the reasoner's blocks applied once (reference)"),
}


@dataclass(frozen=True)
class AblationSettings:
    """The accuracy benchmark's settings, the variants to train and the optimizer steps each gets."""

    base: accuracy.AccuracySettings = field(default_factory=lambda: accuracy.PRESETS["quick"])
    variants: tuple[str, ...] = tuple(VARIANTS)
    steps: tuple[int, ...] = (256,)  # optimizer steps per variant; several values give a learning curve
    threads: int | None = 1

    def __post_init__(self) -> None:
        unknown = sorted(set(self.variants) - set(VARIANTS))
        if unknown:
            raise ValueError(f"Unknown ablation variant(s) {unknown}; choose from {sorted(VARIANTS)}.")
        if not self.steps or any(s < 1 for s in self.steps):
            raise ValueError(f"`steps` must be positive optimizer step counts, got {self.steps!r}.")


PRESETS: dict[str, AblationSettings] = {
    # 4x4 Sudoku (6 givens, 1024 puzzles) as in the accuracy benchmark's full preset; at 256 steps the
    # reasoner is still at chance there. About 8 minutes on one idle core.
    "full": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["full"], time_budget_seconds=None), steps=(256,)),
    "quick": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["quick"], time_budget_seconds=None), steps=(64,)),
    "tiny": AblationSettings(base=dataclasses.replace(accuracy.PRESETS["tiny"], time_budget_seconds=None), steps=(2,),
                             variants=("reasoner", "n_sup_1", "no_ema", "one_pass")),
}


# 7x7 mazes, where the reasoner loses to the deep stack and to the one-pass head given the same time: the
# accuracy_maze reasoner's 960 optimizer steps for every variant. About 30 minutes on one idle core.
MAZE_PRESETS: dict[str, AblationSettings] = {
    "full": AblationSettings(base=dataclasses.replace(accuracy.MAZE_PRESETS["full"], time_budget_seconds=None), steps=(960,),
                             variants=("reasoner", "n_sup_1", "depth_1", "no_ema", "no_halting", "lr_low", "lr_high", "one_pass")),
    "quick": AblationSettings(base=accuracy.MAZE_PRESETS["quick"], steps=(64,), variants=("reasoner", "no_halting", "lr_high", "one_pass")),
    "tiny": AblationSettings(base=accuracy.MAZE_PRESETS["tiny"], steps=(2,), variants=("reasoner", "lr_high", "one_pass")),
}


def run(settings: AblationSettings) -> dict[str, Any]:
    """Train every variant for each step count; return the JSON result."""
    with training_run(settings.threads):
        return _run(settings)


def _run(settings: AblationSettings) -> dict[str, Any]:
    recipe, data, pad_token_id = accuracy.load_data(settings.base)
    cached: tuple[Any, Any] | None = None
    rows = []
    for name in settings.variants:
        comparator, setting_changes, training_changes, what = VARIANTS[name]
        variant_settings = dataclasses.replace(settings.base, **setting_changes)
        for steps in settings.steps:
            model = accuracy.build(comparator, variant_settings, data)
            if cached is None:  # the same frozen features for every variant
                cached = accuracy.feature_sets(model, data, recipe)
            start = time.perf_counter()
            result = accuracy.train_and_evaluate(model, variant_settings, *cached, pad_token_id, max_steps=steps,
                                                 training_changes=training_changes)
            log(f"ablation: {name} at {steps} steps: accuracy {result['accuracy']:.3f}, exact {result['exact_match']:.3f} "
                f"({time.perf_counter() - start:.0f} s)")
            rows.append({"name": name, "what": what, "steps": steps, "comparator": comparator,
                         "settings_changes": setting_changes, "training_changes": training_changes,
                         "examples_seen": result["optimizer_steps"] * variant_settings.batch_size
                         // (training_changes.get("supervision_steps") or (1 if comparator == "one_pass" else variant_settings.supervision_steps)),
                         **{k: result[k] for k in ("optimizer_steps", "train_seconds", "load_average", "accuracy", "exact_match",
                                                   "mean_steps", "per_step", "all_steps")}})
    return {
        "benchmark": "ablation",
        "machine": machine_info(),
        "settings": asdict(settings) | {"variants": list(settings.variants), "steps": list(settings.steps)},
        "data": {"task": settings.base.task, "task_options": dict(settings.base.task_options), "num_train": len(data.train),
                 "num_test": len(data.eval), "labels": list(data.label_names)},
        "variants": rows,
    }


# --- the section of docs/benchmarks.md ---------------------------------------------------------------
def at_trained_steps(row: dict[str, Any], supervision_steps: int) -> dict[str, Any]:
    """A variant's test scores after as many refinement steps as it was trained with (its N_sup)."""
    steps = row.get("training_changes", {}).get("supervision_steps", supervision_steps)
    return row["per_step"][min(steps, len(row["per_step"])) - 1]


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """Every variant after one step and after all, then each read at its own N_sup against the reasoner."""
    data, rows = result["data"], result["variants"]
    table_rows = []
    for r in rows:
        first = r["per_step"][0]
        table_rows.append([f"`{r['name']}`", r["what"], r["optimizer_steps"], f"~{r['examples_seen']:,d}", f"{r['train_seconds']:.0f}",
                           f"{first['accuracy']:.3f} / {first['exact_match']:.3f}",
                           f"{r['all_steps']['accuracy']:.3f} / {r['all_steps']['exact_match']:.3f}"])
    header = ["variant", "what changes", "optimizer steps", "examples seen", "train s", "after step 1: cells / exact",
              "after all steps: cells / exact"]
    title = "why the reasoner starts slower" if data["task"] == "sudoku" else f"what limits the reasoner on {data['task']}"
    return (
        f"## Ablation: {title}\n\n"
        f"Task `{data['task']}` ({task_options(data['task_options'])}); the accuracy benchmark's reasoner trained with one part changed at a time, every "
        "variant for the same optimizer steps on the same cached features (`benchmarks/ablation.py` lists the variants). "
        "*Examples seen* = optimizer steps x batch / supervision steps per batch (about: halting can end a batch early).\n\n"
        + provenance(result) + "\n" + table(header, table_rows) + "\n" + "\n".join(findings(result)) + "\n"
    )


def findings(result: dict[str, Any]) -> list[str]:
    """Plain sentences: which variants close the gap to the one-pass head, which are level with the reasoner, which worse."""
    rows = result["variants"]
    by_name = {r["name"]: r for r in rows}
    if "reasoner" not in by_name:
        return []
    trained = {r["name"]: at_trained_steps(r, result["settings"]["base"]["supervision_steps"]) for r in rows}
    num_test = result["data"]["num_test"]
    ours = trained["reasoner"]
    single = [f"`{name}`" for name, scores in trained.items() if scores["step"] == 1]
    lines = ["- Below, each variant is read at the refinement steps it was trained with (its N_sup"
             + (f"; 1 for {', '.join(single)}" if single else "") + f"): the reasoner reaches cells {ours['accuracy']:.3f}, "
             f"exact match {ours['exact_match']:.3f}."]
    if "one_pass" in by_name:
        theirs = trained["one_pass"]
        gap = theirs["exact_match"] - ours["exact_match"]
        lines.append(f"- At the same optimizer steps the one-pass head reaches {theirs['accuracy']:.3f} / {theirs['exact_match']:.3f}.")
        if gap > 0:
            closers = [r["name"] for r in rows if r["name"] not in ("reasoner", "one_pass")
                       and trained[r["name"]]["exact_match"] - ours["exact_match"] >= 0.5 * gap]
            lines.append("- " + ("Variants that close at least half of the exact-match gap: " + ", ".join(
                f"`{name}` ({trained[name]['exact_match']:.3f})" for name in closers) + "." if closers
                else "No single change closes half of the exact-match gap."))
    changed = [r["name"] for r in rows if r["name"] != "reasoner"]
    level = [name for name in changed if within_noise(trained[name]["exact_match"], ours["exact_match"], num_test)]
    if level:
        lines.append(f"- {noise_note(num_test).capitalize()} of the reasoner's exact match: "
                     + ", ".join(f"`{name}` ({trained[name]['exact_match']:.3f})" for name in level)
                     + ". These changes make no difference this run can show.")
    worse = [name for name in changed if name not in level and trained[name]["exact_match"] < ours["exact_match"]]
    if worse:
        lines.append("- Worse than the reasoner beyond that noise: " + ", ".join(
            f"`{name}` ({trained[name]['exact_match']:.3f})" for name in worse) + ".")
    most = max(r["examples_seen"] for r in rows)
    top = sorted((r for r in rows if r["examples_seen"] == most), key=lambda r: -trained[r["name"]]["exact_match"])
    rest = [trained[r["name"]]["exact_match"] for r in rows if r["examples_seen"] < most]
    if rest and min(trained[r["name"]]["exact_match"] for r in top) > max(rest):
        fewer = max(r["examples_seen"] for r in rows if r["examples_seen"] < most)
        lines.append("- The runs that see the most examples (" + ", ".join(f"`{r['name']}`" for r in top)
                     + f": ~{most:,d} against ~{fewer:,d} or fewer at the same optimizer steps) rank first. Deep supervision "
                     "spends N_sup optimizer steps on each batch; on this task, steps on new examples are worth more than "
                     "further steps on the same ones.")
    return lines
