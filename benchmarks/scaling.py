"""Accuracy against task size: where the recursion should pay, as the serial depth of the task grows.

Running parity of 8, 12 and 16 bits (output bit i = XOR of bits 0..i): the last bit depends on every
input bit, and the number of sequential XORs grows with the length. At each size three of the
`accuracy` benchmark's comparators train under the same data budget on the same frozen features
(Sudoku's size series is the `accuracy` (4x4) and `accuracy_sudoku6` (6x6) benchmarks, all six
comparators each):

    one_pass    the reasoner's blocks applied once (same parameters)
    deep_stack  the blocks stacked to the reasoner's effective depth, no weight sharing
    reasoner    the recursive reasoner

Every size is one `benchmarks.accuracy` run (same code, same training loop, same evaluation).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from matplotlib.figure import Figure

from . import accuracy
from .harness import log, machine_info, torch_threads
from .markdown import Images, noise_note, provenance, table, within_noise


@dataclass(frozen=True)
class ScalingSettings:
    """The accuracy settings shared by every size, the task option that sets the size, and the sizes."""

    base: accuracy.AccuracySettings = field(default_factory=lambda: dataclasses.replace(
        accuracy.PARITY_PRESETS["full"], comparators=("one_pass", "deep_stack", "reasoner"), time_budget_seconds=None))
    size_option: str = "length"
    sizes: tuple[int, ...] = (8, 12, 16)
    per_size: dict[int, dict[str, Any]] = field(default_factory=dict)  # more task options for a size (e.g. Sudoku givens)
    # Sizes at which every comparator is also retrained for the reasoner's own training seconds (the time budget).
    time_budget_at: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.sizes:
            raise ValueError("`sizes` must name at least one task size.")
        if self.base.time_budget_seconds is not None:
            raise ValueError("Set base.time_budget_seconds=None; name the sizes that also get the time budget in `time_budget_at`.")
        if not set(self.time_budget_at) <= set(self.sizes):
            raise ValueError(f"`time_budget_at` {self.time_budget_at} must be among `sizes` {self.sizes}.")


PRESETS: dict[str, ScalingSettings] = {
    # 6 epochs of 2000 strings per size (the accuracy_parity budget). About 45 minutes on one idle core.
    "full": ScalingSettings(),
    "quick": ScalingSettings(base=dataclasses.replace(accuracy.PARITY_PRESETS["quick"], comparators=("one_pass", "reasoner"),
                                                      time_budget_seconds=None), sizes=(8, 12)),
    "tiny": ScalingSettings(base=dataclasses.replace(accuracy.PARITY_PRESETS["tiny"], comparators=("one_pass", "reasoner"),
                                                     time_budget_seconds=None), sizes=(3, 4)),
}

# The largest parity size again, with the time budget too: every comparator also gets the reasoner's own
# training seconds, so the one-step heads get as many (or more) optimizer steps than the reasoner. About 25 minutes.
TIME_PRESETS: dict[str, ScalingSettings] = {
    "full": dataclasses.replace(PRESETS["full"], sizes=(16,), time_budget_at=(16,)),
    "quick": dataclasses.replace(PRESETS["quick"], sizes=(12,), time_budget_at=(12,)),
    "tiny": dataclasses.replace(PRESETS["tiny"], sizes=(4,), time_budget_at=(4,)),
}


def run(settings: ScalingSettings) -> dict[str, Any]:
    """One accuracy run per size; return the JSON result with a row per (size, comparator)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for size in settings.sizes:
        options = {**settings.base.task_options, settings.size_option: size, **settings.per_size.get(size, {})}
        sized = dataclasses.replace(settings.base, task_options=options,
                                    time_budget_seconds="reasoner" if size in settings.time_budget_at else None)
        log(f"scaling: {settings.base.task} {settings.size_option}={size}")
        with torch_threads(sized.threads):
            result = accuracy._run(sized)
        for comparator in result["comparators"]:
            for budget in ("data", "time"):
                if budget not in comparator:
                    continue
                trained = comparator[budget]
                rows.append({
                    "size": size, "task_options": options, "name": comparator["name"], "budget": budget,
                    "trainable_parameters": comparator["trainable_parameters"], "layers_per_step": comparator["layers_per_step"],
                    "supervision_steps": comparator["supervision_steps"],
                    "num_train": result["data"]["num_train"], "num_test": result["data"]["num_test"],
                    **{k: trained[k] for k in ("optimizer_steps", "train_seconds", "load_average", "accuracy", "exact_match",
                                               "mean_steps", "per_step", "all_steps")},
                })
    return {
        "benchmark": "scaling",
        "machine": machine_info(),
        "settings": asdict(settings) | {"sizes": list(settings.sizes), "per_size": {str(k): v for k, v in settings.per_size.items()}},
        "task": settings.base.task,
        "rows": rows,
    }


