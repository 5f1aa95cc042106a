"""Rebuild `docs/benchmarks.md` and its plots (`docs/img/bench_*.png`) from the JSON results.

For each benchmark the full-size result is used when there is one, else the quick one (the
section says which). Every table carries the command that produced it, the machine, the load
average during the run and the date. Goals are stated next to the figures, met or missed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import default_recipes, state_tracking  # noqa: E402
from .harness import REPO_ROOT  # noqa: E402

PRESET_ORDER = ("full", "quick", "tiny")
MODE_COLORS = {"last_cycle": "tab:blue", "one_step": "tab:green", "full": "tab:red"}


def load_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """The result of each benchmark, from the largest preset that has one."""
    results: dict[str, dict[str, Any]] = {}
    for preset in reversed(PRESET_ORDER):
        for path in sorted((results_dir / preset).glob("*.json")):
            results[path.stem] = json.loads(path.read_text(encoding="utf-8"))
    return results


def write_report(results_dir: Path, doc_path: Path, img_dir: Path) -> Path:
    """Write the markdown report and its plots; returns the report's path."""
    results = load_results(results_dir)
    img_dir.mkdir(parents=True, exist_ok=True)
    doc_path.parent.mkdir(parents=True, exist_ok=True)
    sections = [HEADER]
    for name, render in (("trm_parity", parity_section), ("demo_variants", demo_variants_section),
                         ("state_tracking", lambda result, img_dir, doc_dir: state_tracking.render(result)),
                         ("default_recipes", lambda result, img_dir, doc_dir: default_recipes.render(result)), ("memory", memory_section), ("speed", speed_section), ("overhead", overhead_section),
                         ("accuracy", accuracy_section), ("accuracy_sudoku6", accuracy_section), ("accuracy_parity", accuracy_section),
                         ("accuracy_maze", accuracy_section), ("accuracy_sort", accuracy_section),
                         ("ablation", ablation_section), ("ablation_maze", ablation_section), ("rounding", rounding_section),
                         ("refinement", refinement_section),
                         ("scaling", scaling_section), ("scaling_time", scaling_section),
                         ("scaling_maze", scaling_section)):
        if name == "scaling" and "accuracy" in results and "accuracy_sudoku6" in results:
            sections.append(sudoku_size_section([results["accuracy"], results["accuracy_sudoku6"]], img_dir, doc_path.parent))
        if name in results:
            sections.append(render(results[name], img_dir, doc_path.parent))
            if name == "scaling_maze" and "accuracy_maze" in results:
                sections[-1] += repeat_note(results["scaling_maze"], results["accuracy_maze"])
        else:
            sections.append(f"## {name.capitalize()}\n\nNot run yet: `.venv/bin/python -m benchmarks run {name}`.\n")
    doc_path.write_text("\n".join(sections), encoding="utf-8")
    return doc_path


HEADER = """# Benchmarks

What the reasoner costs and what it buys, measured on this machine by `benchmarks/` (one package,
one module per benchmark). Rebuild everything with

    .venv/bin/python -m benchmarks run NAME ...   # full sizes, the benchmarks named (each section gives its command)
    .venv/bin/python -m benchmarks run --quick    # every benchmark at small sizes, a smoke check of a few minutes
    .venv/bin/python -m benchmarks report         # this page and its plots, from benchmarks/results/

`python -m benchmarks run` with no name runs all of them at full size: about seven hours on this 2-core
machine (memory, speed and overhead take a few minutes each, ablation ~8, refinement ~9, accuracy ~15,
rounding ~17, scaling ~21, scaling_time ~25, ablation_maze ~27, accuracy_maze ~32, accuracy_sort ~40, accuracy_parity ~45,
scaling_maze ~60, accuracy_sudoku6 ~70, on one core each with one other job beside it). `run NAME --reuse` keeps the runs of an existing
result with the same settings and trains only what it lacks (a new comparator, the time budget).

How timings are taken: candidates run interleaved (A, B, C, A, B, C, ... with the order rotating
every repeat), and every comparison is the median over repeats of a ratio measured inside one
repeat, so a burst of load from another process slows both sides alike. The 1-minute load average
is recorded with each result: on this 2-core machine a load well above 2 means other processes
shared the cores, and absolute times (not the ratios) are then inflated.
"""


# --- helpers --------------------------------------------------------------------------------------
def provenance(result: dict[str, Any]) -> str:
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


def table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 2**20:.2f}"


def verdict(met: bool) -> str:
    return "**met**" if met else "**missed**"


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


def image(figure: Any, img_dir: Path, doc_dir: Path, name: str, caption: str) -> str:
    path = img_dir / f"bench_{name}.png"
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return f"![{caption}]({Path(os.path.relpath(path, doc_dir)).as_posix()})\n"


# --- memory ---------------------------------------------------------------------------------------
def parity_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    """Largest differences from the TRM reference, same weights, inputs and carry, float64."""
    heading = "## Parity with the TRM reference\n\n"
    if not result.get("available"):
        return heading + f"{result.get('note', 'Not available.')} Command: `{result['command']}`.\n"
    settings = result["settings"]
    rows = [[row["mixer"], row["reference_norm"]] + [f"{row[name]:.1e}" for name in ("z_H", "z_L", "logits", "halt_logits", "gradients")]
            for row in result["rows"]]
    return (
        heading
        + "latentreason's `Reasoner` and token head against the reference's `TinyRecursiveReasoningModel_ACTV1_Inner` "
        "(SamsungSAILMontreal/TinyRecursiveModels, imported from a checkout outside the repository): the same weights, input "
        "latents and carry, float64, one supervision step, then one backward of the same loss (token cross-entropy + 0.5 x "
        f"halting BCE). Batch {settings['batch']}, hidden {settings['hidden']}, n={settings['latent_steps']}, T={settings['cycles']}, "
        f"{settings['num_layers']} layers, length {settings['attention_length']} (attention) and {settings['length']} (mlp), "
        "`grad_mode=last_cycle` (the only mode the reference has). Each cell is the largest absolute difference "
        f"(values are up to {max(row['largest_value'] for row in result['rows']):.1f}); gradients: the largest over every weight both have.\n\n"
        + table(["mixer", "reference RMSNorm", "z_H", "z_L", "logits", "halting logits", "gradients"], rows)
        + f"\nGoal: every quantity within {result['tolerance']:.0e} of the reference: {verdict(result['met'])}. "
        "The reference casts its RMSNorm input to float32 and its halting logits to float32 even in float64; with its norm "
        "patched to keep the input dtype (second row of each mixer) the states of the mlp mixer agree to float64 rounding, and "
        "what is left is the float32 halting cast and, for attention, the rotary angles, which both sides compute in float32 "
        "with different formulas.\n\n"
        + provenance(result)
    )


