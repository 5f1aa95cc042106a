"""Parts of docs/benchmarks.md that read several results, so no one benchmark's `render` owns them.

- `sudoku_by_size`: the accuracy benchmarks on Sudoku (4x4 in `accuracy`, 6x6 in `accuracy_sudoku6`)
  side by side against grid size; the page puts it before the other size series (`scaling`).
- `maze_repeats`: where `scaling_maze` repeats `accuracy_maze`'s settings at one size, both runs of
  each comparator side by side; the page puts it under the `scaling_maze` section.

Each returns "" when a result it reads is missing or does not fit.
"""

from __future__ import annotations

from typing import Any

from matplotlib.figure import Figure

from .accuracy_render import RECURSIVE
from .markdown import Images, table

SUDOKU_SIZES = ("accuracy", "accuracy_sudoku6")  # the accuracy benchmarks on Sudoku, one per grid size


def sudoku_by_size(results: dict[str, dict[str, Any]], images: Images | None = None) -> str:
    """Sudoku exact match against grid size, per comparator, under each budget that every size ran."""
    if not all(name in results for name in SUDOKU_SIZES):
        return ""
    by_size = sorted((results[name] for name in SUDOKU_SIZES), key=lambda r: r["data"]["task_options"]["size"])
    sizes = [r["data"]["task_options"]["size"] for r in by_size]
    names = [c["name"] for c in by_size[0]["comparators"] if all(any(d["name"] == c["name"] for d in r["comparators"]) for r in by_size)]
    budgets = [b for b in ("data", "time") if all(b in c for r in by_size for c in r["comparators"])]

    def runs(name: str, budget: str) -> list[dict[str, Any]]:
        return [next(c for c in r["comparators"] if c["name"] == name)[budget] for r in by_size]

    rows = []
    for budget in budgets:
        for name in names:
            cells = [f"{run['exact_match']:.3f}" + (f" ({run['all_steps']['exact_match']:.3f} all steps)" if name in RECURSIVE else "")
                     for run in runs(name, budget)]
            rows.append([f"`{name}`", budget, *cells])
    which = " and ".join(budgets)
    image = ""
    if images:
        plot = Figure(figsize=(6.5, 4.2))
        axis = plot.subplots()
        for index, name in enumerate(names):
            for budget, style in zip(budgets, ("-", ":"), strict=False):
                axis.plot(sizes, [run["exact_match"] for run in runs(name, budget)], "o" + style, color=f"C{index}", label=f"{name} ({budget})")
        axis.set(title=f"Sudoku: exact match vs grid size ({which} budget)", xlabel="grid side", ylabel="exact match", ylim=(0, 1.02), xticks=sizes)
        axis.legend(fontsize=6, ncol=2)
        axis.grid(alpha=0.3)
        image = images.add(plot, "scaling_sudoku", "Sudoku: exact match vs grid size")
    givens = ", ".join(f"{r['data']['task_options']['size']}x{r['data']['task_options']['size']}: {r['data']['task_options'].get('givens')} givens"
                       for r in by_size)
    return (
        "## Accuracy against task size (Sudoku)\n\n"
        f"Exact match under the {which} budget, from the accuracy benchmarks of each grid size ({givens}; same puzzles x epochs, "
        "same comparators; with halting, and after all steps for the recursive ones). Commands: "
        + ", ".join(f"`{r.get('command', '?')}`" for r in by_size) + ".\n\n"
        + table(["comparator", "budget", *[f"{size}x{size}" for size in sizes]], rows) + "\n"
        + ("9x9 is not in this table: it is past this machine's budget. One comparator on 9x9 (the `sudoku_9x9` recipe, "
           "40 givens, 600 optimizer steps) gets 90% of cells and 2 of 100 grids right "
           "([tasks.md](tasks.md#sudoku)). The TRM reference trains 9x9 (Sudoku-Extreme) for 50,000 epochs, up to 36 hours on an "
           "L40S GPU; six comparators at two budgets, at a size where any of them learns, would take days of this CPU.\n\n" if max(sizes) < 9 else "")
        + image
    )


def maze_repeats(results: dict[str, dict[str, Any]]) -> str:
    """Where a size of `scaling_maze` repeats `accuracy_maze`'s settings: both runs side by side, per comparator.

    Two runs of the same seeded settings, made at different times, show how far a figure moves between runs.
    """
    if "scaling_maze" not in results or "accuracy_maze" not in results:
        return ""
    scaling, accuracy = results["scaling_maze"], results["accuracy_maze"]
    base, options = scaling["settings"]["base"], accuracy["data"]["task_options"]
    size = options.get(scaling["settings"]["size_option"])
    same = {k: v for k, v in base.items() if k not in ("comparators", "time_budget_seconds", "calibration_seconds")}
    if same != {k: v for k, v in accuracy["settings"].items() if k in same}:
        return ""
    lines, moved = [], []
    for row in scaling["rows"]:
        other = next((c["data"] for c in accuracy["comparators"] if c["name"] == row["name"]), None)
        if row["size"] != size or row.get("budget", "data") != "data" or other is None:
            continue
        lines.append(f"`{row['name']}` {row['exact_match']:.3f} here ({row['optimizer_steps']} optimizer steps), "
                     f"{other['exact_match']:.3f} there ({other['optimizer_steps']})")
        if row["exact_match"] != other["exact_match"] or row["optimizer_steps"] != other["optimizer_steps"]:
            moved.append(f"`{row['name']}`")
    if not lines:
        return ""
    reading = ("every comparator repeats to the digit" if not moved else
               f"{', '.join(moved)} moved between two runs of the same seeded settings (made at different times, so perhaps "
               "with other code or rounding; the Rounding section measures how far rounding alone moves a run): read "
               f"{'its' if len(moved) == 1 else 'their'} figures on this task as one draw from that spread")
    return (f"The {size}x{size} data-budget runs repeat those of `accuracy_maze` (same settings and seed, "
            f"{accuracy['machine']['date']}); exact match: " + "; ".join(lines) + f". So {reading}.\n")
