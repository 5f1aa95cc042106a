"""Command line: `python -m benchmarks run [NAME ...] [--quick] [--set FIELD=VALUE ...]` and `python -m benchmarks report`.

    .venv/bin/python -m benchmarks run                  # every benchmark, full sizes (about seven hours on this 2-core machine)
    .venv/bin/python -m benchmarks run speed --quick    # one benchmark, small sizes (a smoke check)
    .venv/bin/python -m benchmarks run accuracy_maze --reuse  # train only what its result lacks
    .venv/bin/python -m benchmarks run state_tracking --quick --set parts=[language_lm] --reuse  # one setting changed
    .venv/bin/python -m benchmarks report               # rebuild docs/benchmarks.md and its plots from the JSON results

Results go to `benchmarks/results/<preset>/<name>.json`; `run` rebuilds the report afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from . import (
    ablation,
    ablation_maze,
    accuracy,
    accuracy_maze,
    accuracy_parity,
    accuracy_sort,
    accuracy_sudoku6,
    default_recipes,
    demo_variants,
    feature_cache,
    gpu_throughput,
    memory,
    overhead,
    refinement,
    report,
    rounding,
    scaling,
    scaling_maze,
    scaling_time,
    speed,
    state_tracking,
    test_time_scaling,
    trm_parity,
)
from .harness import DOC_PATH, IMG_DIR, RESULTS_DIR, command_line, log, write_result

# Every benchmark: a module with `PRESETS`, `run(settings)` and `render(result, images)` (see `benchmarks/__init__.py`).
# The order is that of the sections of docs/benchmarks.md, and of the runs of `run` with no name.
BENCHMARKS: dict[str, ModuleType] = {
    "trm_parity": trm_parity,
    "demo_variants": demo_variants,
    "state_tracking": state_tracking,
    "default_recipes": default_recipes,
    "memory": memory,
    "speed": speed,
    "overhead": overhead,
    "accuracy": accuracy,
    "accuracy_sudoku6": accuracy_sudoku6,
    "accuracy_parity": accuracy_parity,
    "accuracy_maze": accuracy_maze,
    "accuracy_sort": accuracy_sort,
    "ablation": ablation,
    "ablation_maze": ablation_maze,
    "rounding": rounding,
    "refinement": refinement,
    "test_time_scaling": test_time_scaling,
    "scaling": scaling,
    "scaling_time": scaling_time,
    "scaling_maze": scaling_maze,
    "feature_cache": feature_cache,
    "gpu_throughput": gpu_throughput,
}
PRESETS = ("full", "quick", "tiny")


def _stamped(result: dict[str, Any], *, name: str, preset: str, command: str, start: float) -> dict[str, Any]:
    """`result` with what the runner knows: its name, preset, command line and seconds so far."""
    result["benchmark"] = name  # one module may serve several benchmarks (accuracy, accuracy_parity)
    result["preset"] = preset
    result["command"] = command
    result["elapsed_s"] = round(time.perf_counter() - start, 1)
    return result


def _write_partial(folder: Path, name: str, stamp: Callable[[dict[str, Any]], dict[str, Any]], partial: dict[str, Any]) -> None:
    write_result(folder, name, stamp(partial))


def with_overrides(settings: Any, overrides: list[str]) -> Any:
    """`settings` (a frozen dataclass) with `FIELD=VALUE` overrides: VALUE is read as YAML (`parts=[longer]`,
    `seeds=[0]`, `common.epochs=6`); a dotted FIELD reaches into a nested dataclass or dict; a list becomes a tuple where
    the field holds one. An unknown field is a ValueError naming the ones there are."""
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {override!r}: write FIELD=VALUE, e.g. --set seeds=[0,1].")
        settings = _set_field(settings, key.split("."), yaml.safe_load(text), override)
    return settings


def _set_field(target: Any, path: list[str], value: Any, override: str) -> Any:
    name, rest = path[0], path[1:]
    if isinstance(target, dict):
        return {**target, name: _set_field(target[name], rest, value, override) if rest and name in target else value}
    fields = {f.name for f in dataclasses.fields(target)} if dataclasses.is_dataclass(target) else set()
    if name not in fields:
        raise ValueError(f"--set {override!r}: {type(target).__name__} has no field {name!r}; its fields: {', '.join(sorted(fields))}.")
    current = getattr(target, name)
    if rest:
        new = _set_field(current, rest, value, override)
    else:
        new = tuple(tuple(v) if isinstance(v, list) else v for v in value) if isinstance(current, tuple) and isinstance(value, list) else value
    return dataclasses.replace(target, **{name: new})


def planned_settings(names: list[str], preset: str, overrides: list[str]) -> dict[str, Any]:
    """Each named benchmark's settings at `preset` with `overrides`, all checked before any runs: an unknown name,
    preset or field is a ValueError here, not hours into the runs."""
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        raise ValueError(f"Unknown benchmark(s) {unknown}; choose from {sorted(BENCHMARKS)}.")
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {PRESETS}.")
    return {name: with_overrides(BENCHMARKS[name].PRESETS[preset], overrides) for name in names}


def run_benchmarks(names: list[str], preset: str, results_dir: Path = RESULTS_DIR, reuse: bool = False,
                   overrides: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the named benchmarks at a preset ("full", "quick" or "tiny") and write their JSON results.

    `overrides`: `FIELD=VALUE` changes to each named benchmark's preset settings (`--set`, see `with_overrides`).

    `reuse`: benchmarks that can (their `run` takes `previous`) keep the runs of their existing result that
    had the same settings and train only what is missing. Benchmarks whose `run` takes `progress` write
    their partial result (marked `"partial": true`) as they go; `--reuse` continues from it.
    """
    planned = planned_settings(names, preset, overrides or [])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {}
    for name, settings in planned.items():
        start = time.perf_counter()
        log(f"{name}: start ({preset})")
        module = BENCHMARKS[name]
        existing = results_dir / preset / f"{name}.json"
        accepts = inspect.signature(module.run).parameters
        options: dict[str, Any] = {}
        if reuse and "previous" in accepts and existing.exists():
            options["previous"] = json.loads(existing.read_text(encoding="utf-8"))
        stamp = functools.partial(_stamped, name=name, preset=preset, start=start,
                                  command=command_line([name], preset == "quick") + (" --preset tiny" if preset == "tiny" else "")
                                  + "".join(f" --set {shlex.quote(o)}" for o in overrides or []) + (" --reuse" if reuse else ""))
        if "progress" in accepts:  # long benchmarks: what is finished is on disk (marked partial) before the end
            options["progress"] = functools.partial(_write_partial, results_dir / preset, name, stamp)
        result = stamp(module.run(settings, **options))
        write_result(results_dir / preset, name, result)
        log(f"{name}: done in {result['elapsed_s']:.0f} s")
        results[name] = result
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run benchmarks, write JSON results, rebuild the report")
    run_parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    run_parser.add_argument("--quick", action="store_true", help="small sizes: a smoke check of a few minutes")
    run_parser.add_argument("--preset", choices=PRESETS, help="sizes by name (--quick is --preset quick; tiny is for tests)")
    run_parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON results")
    run_parser.add_argument("--no-report", action="store_true", help="do not rebuild docs/benchmarks.md")
    run_parser.add_argument("--reuse", action="store_true",
                            help="benchmarks that can (the accuracy family, state_tracking, test_time_scaling, feature_cache): "
                                 "keep the runs of the existing result (or of an interrupted run's partial one) trained with "
                                 "the same settings, train only what is missing")
    run_parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="overrides",
                            help="change one setting of the preset, VALUE read as YAML (repeatable): e.g. --set seeds=[0] "
                                 "--set parts=[language_lm] (state_tracking), --set common.epochs=6 (a nested field); the "
                                 "result records the command")
    report_parser = commands.add_parser("report", help="rebuild docs/benchmarks.md and docs/img/bench_*.png from the results")
    report_parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the JSON results")
    args = parser.parse_args(argv)

    if args.command == "run":
        preset = args.preset or ("quick" if args.quick else "full")
        names = args.names or list(BENCHMARKS)
        try:  # a usage error, said as one; errors of the runs themselves keep their tracebacks
            planned_settings(names, preset, args.overrides)
        except (ValueError, TypeError) as error:
            parser.error(str(error))
        run_benchmarks(names, preset, args.results, reuse=args.reuse, overrides=args.overrides)
        if args.no_report:
            return 0
    path = report.write_report(BENCHMARKS, args.results, DOC_PATH, IMG_DIR)
    log(f"report written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