def demo_variants_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    """The README demo with each mixer norm and loss: exact match per refinement step over seeds."""
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


def memory_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    settings, curve, goals = result["settings"], result["vs_cycles"], result["goals"]
    cycles = [p["cycles"] for p in curve["last_cycle"]]
    rows = []
    for index, t in enumerate(cycles):
        row = [t]
        for mode in ("last_cycle", "one_step", "full"):
            point = curve[mode][index]
            row += [mib(point["saved_bytes"]), mib(point["peak_rss_growth_bytes"])]
        rows.append(row)
    header = ["T"] + [f"{mode} {what}" for mode in ("last_cycle", "one_step", "full") for what in ("saved MiB", "peak MiB")]

    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    for mode, color in MODE_COLORS.items():
        axes[0].plot(cycles, [p["saved_bytes"] / 2**20 for p in curve[mode]], "o-", color=color, label=mode)
        peaks = [p["peak_rss_growth_bytes"] for p in curve[mode]]
        if all(v is not None for v in peaks):
            axes[1].plot(cycles, [v / 2**20 for v in peaks], "o-", color=color, label=mode)
        by_step = result["vs_supervision_steps"][mode]
        steps = range(1, len(by_step["saved_bytes"]) + 1)
        axes[2].plot(steps, [v / 2**20 for v in by_step["saved_bytes"]], "o-", color=color, label=f"{mode} saved")
        if by_step["peak_rss_growth_bytes"] is not None:
            axes[2].plot(steps, [v / 2**20 for v in by_step["peak_rss_growth_bytes"]], "x--", color=color, label=f"{mode} peak RSS")
    axes[0].set(title="bytes saved for backward vs T", xlabel="cycles T", ylabel="MiB")
    axes[1].set(title="peak RSS growth of one step vs T", xlabel="cycles T", ylabel="MiB")
    axes[2].set(title=f"vs supervision steps (T={settings['supervision_cycles']})", xlabel="supervision step", ylabel="MiB")
    for axis in axes:
        if axis.lines:
            axis.legend(fontsize=7)
        axis.grid(alpha=0.3)

    change = goals["last_cycle_change"]
    rss_change = change["peak_rss_growth_bytes"]
    flat_line = (
        f"- `last_cycle` from T={cycles[0]} to T={cycles[-1]}: saved bytes change {100 * change['saved_bytes']:+.1f}%"
        + ("" if rss_change is None else f", peak RSS growth {100 * rss_change:+.1f}%")
        + f". Goal (within 5%): {verdict(goals['last_cycle_flat'])}.\n"
    )
    linear_line = (
        f"- `full` grows by {mib(goals['full_bytes_per_cycle'])} MiB of saved tensors per cycle; a straight line fits "
        f"with R² = {goals['full_linear_r_squared']:.4f}. Goal (linear): {verdict(goals['full_linear_r_squared'] > 0.99)}.\n"
    )
    sup = result["vs_supervision_steps"]
    sup_line = "- Against N_sup (carry detached between steps): " + "; ".join(
        f"`{mode}` saved {mib(min(v['saved_bytes']))}-{mib(max(v['saved_bytes']))} MiB"
        + ("" if v["peak_rss_growth_bytes"] is None else f", peak RSS growth {mib(v['peak_rss_growth_bytes'][0])} MiB after step 1, "
           f"{mib(v['peak_rss_growth_bytes'][-1])} MiB after step {len(v['peak_rss_growth_bytes'])}")
        for mode, v in sup.items()
    ) + ".\n"
    return (
        "## Memory: truncated backprop keeps a step flat in T\n\n"
        f"One training step (forward, loss, backward, AdamW step) of a `LatentReasonerModel` on precomputed features: "
        f"reasoner hidden {settings['hidden_size']}, n={settings['latent_steps']}, batch {settings['batch']} x "
        f"{settings['length']} tokens, attention mixer. *Saved* = bytes of the distinct tensors autograd keeps for backward "
        "(a `saved_tensors_hooks` pack hook; parameters excluded): exact, independent of the allocator. *Peak* = growth of "
        "the process's peak resident memory during the step above its resident memory just before, in a fresh process per "
        f"point (method: {result.get('rss_method', 'ru_maxrss')}; the high-water mark is reset before the step, so imports "
        "and model building cannot hide it); it includes the AdamW state (allocated at the first step) and allocator slack, "
        "the same at every T.\n\n"
        + provenance(result) + "\n"
        + table(header, rows) + "\n" + flat_line + linear_line + sup_line + "\n"
        + image(figure, img_dir, doc_dir, "memory", "memory vs cycles and supervision steps")
    )