# --- the section of docs/benchmarks.md ---------------------------------------------------------------
def render(result: dict[str, Any], images: Images | None = None) -> str:
    """Every (size, comparator, budget) in a table, the reasoner against the best other at each size, and the figure."""
    settings, base = result["settings"], result["settings"]["base"]
    rows = [{"budget": "data", **r} for r in result["rows"]]  # results from before the time budget have data-budget rows only
    sizes = sorted({r["size"] for r in rows})
    budgets = [b for b in ("data", "time") if any(r["budget"] == b for r in rows)]
    table_rows = []
    for r in rows:
        recursive = r["name"] == "reasoner"
        table_rows.append([r["size"], f"`{r['name']}`", r["budget"], f"{r['trainable_parameters']:,d}", r["layers_per_step"], r["optimizer_steps"],
                           f"{r['train_seconds']:.0f}", f"{r['accuracy']:.3f}", f"{r['exact_match']:.3f}",
                           f"{r['mean_steps']:.2f}" if recursive else "1",
                           f"{r['all_steps']['accuracy']:.3f} / {r['all_steps']['exact_match']:.3f}" if recursive else "same"])
    header = [settings["size_option"], "comparator", "budget", "trainable params", "layers per step", "optimizer steps", "train s",
              "cell accuracy", "exact match", "test steps (halting)", "all N_sup steps: cells / exact"]
    image = images.add(figure(result), result.get("benchmark", "scaling"), f"{result['task']}: exact match vs task size") \
        if images and len(sizes) > 1 else ""
    which = " and ".join(budgets)
    return (
        f"## Accuracy against task size ({result['task']}, {which} budget{'s' if len(budgets) > 1 else ''})\n\n"
        f"Task `{result['task']}` at {settings['size_option']} {', '.join(map(str, sizes))}: at each size the comparators train on "
        f"the same {base['task_options'].get('num_train')} examples x {base['epochs']} epochs (data budget"
        + (", and the reasoner's training seconds: time budget" if "time" in budgets else "") + f") on the frozen features of "
        f"`{base['backbone']}`; reasoner hidden {base['hidden_size']}, {base['mixer']} mixer, n={base['latent_steps']}, "
        f"T={base['cycles']}, N_sup={base['supervision_steps']}. Each size is one run of the accuracy benchmark's code.\n\n"
        + provenance(result) + "\n" + table(header, table_rows) + "\n" + "\n".join(findings(result["settings"]["size_option"], rows))
        + "\n\n" + image
    )


def findings(size_option: str, rows: list[dict[str, Any]]) -> list[str]:
    """At each budget and size: the reasoner (all steps) against the best other comparator, ahead, level or behind."""
    names = list(dict.fromkeys(r["name"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    budgets = [b for b in ("data", "time") if any(r["budget"] == b for r in rows)]
    by = {(r["size"], r["name"], r["budget"]): r for r in rows}
    lines = []
    for budget in budgets:
        for size in sizes:
            if (size, "reasoner", budget) not in by:
                continue
            ours = by[(size, "reasoner", budget)]
            others = {name: by[(size, name, budget)] for name in names if name != "reasoner" and (size, name, budget) in by}
            if others:
                best = max(others, key=lambda name: others[name]["exact_match"])
                theirs = others[best]
                mine = ours["all_steps"]["exact_match"]
                close = mine != theirs["exact_match"] and within_noise(mine, theirs["exact_match"], ours["num_test"])
                relation = ("level with" if mine == theirs["exact_match"] or close
                            else "ahead of" if mine > theirs["exact_match"] else "behind")
                lines.append(f"- {budget} budget, {size_option} {size}: the reasoner (all steps) reaches exact match "
                             f"{ours['all_steps']['exact_match']:.3f} ({ours['optimizer_steps']} optimizer steps, {ours['train_seconds']:.0f} s), "
                             f"{relation} the best other, `{best}` ({theirs['exact_match']:.3f}; {theirs['optimizer_steps']} steps, "
                             f"{theirs['train_seconds']:.0f} s)" + (f"; the gap is {noise_note(ours['num_test'])}." if close else "."))
    if "data" in budgets:
        lines.append("- Under the data budget the reasoner takes up to N_sup optimizer steps per batch (deep supervision) and the "
                     "one-step heads one, so it gets more steps and seconds; the time budget, where run, gives every comparator "
                     "the reasoner's own training seconds.")
    return lines


def figure(result: dict[str, Any]) -> Figure:
    """Exact match against task size per comparator (data budget); the reasoner with halting and after all steps."""
    settings = result["settings"]
    rows = [{"budget": "data", **r} for r in result["rows"]]
    names = list(dict.fromkeys(r["name"] for r in rows))
    sizes = sorted({r["size"] for r in rows})
    by = {(r["size"], r["name"], r["budget"]): r for r in rows}
    plot = Figure(figsize=(6.5, 4.2))
    axis = plot.subplots()
    for index, name in enumerate(names):
        points = [(size, by[(size, name, "data")]) for size in sizes if (size, name, "data") in by]
        axis.plot([p[0] for p in points], [p[1]["exact_match"] for p in points], "o-", color=f"C{index}",
                  label=f"{name} (halting)" if name == "reasoner" else name)
        if name == "reasoner":
            axis.plot([p[0] for p in points], [p[1]["all_steps"]["exact_match"] for p in points], "s--", color=f"C{index}",
                      label="reasoner (all N_sup steps)")
    axis.set(title=f"{result['task']}: exact match vs {settings['size_option']} (data budget)", xlabel=settings["size_option"],
             ylabel="exact match", ylim=(0, 1.02), xticks=sizes)
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    return plot
