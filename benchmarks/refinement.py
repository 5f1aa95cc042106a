"""Refinement at test time: a reasoner trained with N_sup=16 steps, tested with 1..16, and with halting.

The published finding (ARC Prize's analysis of HRM/TRM) is that a model trained with 16 refinement
steps keeps most of its accuracy when run with one step at test time (about 7/8). This benchmark
checks it on 4x4 Sudoku: the `accuracy` benchmark's reasoner, trained with N_sup=16 on the same data
and budget, evaluated after each refinement step 1..16, and with halting at every threshold of the
halting curve (exact match against mean steps used), so the cost of halting early shows.

Same code as `benchmarks.accuracy` (one comparator, `reasoner`); only the presets differ.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from matplotlib.figure import Figure

from .accuracy import PRESETS as ACCURACY_PRESETS
from .accuracy import AccuracySettings, run
from .markdown import Images, provenance, table, task_options

PRESETS: dict[str, AccuracySettings] = {
    # 12 epochs of 1024 puzzles with N_sup=16: up to 3072 optimizer steps. About 15 minutes on one idle core.
    "full": dataclasses.replace(ACCURACY_PRESETS["full"], supervision_steps=16, comparators=("reasoner",), time_budget_seconds=None),
    "quick": dataclasses.replace(ACCURACY_PRESETS["quick"], supervision_steps=16, comparators=("reasoner",), time_budget_seconds=None),
    "tiny": dataclasses.replace(ACCURACY_PRESETS["tiny"], supervision_steps=4, comparators=("reasoner",), time_budget_seconds=None),
}

__all__ = ["PRESETS", "render", "run"]


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """Exact match after each test step, the halting curve, and what one step keeps against the published 7/8."""
    settings, data = result["settings"], result["data"]
    reasoner = next(c for c in result["comparators"] if c["name"] == "reasoner")["data"]
    per_step, curve = reasoner["per_step"], reasoner.get("halting_curve", [])
    best = max(per_step, key=lambda p: (p["exact_match"], p["accuracy"]))
    first, last = per_step[0], per_step[-1]
    step_rows = [[p["step"], f"{p['accuracy']:.3f}", f"{p['exact_match']:.3f}",
                  f"{p['exact_match'] / last['exact_match']:.0%}" if last["exact_match"] else "n/a"] for p in per_step]
    curve_rows = [[f"{row['threshold']:g}", f"{row['mean_steps']:.2f}", f"{row['accuracy']:.3f}", f"{row['exact_match']:.3f}"] for row in curve]
    lines = []
    if last["exact_match"] > 0:
        kept = first["exact_match"] / last["exact_match"]
        lines.append(f"- One refinement step at test keeps {kept:.0%} of the exact match after {last['step']} steps "
                     f"({first['exact_match']:.3f} vs {last['exact_match']:.3f}; cells {first['accuracy']:.3f} vs {last['accuracy']:.3f}). "
                     f"The published finding is about 7/8 (88%): {'confirmed' if kept >= 0.8 else '**not confirmed here**'}.")
    lines.append(f"- Best step: {best['step']} (exact match {best['exact_match']:.3f}).")
    if curve:
        default = next((row for row in curve if row["threshold"] == 0.5), curve[0])
        good = [row for row in curve if row["exact_match"] >= last["exact_match"] - 0.01]
        text = (f"- Halting at the default threshold (p > 0.5) uses {default['mean_steps']:.2f} steps for exact match "
                f"{default['exact_match']:.3f}.")
        if good:
            cheapest = min(good, key=lambda row: row["mean_steps"])
            text += (f" The cheapest threshold within 1 point of running all {last['step']} steps is p > {cheapest['threshold']:g}: "
                     f"{cheapest['mean_steps']:.2f} steps, exact match {cheapest['exact_match']:.3f}.")
        lines.append(text + " (Read on the test set: a threshold for use should be picked on held-out data.)")
    return (
        f"## Refinement at test time: trained with N_sup={settings['supervision_steps']}, tested with 1..{last['step']}\n\n"
        f"Task `{data['task']}` ({task_options(data['task_options'])}): the accuracy benchmark's reasoner (hidden {settings['hidden_size']}, {settings['mixer']} "
        f"mixer, n={settings['latent_steps']}, T={settings['cycles']}) trained with N_sup={settings['supervision_steps']} for "
        f"{settings['epochs']} epochs of {data['num_train']} examples ({reasoner['optimizer_steps']} optimizer steps, {reasoner['train_seconds']:.0f} s), "
        f"then evaluated on {data['num_test']} test examples after each refinement step, and with halting at each threshold "
        "of the halting curve.\n\n"
        + provenance(result) + "\n" + table(["test steps", "cell accuracy", "exact match", "of the last step's exact match"], step_rows)
        + "\n" + (table(["halt when p >", "mean steps", "cell accuracy", "exact match"], curve_rows) + "\n" if curve_rows else "")
        + "\n".join(lines) + "\n\n"
        + (images.add(figure(result), "refinement", "accuracy vs test steps and the halting curve") if images else "")
    )


def figure(result: dict[str, Any]) -> Figure:
    """Left: accuracy against the test steps. Right: the halting curve, exact match against the mean steps used."""
    reasoner = next(c for c in result["comparators"] if c["name"] == "reasoner")["data"]
    per_step, curve = reasoner["per_step"], reasoner.get("halting_curve", [])
    last = per_step[-1]
    plot = Figure(figsize=(12, 4.2))
    axes = plot.subplots(1, 2)
    steps = [p["step"] for p in per_step]
    axes[0].plot(steps, [p["accuracy"] for p in per_step], "o-", label="cell accuracy")
    axes[0].plot(steps, [p["exact_match"] for p in per_step], "s--", label="exact match")
    axes[0].set(title=f"trained with N_sup={result['settings']['supervision_steps']}: accuracy vs test steps",
                xlabel="refinement steps at test", ylabel="accuracy", ylim=(0, 1.02))
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if curve:
        axes[1].plot([row["mean_steps"] for row in curve], [row["exact_match"] for row in curve], "o-", color="tab:purple")
        for row in curve:
            axes[1].annotate(f"p>{row['threshold']:g}", (row["mean_steps"], row["exact_match"]), fontsize=7, xytext=(3, -10),
                             textcoords="offset points")
        axes[1].axhline(last["exact_match"], color="gray", linestyle=":", label=f"all {last['step']} steps")
        axes[1].set(title="halting: exact match vs mean steps used", xlabel="mean refinement steps", ylabel="exact match")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    return plot