# --- speed ----------------------------------------------------------------------------------------
def speed_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    settings, configs = result["settings"], result["configs"]
    rows = []
    for c in configs:
        row = [c["mixer"], c["hidden_size"], f"{c['flops_analytic'] / 1e9:.2f}", f"{c['flops_counted'] / c['flops_analytic']:.3f}",
               f"{c['matmul_gflops']:.1f}", f"{c['latentreason']['median_s']:.3f}", f"{c['latentreason_gflops']:.1f}",
               f"{100 * c['fraction_of_peak']:.0f}%"]
        if result["trm_available"]:
            row += [f"{c['trm']['median_s']:.3f}", f"{100 * c['trm_fraction_of_peak']:.0f}%", f"{c['speedup_vs_trm']:.2f}x"]
        rows.append(row)
    header = ["mixer", "hidden", "GFLOP/step", "counted/analytic", "matmul GFLOP/s", "step s", "step GFLOP/s", "of matmul limit"]
    if result["trm_available"]:
        header += ["TRM step s", "TRM of limit", "speed vs TRM"]

    figure, axis = plt.subplots(figsize=(7, 4))
    labels = [f"{c['mixer']}\nd={c['hidden_size']}" for c in configs]
    positions = range(len(configs))
    width = 0.38 if result["trm_available"] else 0.6
    axis.bar([p - (width / 2 if result["trm_available"] else 0) for p in positions], [100 * c["fraction_of_peak"] for c in configs],
             width, label="latentreason")
    if result["trm_available"]:
        axis.bar([p + width / 2 for p in positions], [100 * c["trm_fraction_of_peak"] for c in configs], width, label="TRM reference")
    axis.axhline(100 * result["goal"]["fraction_of_peak"], color="gray", linestyle="--", label="goal")
    axis.set_xticks(list(positions), labels)
    axis.set(ylabel="% of dense fp32 matmul FLOP/s", title="training step vs the machine's matmul limit")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)

    goal = result["goal"]
    main = [c for c in configs if c["hidden_size"] == goal["hidden_size"]]
    def fractions(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{c['mixer']} {100 * c['fraction_of_peak']:.0f}% {verdict(c['fraction_of_peak'] >= goal['fraction_of_peak'])}"
                         for c in rows)

    goal_line = (f"- Goal: at least {100 * goal['fraction_of_peak']:.0f}% of the matmul limit at hidden {goal['hidden_size']}: "
                 f"{fractions(main)}.\n")
    bound = ", ".join(f"{mixer} {100 * prof['matmul_share']:.0f}%" for mixer, prof in result["profile"].items())
    if result["trm_available"]:
        reference_limit = (" The TRM reference, the same step written independently, reaches " + ", ".join(
            f"{c['mixer']} {100 * c['trm_fraction_of_peak']:.0f}%" for c in main)
            + " in the same run: the ceiling is the configuration's arithmetic on this CPU, not this library's code.")
    else:
        reference_limit = ""
    goal_line += (f"- {'What limits it' if goal['met'] else 'Why'}: in the profile, matmuls and attention kernels take only {bound} of a step's time; the rest is "
                  "elementwise work (RMSNorm forward and backward, rotary, SwiGLU gating, residual adds, AdamW) that runs at memory "
                  "bandwidth, not at matmul speed. The achievable fraction is at most that share times the matmuls' own "
                  "efficiency at these shapes (a batch of 8 x 81 positions gives matmuls of 648 rows, and the mlp mixer's "
                  "sequence mixing multiplies over only 81 positions: thinner than the 2048-square limit)."
                  + reference_limit + " On CPU, latentreason writes the backward of RMSNorm and of the SwiGLU gate by hand "
                  "(`latentreason/kernels.py`: about half the memory passes of autograd's, and no second exp for the sigmoid). "
                  "Not measured by this benchmark, so no figure here: `torch.compile` of the shared net (tried, no gain on this "
                  "CPU) and torch's fused AdamW (what the training loop uses).\n")
    large = result.get("large_batch", [])
    if large:
        goal_line += (f"- What larger batches buy: the same configurations at batch {large[0]['batch']} "
                      f"({large[0]['batch'] * settings['length']} rows per matmul), in the same run: " + fractions(large)
                      + " of the limit (a recipe sets it as `training.batch_size`).\n")
    def spread(c: dict[str, Any], key: str = "speedup_vs_trm_range") -> str:
        low, high = c.get(key, (None, None))
        return f" (repeats {low:.2f}-{high:.2f})" if low is not None else ""

    if all("speedup_vs_unfused" in c for c in configs):
        goal_line += ("- What the hand-written backwards buy: step time with torch's autograd for RMSNorm and the SwiGLU gate over "
                      "the time with latentreason's, in the same run: " + ", ".join(
                          f"{c['mixer']} d={c['hidden_size']} {c['speedup_vs_unfused']:.2f}x{spread(c, 'speedup_vs_unfused_range')}"
                          for c in configs) + " (> 1: faster with them).\n")
    if result["trm_available"]:

        met = all(c["speedup_vs_trm"] >= 1.0 for c in main)
        spans_one = any(c.get("speedup_vs_trm_range", (2, 0))[0] <= 1.0 <= c.get("speedup_vs_trm_range", (2, 0))[1] for c in main)
        if met:
            noise = (": the medians are at or above 1, but a repeat range spans 1, so the margin is within this machine's noise"
                     if spans_one else "")
        else:
            slower = ", ".join(f"{c['mixer']} {c['speedup_vs_trm']:.3f}x" for c in main if c["speedup_vs_trm"] < 1.0)
            noise = (f": not every median reaches 1 ({slower}), but every repeat range spans 1, so the two are equally fast "
                     "within this machine's noise" if all(
                         c.get("speedup_vs_trm_range", (2, 0))[0] <= 1.0 <= c.get("speedup_vs_trm_range", (2, 0))[1] for c in main)
                     else "")
        trm_line = ("- Against the TRM reference on the same configuration: " + ", ".join(
            f"{c['mixer']} d={c['hidden_size']} {c['speedup_vs_trm']:.2f}x{spread(c)}" for c in configs)
            + " (step time of TRM / ours, median over repeats; > 1 means latentreason is faster). Both do the same matmuls "
            f"(matmuls and attention kernels are {bound} of a step) with the same optimizer (torch's fused AdamW, which latentreason's "
            "training loop uses), so only the elementwise work around them can differ (the reference's RMSNorm has no weight, so it "
            "does a little less of it). Goal (at least as fast): " + verdict(met) + noise + ".\n")
    else:
        trm_line = f"- TRM reference: {result['trm_note']}.\n"

    profile_parts = []
    for mixer, prof in result["profile"].items():
        profile_parts.append(
            f"\nTop ops of one step, {mixer} mixer, hidden {goal['hidden_size']} (self CPU time, `torch.profiler`, "
            f"{prof['total_ms']:.0f} ms in all): matmuls and attention kernels take {100 * prof['matmul_share']:.0f}% of the "
            "step, elementwise work (norms, rotary, SwiGLU gating, residual adds, AdamW) the rest.\n\n"
            + table(["op", "self ms", "% of step", "calls"], [[f"`{o['op']}`", o["self_ms"], o["percent"], o["calls"]] for o in prof["top_ops"]]))
    return (
        "## Speed: a training step against the machine's matmul limit\n\n"
        f"One supervision step (forward, loss, backward, AdamW step) of `Reasoner` + a linear head: batch {settings['batch']} x "
        f"{settings['length']} positions, {settings['num_layers']} layers, n={settings['latent_steps']}, T={settings['cycles']}, "
        "last_cycle gradients, fp32. Its matmul FLOPs are counted from the config (qkv, attention, out, SwiGLU; the T(n+1) "
        "net calls forward, the last cycle backward at 2x); `counted/analytic` checks that count against "
        "`torch.utils.flop_counter.FlopCounterMode` (it is above 1 for attention because torch counts the flash kernel's "
        "recomputation of the scores in backward). The limit is a dense "
        f"{settings['matmul_size']}x{settings['matmul_size']} fp32 `torch.mm`, timed interleaved with the step. The TRM "
        "reference (SamsungSAILMontreal/TinyRecursiveModels, imported from a checkout outside the repository, float32) "
        "runs the same configuration; our SwiGLU width is set to its rounded-up width so both do the same matmuls.\n\n"
        + provenance(result) + "\n" + table(header, rows) + "\n" + goal_line + trm_line + "\n"
        + image(figure, img_dir, doc_dir, "speed", "fraction of the matmul limit") + "".join(profile_parts)
    )


