"""What every section of docs/benchmarks.md is written with: tables, the provenance line, noise, figures.

A benchmark's `render(result, images)` builds its section from these; `Images` saves the figures
beside the page and returns the markdown that links them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


@dataclass(frozen=True)
class Images:
    """Where a section's figures go: `img_dir/bench_<name>.png`, linked relative to the page's folder `doc_dir`."""

    img_dir: Path
    doc_dir: Path

    def add(self, figure: Figure, name: str, caption: str) -> str:
        """Save `figure` as `bench_<name>.png`; returns the markdown line that shows it."""
        path = self.img_dir / f"bench_{name}.png"
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        return f"![{caption}]({Path(os.path.relpath(path, self.doc_dir)).as_posix()})\n"


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table, one line per row.

    >>> print(table(["a", "b"], [[1, 2]]), end="")
    | a | b |
    | --- | --- |
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f}"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


def provenance(result: dict[str, Any]) -> str:
    """The command, machine, load average and date of a result, and a warning when the machine was busy."""
    machine = result["machine"]
    loads = _flatten(result, "load_average")
    text = (
        f"Command: `{result.get('command', '?')}` ({result.get('preset', '?')} sizes, {result.get('elapsed_s', '?')} s). "
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['torch_threads']} torch threads, "
        f"torch {machine['torch']}; load average {min(loads):.1f}-{max(loads):.1f} during the run; {machine['date']}.\n"
    )
    if max(loads) > 1.5 * (machine["cores"] or 1):
        text += (f"\n**Measured on a busy machine** (load up to {max(loads):.1f} on {machine['cores']} cores): absolute times are "
                 "inflated several-fold and even the interleaved ratios are noisy; re-run on an idle machine before quoting them.\n")
    return text


def _flatten(value: Any, key: str) -> list[float]:
    """Every number stored under `key` anywhere in a nested result."""
    found: list[float] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.extend(v if isinstance(v, list) else [v])
            else:
                found.extend(_flatten(v, key))
    elif isinstance(value, list):
        for item in value:
            found.extend(_flatten(item, key))
    return [v for v in found if isinstance(v, (int, float))]


def two_standard_errors(ours: float, theirs: float, num_test: int) -> float:
    """Two standard errors of the difference of two exact-match rates on the same `num_test` examples.

    Each rate is a fraction of independent test examples (binomial), so its standard error is sqrt(p(1-p)/n);
    the difference of two has the root of the summed variances. A gap under two standard errors appears
    about one time in twenty between two runs of equal skill.
    """
    return 2 * math.sqrt((ours * (1 - ours) + theirs * (1 - theirs)) / max(num_test, 1))


def within_noise(ours: float, theirs: float, num_test: int) -> bool:
    """Whether two exact-match rates on the same `num_test` examples differ by less than two standard errors."""
    return abs(ours - theirs) <= two_standard_errors(ours, theirs, num_test)


def noise_note(num_test: int) -> str:
    return f"within sampling noise: under two standard errors on {num_test} test examples"


def task_options(options: dict[str, Any]) -> str:
    """A task's options as `key=value, ...`, the way every section names its task."""
    return ", ".join(f"{k}={v}" for k, v in options.items())
