"""Rebuild `docs/benchmarks.md` and its plots (`docs/img/bench_*.png`) from the JSON results.

The page is `HEADER`, then each registered benchmark's `render(result, images)`, in the registry's
order (`benchmarks.__main__.BENCHMARKS`), plus the two parts that read several results
(`benchmarks.combined`). For each benchmark the full-size result is used when there is one, else
the quick one (its section says which). A benchmark without a result gets a line saying so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from . import combined
from .markdown import Images

PRESET_ORDER = ("full", "quick", "tiny")

HEADER = """# Benchmarks

What the reasoner costs and what it buys, measured on this machine by `benchmarks/` (one package,
one module per benchmark). Rebuild everything with

    .venv/bin/python -m benchmarks run NAME ...   # full sizes, the benchmarks named (each section gives its command)
    .venv/bin/python -m benchmarks run --quick    # every benchmark at small sizes, a smoke check of a few minutes
    .venv/bin/python -m benchmarks report         # this page and its plots, from benchmarks/results/

`python -m benchmarks run` with no name runs all of them at full size, which takes hours on this 2-core
machine: each section's command line gives the seconds its own run took. `run NAME --reuse` keeps the runs of an existing
result with the same settings and trains only what it lacks (a new comparator, the time budget). The longest
benchmark (test_time_scaling) writes its result after every trained variant, marked partial, and its section says
what is not measured yet; `run NAME --reuse` continues it. `--set FIELD=VALUE` changes one setting of the preset
(e.g. `--set seeds=[0] --set common.epochs=6`); the section's command line then shows it.

How timings are taken: candidates run interleaved (A, B, C, A, B, C, ... with the order rotating
every repeat), and every comparison is the median over repeats of a ratio measured inside one
repeat, so a burst of load from another process slows both sides alike. The 1-minute load average
is recorded with each result: on this 2-core machine a load well above 2 means other processes
shared the cores, and absolute times (not the ratios) are then inflated.
"""


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The result of each benchmark, from the largest preset that has one."""
    results: dict[str, dict[str, Any]] = {}
    for preset in reversed(PRESET_ORDER):
        for path in sorted((results_dir / preset).glob("*.json")):
            results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return results


def write_report(benchmarks: Mapping[str, ModuleType], results_dir: Path, doc_path: Path, img_dir: Path) -> Path:
    """Write the page from the results of `benchmarks` (name -> module), in that order, and its plots; returns its path."""
    results = load_results(results_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    images = Images(img_dir, doc_path.parent)
    sections = [HEADER]
    for name, module in benchmarks.items():
        if name == "scaling":  # the Sudoku size series (two accuracy results) opens the size series
            sections.append(combined.sudoku_by_size(results, images))
        if name in results:
            sections.append(module.render(results[name], images))
        else:
            sections.append(f"## {name.capitalize()}\n\nNot run yet: `.venv/bin/python -m benchmarks run {name}`.\n")
        if name == "scaling_maze":  # under its section: whether its runs repeat accuracy_maze's
            sections.append(combined.maze_repeats(results))
    doc_path.write_text("\n".join(section for section in sections if section), encoding="utf-8")
    return doc_path