# --- overhead -------------------------------------------------------------------------------------
def overhead_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    settings, step, epochs = result["settings"], result["step"], result["epochs"]
    step_table = table(["", "median step s", "min s", "max s"], [
        ["`LatentReasonerModel(features=...)`", f"{step['model']['median_s']:.4f}", f"{step['model']['min_s']:.4f}", f"{step['model']['max_s']:.4f}"],
        ["bare `Reasoner` + same head, by hand", f"{step['bare']['median_s']:.4f}", f"{step['bare']['min_s']:.4f}", f"{step['bare']['max_s']:.4f}"],
    ])
    step_line = (f"- Overhead of the model over the bare modules: {100 * step['overhead']:+.1f}% (median ratio of "
                 f"{step['model']['repeats']} interleaved pairs). Goal (within {100 * step['goal']:.0f}%): {verdict(step['met'])}.\n")
    if "aten_ops_per_step" in step:
        ops = step["aten_ops_per_step"]
        step_line += (f"- Work around the math, independent of load: the model's step dispatches {ops['model']} aten ops, the bare one "
                      f"{ops['bare']} ({ops['model'] - ops['bare']:+d}: shape and label-range checks, the padding mask, the masked "
                      "mean of the halting head). A timed overhead well above what those few small ops cost is load noise.\n")
    rows = [[e["backbone"], f"{e['backbone_parameters'] / 1e6:.1f}M", f"{e['epoch_s']['every step']:.2f}",
             f"{e['epoch_s']['once per batch']:.2f}", f"{e['epoch_s']['cached']:.2f}", f"{e['speedup_cached_vs_every_step']:.1f}x",
             f"{e['speedup_cached_vs_once_per_batch']:.1f}x", f"{e['cache_build_s']:.2f}",
             " / ".join(str(e["backbone_calls_per_epoch"][way]) for way in ("every step", "once per batch", "cached"))] for e in epochs]
    epoch_table = table(["backbone", "params", "epoch s: backbone every step", "once per batch", "cached",
                         "cached speed-up vs every step", "vs once per batch", "one-time cache build s",
                         "backbone calls per epoch (every step / once per batch / cached)"], rows)

    figure, axis = plt.subplots(figsize=(7, 4))
    ways = ("every step", "once per batch", "cached")
    width = 0.8 / len(ways)
    for index, way in enumerate(ways):
        axis.bar([i + (index - 1) * width for i in range(len(epochs))], [e["epoch_s"][way] for e in epochs], width, label=way)
    axis.set_xticks(range(len(epochs)), [e["backbone"] for e in epochs])
    axis.set(ylabel="seconds per epoch", title=f"epoch time, N_sup={settings['supervision_steps']}")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    return (
        "## Overhead of the framework\n\n"
        f"Training step (forward, loss, backward, AdamW step) on precomputed features: reasoner hidden {settings['hidden_size']}, "
        f"n={settings['latent_steps']}, T={settings['cycles']}, batch {settings['batch']} x {settings['length']} tokens. "
        "The bare version calls the same modules (input projection + norm, `Reasoner`, linear head) and the same losses by hand.\n\n"
        + provenance(result) + "\n" + step_table + "\n" + step_line + "\n"
        + f"Epoch time with and without the feature cache: {settings['examples']} examples of {settings['length']} tokens, "
        f"batch {settings['batch']}, N_sup={settings['supervision_steps']} supervision steps per batch (an optimizer step after each). "
        "*Every step*: `model(input_ids=...)` at each supervision step, so the backbone runs N_sup times per batch; *once per batch*: "
        "`model.encode` once per batch, reused for its N_sup steps; *cached*: `FeatureCache.features_for` ran the backbone once "
        "before training (its one-time cost in the last column). `llama-110m` is a randomly initialised Llama "
        "(hidden 768, 12 layers) standing in for a larger backbone.\n\n"
        + epoch_table + "\n" + image(figure, img_dir, doc_dir, "overhead", "epoch time with and without the feature cache")
    )


# --- accuracy -------------------------------------------------------------------------------------
COMPARATOR_NOTES = {
    "linear": "frozen backbone + linear head",
    "one_pass": "+ the reasoner's blocks, one pass",
    "deep_stack": "+ T(n+1) unshared copies of the blocks, one pass",
    "lora_linear": "LoRA-tuned backbone + linear head",
    "embeddings": "reasoner on learned token embeddings, no LLM",
    "reasoner": "frozen backbone + latentreason reasoner",
}


def accuracy_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    if "budgets" not in result:  # a result from before the training runs were wired in
        return "## Accuracy: what the recursion buys\n\nNo trained result yet: `.venv/bin/python -m benchmarks run accuracy --quick`.\n"
    task = result["data"]["task"]
    stem = result.get("benchmark", "accuracy")  # one plot per benchmark
    size = result["data"]["task_options"].get("size")
    if size is not None:
        task = f"{task} {size}x{size}"
    settings, data, comparators = result["settings"], result["data"], result["comparators"]
    budgets = [b for b in ("data", "time") if all(b in c for c in comparators)]
    rows = []
    for budget in budgets:
        for c in comparators:
            r = c[budget]
            recursive = c["name"] in ("reasoner", "embeddings")
            steps = f"{r['mean_steps']:.2f} of {c['supervision_steps']}" if recursive else "1"
            every = r.get("all_steps", r)  # all N_sup steps, no halting (how TRM evaluates); the same run for one-step models
            rows.append([f"`{c['name']}`", COMPARATOR_NOTES.get(c["name"], ""), f"{c['trainable_parameters']:,d}", c["layers_per_step"],
                         budget + (" (data run reused)" if r.get("reused_data_run") and budget == "time" else ""),
                         r["optimizer_steps"], f"{r['train_seconds']:.0f}", f"{r['accuracy']:.3f}", f"{r['exact_match']:.3f}", steps,
                         f"{every['accuracy']:.3f} / {every['exact_match']:.3f}" if recursive else "same"])
    header = ["comparator", "what", "trainable params", "layers per step", "budget", "optimizer steps", "train s",
              "cell accuracy", "exact match", "test steps (mean, halting)", "all N_sup steps: cells / exact"]

    reasoner = next((c for c in comparators if c["name"] == "reasoner"), None)
    figure, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    if reasoner is not None:
        per_step = reasoner["data"]["per_step"]
        steps = [p["step"] for p in per_step]
        axes[0].plot(steps, [p["accuracy"] for p in per_step], "o-", color="tab:blue", label="reasoner: cell accuracy")
        axes[0].plot(steps, [p["exact_match"] for p in per_step], "s--", color="tab:blue", label="reasoner: exact match")
        for index, c in enumerate(c for c in comparators if c["name"] != "reasoner"):
            axes[0].axhline(c["data"]["accuracy"], color=f"C{index + 1}", linestyle=":", linewidth=1, label=f"{c['name']}: cell accuracy")
        axes[0].set(title="data budget: accuracy vs refinement steps at test", xlabel="refinement step", ylabel="accuracy", ylim=(0, 1.02))
        axes[0].legend(fontsize=7)
        axes[0].grid(alpha=0.3)
    width = 0.8 / (2 * len(budgets))
    names = [c["name"] for c in comparators]
    for b_index, budget in enumerate(budgets):
        for m_index, metric in enumerate(("accuracy", "exact_match")):
            offset = (2 * b_index + m_index - (2 * len(budgets) - 1) / 2) * width
            axes[1].bar([i + offset for i in range(len(names))], [c[budget][metric] for c in comparators], width,
                        label=f"{budget} budget: {metric.replace('_', ' ')}", hatch="//" if metric == "exact_match" else None)
    axes[1].set_xticks(range(len(names)), names, rotation=20)
    axes[1].set(title="every comparator, both budgets", ylabel="accuracy", ylim=(0, 1.02))
    axes[1].legend(fontsize=7)
    axes[1].grid(axis="y", alpha=0.3)

    findings = accuracy_findings(comparators, budgets, chance=1 / max(len(data["labels"]), 1), num_test=data["num_test"])
    reused = {}  # date of the earlier result -> comparators whose runs were kept from it (`run --reuse`)
    for c in comparators:
        if "reused_from" in c:
            reused.setdefault(c["reused_from"], []).append(f"`{c['name']}`")
    reuse_text = "".join(
        f"\nKept from the result of {when} with the same settings (`run NAME --reuse`): the runs of {', '.join(names)}; the time "
        "budget's runs too where that budget was the same. The rest was trained in this run.\n" for when, names in reused.items())
    options = ", ".join(f"{k}={v}" for k, v in data["task_options"].items())
    time_budget = result["budgets"].get("time")
    time_text = (f" *time*: the same {time_budget['seconds']:.0f} s of training for each; the trainer has no time limit, so each "
                 "comparator's step count is that budget over its seconds per optimizer step, measured for all of them within a few "
                 "minutes just before the time-budget runs (so a drift in the machine's load over the hour does not tilt the budget); "
                 "the seconds each run then actually took are in the table (on a shared machine they drift)"
                 if time_budget else "")
    control = data["task"] == "sort_words"
    title = f"## Accuracy on {task}: a control (depth should not help)" if control else f"## Accuracy on {task}: what the recursion buys"
    control_text = ("A control, not a test of depth: ranking a list is one round of parallel comparisons for attention, so a "
                    "one-pass head is expected to match or beat the recursion here; the reasoner winning by a wide margin would "
                    "point at something other than depth (more optimizer steps, say). " if control else "")
    return (
        f"{title}\n\n" + control_text +
        f"Task `{data['task']}` ({options}): {data['num_train']} training and {data['num_test']} test examples of up to "
        f"{data['max_length']} tokens, output `{data['output_kind']}` over labels {data['labels']}. Backbone "
        f"`{settings['backbone']}`, frozen; its features are cached once and shared by every comparator except `lora_linear` "
        f"(its backbone trains) and `embeddings` (no backbone). Reasoner: hidden {settings['hidden_size']}, {settings['mixer']} mixer, "
        f"n={settings['latent_steps']}, T={settings['cycles']}, N_sup={settings['supervision_steps']} in training and at test; every "
        f"model trains with `latentreason.training.train` (AdamW lr {settings['learning_rate']}, batch {settings['batch_size']}, "
        "EMA) and is evaluated on its EMA weights. Budgets: *data*: the same "
        f"{result['budgets']['data']['examples']} examples x {result['budgets']['data']['epochs']} epochs for all (one optimizer "
        "step per batch for the one-step models, up to N_sup for the recursive ones)" + (";" + time_text if time_text else "") + ". *Test steps*: mean "
        "refinement steps used with halting: the headline accuracy of the recursive models is with halting, and the last column "
        "gives it after all N_sup steps without halting, which is how the TRM reference evaluates.\n\n"
        + provenance(result) + reuse_text + "\n" + table(header, rows) + "\n" + findings + "\n"
        + image(figure, img_dir, doc_dir, stem, f"{task}: accuracy vs refinement step and per comparator")
    )


def at_chance(accuracy: float, chance: float) -> bool:
    """Whether a cell accuracy is within 3 points of a uniform guess: nothing learned."""
    return accuracy < chance + 0.03


def below_linear(comparator: dict[str, Any], linear: dict[str, Any] | None, budgets: list[str], chance: float) -> str:
    """", below even the linear head (...)" where the linear head learned something under those budgets, else ""."""
    if linear is None or comparator is linear:
        return ""
    learned = [b for b in budgets if not at_chance(linear[b]["accuracy"], chance)]
    if not learned:
        return ""
    return ", below even the linear head (" + ", ".join(f"{linear[b]['accuracy']:.3f}" for b in learned) + ")"


def accuracy_findings(comparators: list[dict[str, Any]], budgets: list[str], chance: float, num_test: int) -> str:
    """Plain sentences: does the reasoner win under each budget, what does one test step keep, who learned nothing."""
    by_name = {c["name"]: c for c in comparators}
    if "reasoner" not in by_name:
        return ""
    lines = []
    for c in comparators:
        unlearned = [b for b in budgets if at_chance(c[b]["accuracy"], chance)]
        if unlearned:
            scores = ", ".join(f"{c[b]['accuracy']:.3f}" for b in unlearned)
            lines.append(f"- `{c['name']}` is at chance (cell accuracy {scores} "
                         f"vs {chance:.3f} for a uniform guess) under the {' and '.join(unlearned)} budget: it learned nothing there"
                         + below_linear(c, by_name.get("linear"), unlearned, chance) + ".")
    for budget in budgets:
        ours = by_name["reasoner"][budget]
        others = [c for c in comparators if c["name"] != "reasoner"]
        best = max(others, key=lambda c: (c[budget]["exact_match"], c[budget]["accuracy"]))
        theirs = best[budget]
        close = within_noise(ours["exact_match"], theirs["exact_match"], num_test) and ours["exact_match"] != theirs["exact_match"]
        if (ours["exact_match"], ours["accuracy"]) > (theirs["exact_match"], theirs["accuracy"]):
            lines.append(f"- {budget} budget: the reasoner {'leads, ' + noise_note(num_test) + ',' if close else 'wins'} (exact match "
                         f"{ours['exact_match']:.3f}, cell accuracy "
                         f"{ours['accuracy']:.3f}; best other: `{best['name']}` with {theirs['exact_match']:.3f} / {theirs['accuracy']:.3f}).")
        elif close:
            lines.append(f"- {budget} budget: the reasoner trails, {noise_note(num_test)}: `{best['name']}` reaches exact match "
                         f"{theirs['exact_match']:.3f} and cell accuracy {theirs['accuracy']:.3f}, the reasoner "
                         f"{ours['exact_match']:.3f} / {ours['accuracy']:.3f}.")
        else:
            lines.append(f"- {budget} budget: **the reasoner does not win**. `{best['name']}` reaches exact match "
                         f"{theirs['exact_match']:.3f} and cell accuracy {theirs['accuracy']:.3f}, the reasoner "
                         f"{ours['exact_match']:.3f} / {ours['accuracy']:.3f}.")
        if "one_pass" in by_name:  # the same blocks and (nearly) the same parameters, without the recursion
            flat = by_name["one_pass"][budget]
            verdict = "beats" if (ours["exact_match"], ours["accuracy"]) > (flat["exact_match"], flat["accuracy"]) else "does not beat"
            lines.append(f"- {budget} budget, same blocks and parameters: the reasoner {verdict} the one-pass head (exact match "
                         f"{ours['exact_match']:.3f} vs {flat['exact_match']:.3f}, cell accuracy {ours['accuracy']:.3f} vs {flat['accuracy']:.3f}).")
    data_run = by_name["reasoner"]["data"]
    every = data_run.get("all_steps")
    if every and every["exact_match"] > data_run["exact_match"] + 0.02:
        lines.append(f"- Halting stops too early: with halting the reasoner uses {data_run['mean_steps']:.2f} steps and gets exact match "
                     f"{data_run['exact_match']:.3f}; run for all {every['steps']} steps it gets {every['exact_match']:.3f}.")
    curve = data_run.get("halting_curve")
    if curve:
        lines.append("- Halting curve (reasoner, data budget; exact match at mean steps used, by halt probability threshold): "
                     + "; ".join(f"p > {row['threshold']:g}: {row['exact_match']:.3f} at {row['mean_steps']:.2f}" for row in curve) + ".")
    per_step = data_run["per_step"]
    first, last = per_step[0], per_step[-1]
    if last["accuracy"] > 0:
        kept_exact = f"{first['exact_match'] / last['exact_match']:.0%}" if last["exact_match"] else "n/a"
        lines.append(f"- One refinement step at test keeps {first['accuracy'] / last['accuracy']:.0%} of the cell accuracy and "
                     f"{kept_exact} of the exact match after {last['step']} steps (cells {first['accuracy']:.3f} vs "
                     f"{last['accuracy']:.3f}, exact match {first['exact_match']:.3f} vs {last['exact_match']:.3f}). The published "
                     "finding is about 7/8 (88%), for a model trained with N_sup=16 (see the refinement benchmark).")
    return "\n".join(lines) + "\n"


# --- ablation -------------------------------------------------------------------------------------
def at_trained_steps(row: dict[str, Any], supervision_steps: int) -> dict[str, Any]:
    """A variant's test scores after as many refinement steps as it was trained with (its N_sup)."""
    steps = row.get("training_changes", {}).get("supervision_steps", supervision_steps)
    return row["per_step"][min(steps, len(row["per_step"])) - 1]


ROUNDING_METRICS = ("accuracy", "exact_match", "mean_steps", "optimizer_steps", "all_steps_exact_match")


def rounding_summary(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per comparator: does the repeat match the first run exactly, and how far `autograd` moves each metric."""
    by_name: dict[str, dict[str, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_name.setdefault(row["name"], {})[row["variant"]] = row
    out = {}
    for name, runs in by_name.items():
        first, repeat, other = runs["fused"], runs["fused again"], runs["autograd"]
        out[name] = {"repeats_exactly": all(first[k] == repeat[k] for k in ROUNDING_METRICS),
                     "moves": {k: other[k] - first[k] for k in ROUNDING_METRICS}}
    return out


def rounding_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    data = result["data"]
    options = ", ".join(f"{k}={v}" for k, v in data["task_options"].items())
    rows = [[f"`{r['name']}`", r["variant"], r["optimizer_steps"], f"{r['accuracy']:.4f}", f"{r['exact_match']:.3f}",
             f"{r['mean_steps']:.2f}", f"{r['all_steps_exact_match']:.3f}"] for r in result["rows"]]
    header = ["comparator", "run", "optimizer steps", "cell accuracy", "exact match (halting)", "mean test steps", "exact match, all steps"]
    summaries = rounding_summary(result)
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
        f"Task `{data['task']}` ({options}), the accuracy benchmark's data budget. Each comparator trains three times on the same "
        "cached features: *fused* (latentreason's hand-written RMSNorm and SwiGLU-gate backwards on CPU, the default), "
        "*autograd* (torch's autograd for them: the same mathematics, other floating-point rounding) and *fused again* (the first "
        "run repeated in the same process). A repeat that matches says training is deterministic; a change under *autograd* "
        "says how far rounding alone moves a run.\n\n"
        + provenance(result) + "\n" + table(header, rows) + "\n" + "\n".join(lines) + "\n"
    )


def ablation_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    data, rows = result["data"], result["variants"]
    options = ", ".join(f"{k}={v}" for k, v in data["task_options"].items())
    table_rows = []
    for r in rows:
        first = r["per_step"][0]
        table_rows.append([f"`{r['name']}`", r["what"], r["optimizer_steps"], f"~{r['examples_seen']:,d}", f"{r['train_seconds']:.0f}",
                           f"{first['accuracy']:.3f} / {first['exact_match']:.3f}",
                           f"{r['all_steps']['accuracy']:.3f} / {r['all_steps']['exact_match']:.3f}"])
    header = ["variant", "what changes", "optimizer steps", "examples seen", "train s", "after step 1: cells / exact",
              "after all steps: cells / exact"]
    by_name = {r["name"]: r for r in rows}
    trained = {r["name"]: at_trained_steps(r, result["settings"]["base"]["supervision_steps"]) for r in rows}
    num_test = data["num_test"]
    lines = []
    if "reasoner" in by_name:
        ours = trained["reasoner"]
        single = [f"`{name}`" for name, scores in trained.items() if scores["step"] == 1]
        lines.append("- Below, each variant is read at the refinement steps it was trained with (its N_sup"
                     + (f"; 1 for {', '.join(single)}" if single else "") + f"): the reasoner reaches cells {ours['accuracy']:.3f}, "
                     f"exact match {ours['exact_match']:.3f}.")
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
    title = "why the reasoner starts slower" if data["task"] == "sudoku" else f"what limits the reasoner on {data['task']}"
    return (
        f"## Ablation: {title}\n\n"
        f"Task `{data['task']}` ({options}); the accuracy benchmark's reasoner trained with one part changed at a time, every "
        "variant for the same optimizer steps on the same cached features (`benchmarks/ablation.py` lists the variants). "
        "*Examples seen* = optimizer steps x batch / supervision steps per batch (about: halting can end a batch early).\n\n"
        + provenance(result) + "\n" + table(header, table_rows) + "\n" + "\n".join(lines) + "\n"
    )



# --- refinement -------------------------------------------------------------------------------------
def refinement_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    settings, data = result["settings"], result["data"]
    reasoner = next(c for c in result["comparators"] if c["name"] == "reasoner")
    run = reasoner["data"]
    per_step, curve = run["per_step"], run.get("halting_curve", [])
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

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    steps = [p["step"] for p in per_step]
    axes[0].plot(steps, [p["accuracy"] for p in per_step], "o-", label="cell accuracy")
    axes[0].plot(steps, [p["exact_match"] for p in per_step], "s--", label="exact match")
    axes[0].set(title=f"trained with N_sup={settings['supervision_steps']}: accuracy vs test steps", xlabel="refinement steps at test",
                ylabel="accuracy", ylim=(0, 1.02))
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
    options = ", ".join(f"{k}={v}" for k, v in data["task_options"].items())
    return (
        f"## Refinement at test time: trained with N_sup={settings['supervision_steps']}, tested with 1..{last['step']}\n\n"
        f"Task `{data['task']}` ({options}): the accuracy benchmark's reasoner (hidden {settings['hidden_size']}, {settings['mixer']} "
        f"mixer, n={settings['latent_steps']}, T={settings['cycles']}) trained with N_sup={settings['supervision_steps']} for "
        f"{settings['epochs']} epochs of {data['num_train']} examples ({run['optimizer_steps']} optimizer steps, {run['train_seconds']:.0f} s), "
        f"then evaluated on {data['num_test']} test examples after each refinement step, and with halting at each threshold "
        "of the halting curve.\n\n"
        + provenance(result) + "\n" + table(["test steps", "cell accuracy", "exact match", "of the last step's exact match"], step_rows)
        + "\n" + (table(["halt when p >", "mean steps", "cell accuracy", "exact match"], curve_rows) + "\n" if curve_rows else "")
        + "\n".join(lines) + "\n\n" + image(figure, img_dir, doc_dir, "refinement", "accuracy vs test steps and the halting curve")
    )


# --- scaling ----------------------------------------------------------------------------------------
def repeat_note(scaling_result: dict[str, Any], accuracy_result: dict[str, Any]) -> str:
    """Where a size of a scaling run repeats an accuracy run's settings: both runs side by side, per comparator.

    Two runs of the same seeded settings, made at different times, show how far a figure moves between runs.
    """
    base, options = scaling_result["settings"]["base"], accuracy_result["data"]["task_options"]
    size = options.get(scaling_result["settings"]["size_option"])
    same = {k: v for k, v in base.items() if k not in ("comparators", "time_budget_seconds", "calibration_seconds")}
    if same != {k: v for k, v in accuracy_result["settings"].items() if k in same}:
        return ""
    lines, moved = [], []
    for row in scaling_result["rows"]:
        other = next((c["data"] for c in accuracy_result["comparators"] if c["name"] == row["name"]), None)
        if row["size"] != size or row["budget"] != "data" or other is None:
            continue
        lines.append(f"`{row['name']}` {row['exact_match']:.3f} here ({row['optimizer_steps']} optimizer steps), "
                     f"{other['exact_match']:.3f} there ({other['optimizer_steps']})")
        if row["exact_match"] != other["exact_match"] or row["optimizer_steps"] != other["optimizer_steps"]:
            moved.append(f"`{row['name']}`")
    if not lines:
        return ""
    verdict = ("every comparator repeats to the digit" if not moved else
               f"{', '.join(moved)} moved between two runs of the same seeded settings (made at different times, so perhaps "
               "with other code or rounding; the Rounding section measures how far rounding alone moves a run): read "
               f"{'its' if len(moved) == 1 else 'their'} figures on this task as one draw from that spread")
    return (f"\nThe {size}x{size} data-budget runs repeat those of `accuracy_maze` (same settings and seed, "
            f"{accuracy_result['machine']['date']}); exact match: " + "; ".join(lines) + f". So {verdict}.\n")


def sudoku_size_section(results: list[dict[str, Any]], img_dir: Path, doc_dir: Path) -> str:
    """Sudoku accuracy against grid size, from the accuracy benchmarks of each size (each budget that all of them ran)."""
    results = sorted(results, key=lambda r: r["data"]["task_options"]["size"])
    sizes = [r["data"]["task_options"]["size"] for r in results]
    names = [c["name"] for c in results[0]["comparators"] if all(any(d["name"] == c["name"] for d in r["comparators"]) for r in results)]
    budgets = [b for b in ("data", "time") if all(b in c for r in results for c in r["comparators"])]

    def runs(name: str, budget: str) -> list[dict[str, Any]]:
        return [next(c for c in r["comparators"] if c["name"] == name)[budget] for r in results]

    rows = []
    for budget in budgets:
        for name in names:
            cells = [f"{run['exact_match']:.3f}" + (f" ({run['all_steps']['exact_match']:.3f} all steps)" if name in ("reasoner", "embeddings") else "")
                     for run in runs(name, budget)]
            rows.append([f"`{name}`", budget, *cells])
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for index, name in enumerate(names):
        for budget, style in zip(budgets, ("-", ":"), strict=False):
            axis.plot(sizes, [run["exact_match"] for run in runs(name, budget)], "o" + style, color=f"C{index}", label=f"{name} ({budget})")
    which = " and ".join(budgets)
    axis.set(title=f"Sudoku: exact match vs grid size ({which} budget)", xlabel="grid side", ylabel="exact match", ylim=(0, 1.02), xticks=sizes)
    axis.legend(fontsize=6, ncol=2)
    axis.grid(alpha=0.3)
    givens = ", ".join(f"{r['data']['task_options']['size']}x{r['data']['task_options']['size']}: {r['data']['task_options'].get('givens')} givens"
                       for r in results)
    return (
        "## Accuracy against task size (Sudoku)\n\n"
        f"Exact match under the {which} budget, from the accuracy benchmarks of each grid size ({givens}; same puzzles x epochs, "
        "same comparators; with halting, and after all steps for the recursive ones). Commands: "
        + ", ".join(f"`{r.get('command', '?')}`" for r in results) + ".\n\n"
        + table(["comparator", "budget", *[f"{size}x{size}" for size in sizes]], rows) + "\n"
        + ("9x9 is not in this table: it is past this machine's budget. One comparator on 9x9 (the `sudoku_9x9` recipe, "
           "40 givens, 600 optimizer steps, 18 minutes) copies the givens and solves no grid "
           "([tasks.md](tasks.md#sudoku)). The TRM reference trains 9x9 (Sudoku-Extreme) for 50,000 epochs, up to 36 hours on an "
           "L40S GPU; six comparators at two budgets, at a size where any of them learns, would take days of this CPU.\n\n" if max(sizes) < 9 else "")
        + image(figure, img_dir, doc_dir, "scaling_sudoku", "Sudoku: exact match vs grid size")
    )


def scaling_section(result: dict[str, Any], img_dir: Path, doc_dir: Path) -> str:
    rows, settings = result["rows"], result["settings"]
    base = settings["base"]
    for r in rows:
        r.setdefault("budget", "data")  # results from before the time budget was added
    names = list(dict.fromkeys(r["name"] for r in rows))
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
                lines.append(f"- {budget} budget, {settings['size_option']} {size}: the reasoner (all steps) reaches exact match "
                             f"{ours['all_steps']['exact_match']:.3f} ({ours['optimizer_steps']} optimizer steps, {ours['train_seconds']:.0f} s), "
                             f"{relation} the best other, `{best}` ({theirs['exact_match']:.3f}; {theirs['optimizer_steps']} steps, "
                             f"{theirs['train_seconds']:.0f} s)" + (f"; the gap is {noise_note(ours['num_test'])}." if close else "."))
    if "data" in budgets:
        lines.append("- Under the data budget the reasoner takes up to N_sup optimizer steps per batch (deep supervision) and the "
                     "one-step heads one, so it gets more steps and seconds; the time budget, where run, gives every comparator "
                     "the reasoner's own training seconds.")
    image_text = ""
    if len(sizes) > 1:
        figure, axis = plt.subplots(figsize=(6.5, 4.2))
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
        image_text = image(figure, img_dir, doc_dir, result.get("benchmark", "scaling"), f"{result['task']}: exact match vs task size")
    which = " and ".join(budgets)
    return (
        f"## Accuracy against task size ({result['task']}, {which} budget{'s' if len(budgets) > 1 else ''})\n\n"
        f"Task `{result['task']}` at {settings['size_option']} {', '.join(map(str, sizes))}: at each size the comparators train on "
        f"the same {base['task_options'].get('num_train')} examples x {base['epochs']} epochs (data budget"
        + (", and the reasoner's training seconds: time budget" if "time" in budgets else "") + f") on the frozen features of "
        f"`{base['backbone']}`; reasoner hidden {base['hidden_size']}, {base['mixer']} mixer, n={base['latent_steps']}, "
        f"T={base['cycles']}, N_sup={base['supervision_steps']}. Each size is one run of the accuracy benchmark's code.\n\n"
        + provenance(result) + "\n" + table(header, table_rows) + "\n" + "\n".join(lines) + "\n\n" + image_text
    )

if __name__ == "__main__":
    print(write_report(REPO_ROOT / "benchmarks" / "results", REPO_ROOT / "docs" / "benchmarks.md", REPO_ROOT / "docs" / "img"))
