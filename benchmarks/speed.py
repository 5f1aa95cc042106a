"""Speed against the machine's limit: achieved FLOP/s of a reasoner training step, and the TRM reference.

In one run, interleaved: a large dense fp32 `torch.mm` (the machine's practical limit), one
supervision step of latentreason's `Reasoner` + linear head, and the same step of the TRM
reference implementation on the same configuration (when its checkout is available, see
`benchmarks.trm_reference`). The step's matmul FLOPs are counted from the config
(`harness.training_step_flops`) and checked against torch's `FlopCounterMode`; the fraction of
the limit is the median over repeats of (step FLOP/s) / (matmul FLOP/s) measured in that repeat.
A `torch.profiler` table of one step says where the time goes.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
from matplotlib.figure import Figure
from torch.profiler import ProfilerActivity, profile

from latentreason import ReasonerConfig
from latentreason.kernels import cpu_kernels

from . import trm_reference
from .harness import (
    ReasonerStep,
    counted_flops,
    interleaved_times,
    load_average,
    log,
    machine_info,
    matmul_flops,
    median_ratio,
    summary,
    swiglu_inner,
    training_step_flops,
)
from .markdown import Images, provenance, table, verdict

GOAL_FRACTION = 0.75
GOAL_VS_TRM = 1.1  # step time of the reference / ours at the largest hidden size
GOAL_VS_TRM_RECIPES = 1.0  # the same at the recipes' sizes


@dataclass(frozen=True)
class SpeedSettings:
    """Sizes of the speed benchmark (the TRM Sudoku configuration, with a smaller batch, by default)."""

    hidden_sizes: tuple[int, ...] = (128, 256, 512)  # attention-mixer sweep; the mlp mixer runs at the largest
    mixers: tuple[str, ...] = ("attention", "mlp")
    batch: int = 8
    large_batch: int = 32  # the largest-hidden configs again at this batch, ours only: what bigger matmuls buy
    length: int = 81  # a 9x9 grid
    num_layers: int = 2
    head_size: int = 64  # num_heads = hidden / head_size (TRM: 512 / 8)
    latent_steps: int = 6
    cycles: int = 3
    reference_expansion: float = 4.0  # TRM's, ours too, both rounded up to a multiple of 256 (the reference's rule)
    num_labels: int = 10
    repeats: int = 5
    matmul_size: int = 2048
    top_ops: int = 12
    # The recipes' shapes (hidden 64-128, batch 64, n=2, T=2, a 6x6 grid): ours against the reference only.
    recipe_hidden_sizes: tuple[int, ...] = (64, 128)
    recipe_batch: int = 64
    recipe_length: int = 36
    recipe_head_size: int = 32
    recipe_latent_steps: int = 2
    recipe_cycles: int = 2
    recipe_repeats: int = 11


PRESETS: dict[str, SpeedSettings] = {
    "full": SpeedSettings(),
    "quick": SpeedSettings(hidden_sizes=(512,), batch=4, large_batch=8, latent_steps=2, cycles=2, repeats=3,
                           recipe_hidden_sizes=(64,), recipe_repeats=3),
    "tiny": SpeedSettings(hidden_sizes=(32,), batch=2, large_batch=4, length=9, head_size=16, latent_steps=1, cycles=2, repeats=2,
                          matmul_size=128, top_ops=5, recipe_hidden_sizes=(16,), recipe_batch=2, recipe_length=9,
                          recipe_head_size=8, recipe_repeats=2),
}


def reasoner_config(settings: SpeedSettings, hidden: int, mixer: str) -> ReasonerConfig:
    return ReasonerConfig(
        hidden_size=hidden, num_layers=settings.num_layers, num_heads=max(1, hidden // settings.head_size),
        expansion=settings.reference_expansion, swiglu_multiple=trm_reference.SWIGLU_MULTIPLE, mixer=mixer,
        max_length=settings.length if mixer == "mlp" else None, latent_steps=settings.latent_steps,
        cycles=settings.cycles, num_labels=settings.num_labels, norm_scale=False,  # the reference's network exactly
    )


def recipe_settings(settings: SpeedSettings) -> SpeedSettings:
    """The settings at the recipes' shapes: their batch, length, n, T and head size, and more repeats."""
    return dataclasses.replace(settings, batch=settings.recipe_batch, length=settings.recipe_length,
                               head_size=settings.recipe_head_size, latent_steps=settings.recipe_latent_steps,
                               cycles=settings.recipe_cycles, repeats=settings.recipe_repeats)


def measure_against_reference(settings: SpeedSettings, hidden: int, mixer: str) -> dict[str, Any]:
    """Our step against the reference's on one configuration, interleaved (no matmul limit, no unfused step)."""
    config = reasoner_config(settings, hidden, mixer)
    step = ReasonerStep(config, settings.batch, settings.length, settings.num_labels)
    scaled = ReasonerStep(dataclasses.replace(config, norm_scale=True), settings.batch, settings.length, settings.num_labels)
    reference = trm_reference.reference_step(config, settings.batch, settings.length, settings.num_labels)
    load_before = load_average()
    times = interleaved_times({"latentreason": step, "trm": reference, "norm_scale": scaled}, settings.repeats)
    return {
        "mixer": mixer, "hidden_size": hidden, "batch": settings.batch, "length": settings.length,
        "num_heads": config.num_heads, "latentreason": summary(times["latentreason"]), "trm": summary(times["trm"]),
        "speedup_vs_trm": median_ratio(times["trm"], times["latentreason"]),  # > 1: latentreason is faster
        "speedup_vs_trm_range": ratio_range(times["trm"], times["latentreason"]),
        # our default network (a learnable scale in every RMSNorm) against the same without: > 1, the scales cost time
        "norm_scale_cost": median_ratio(times["norm_scale"], times["latentreason"]),
        "load_average": [load_before, load_average()],
    }


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_scaled_dot_product_flash_attention_for_cpu",
              "aten::_scaled_dot_product_flash_attention_for_cpu_backward")


def profile_step(step: ReasonerStep, top: int) -> dict[str, Any]:
    """Where one step's time goes: the ops with the most self CPU time, and the share of matmul-like ops.

    The top ops: name, milliseconds, percent of the step, calls. `matmul_share` counts the GEMMs
    and the attention kernels; the rest is elementwise work (norms, rotary, gating, optimizer).
    """
    step()  # warm up outside the profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    top_ops = [
        {"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 2),
         "percent": round(100 * e.self_cpu_time_total / total, 1), "calls": e.count}
        for e in events[:top]
    ]
    matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
    return {"top_ops": top_ops, "matmul_share": matmul / total, "total_ms": round(total / 1000, 1)}


def without_fused_ops(step: ReasonerStep) -> None:
    """One step with torch's autograd for RMSNorm and the SwiGLU gate instead of latentreason's hand-written backwards."""
    with cpu_kernels(False):
        step()


def ratio_range(theirs: list[float], ours: list[float]) -> list[float]:
    """The smallest and largest per-repeat ratio theirs / ours: how noisy their median is."""
    ratios = [a / b for a, b in zip(theirs, ours)]
    return [min(ratios), max(ratios)]


def measure(settings: SpeedSettings, hidden: int, mixer: str, use_reference: bool, batch: int | None = None,
            compare: bool = True) -> dict[str, Any]:
    """Time one configuration against the matmul limit (and, with `compare`, the unfused step and the reference), interleaved."""
    batch = settings.batch if batch is None else batch
    config = reasoner_config(settings, hidden, mixer)
    step = ReasonerStep(config, batch, settings.length, settings.num_labels)
    flops = training_step_flops(config, batch, settings.length, settings.num_labels)["total"]
    matmul, matmul_work = matmul_flops(settings.matmul_size)
    candidates = {"matmul": matmul, "latentreason": step}
    if compare:
        unfused = ReasonerStep(config, batch, settings.length, settings.num_labels)
        candidates["unfused"] = lambda: without_fused_ops(unfused)
    use_reference = use_reference and compare
    if use_reference:
        reference = trm_reference.reference_step(config, batch, settings.length,
                                                 settings.num_labels)
        reference_flops = counted_flops(reference)
        candidates["trm"] = reference
    load_before = load_average()
    times = interleaved_times(candidates, settings.repeats)
    peak = [matmul_work / t for t in times["matmul"]]
    result: dict[str, Any] = {
        "mixer": mixer,
        "hidden_size": hidden,
        "batch": batch,
        "num_heads": config.num_heads,
        "swiglu_width": swiglu_inner(hidden, config.expansion, config.swiglu_multiple),
        "effective_depth": config.effective_depth,
        "flops_analytic": flops,
        "flops_counted": counted_flops(step),
        "matmul_gflops": statistics.median(peak) / 1e9,
        "latentreason": summary(times["latentreason"]),
        "latentreason_gflops": flops / statistics.median(times["latentreason"]) / 1e9,
        "fraction_of_peak": median_ratio([flops / t for t in times["latentreason"]], peak),
        "load_average": [load_before, load_average()],
    }
    if compare:
        # > 1: the hand-written RMSNorm and SwiGLU-gate backwards make the step faster than torch's autograd of the same ops
        result["speedup_vs_unfused"] = median_ratio(times["unfused"], times["latentreason"])
        result["speedup_vs_unfused_range"] = ratio_range(times["unfused"], times["latentreason"])
    if use_reference:
        result["trm"] = summary(times["trm"])
        result["trm_flops_counted"] = reference_flops
        result["trm_fraction_of_peak"] = median_ratio([reference_flops / t for t in times["trm"]], peak)
        result["speedup_vs_trm"] = median_ratio(times["trm"], times["latentreason"])  # > 1: latentreason is faster
        result["speedup_vs_trm_range"] = ratio_range(times["trm"], times["latentreason"])  # per repeat: how noisy the median is
    return result


def run(settings: SpeedSettings) -> dict[str, Any]:
    """Run the speed benchmark; returns the JSON-ready result."""
    use_reference = trm_reference.available()
    largest = max(settings.hidden_sizes)
    points = [(hidden, "attention") for hidden in settings.hidden_sizes if "attention" in settings.mixers]
    points += [(largest, mixer) for mixer in settings.mixers if mixer != "attention"]
    configs = []
    for hidden, mixer in points:
        log(f"speed: {mixer} mixer, hidden {hidden}")
        configs.append(measure(settings, hidden, mixer, use_reference))
    large_batch = []
    if settings.large_batch != settings.batch:
        for mixer in settings.mixers:
            log(f"speed: {mixer} mixer, hidden {largest}, batch {settings.large_batch}")
            large_batch.append(measure(settings, largest, mixer, use_reference, batch=settings.large_batch, compare=False))
    log("speed: profiling one step")
    profiles = {
        mixer: profile_step(ReasonerStep(reasoner_config(settings, largest, mixer), settings.batch, settings.length,
                                         settings.num_labels), settings.top_ops)
        for mixer in settings.mixers
    }
    recipe_sizes = []
    if use_reference:
        small = recipe_settings(settings)
        for hidden in settings.recipe_hidden_sizes:
            for mixer in settings.mixers:
                log(f"speed: {mixer} mixer, hidden {hidden}, the recipes' shapes, against the reference")
                recipe_sizes.append(measure_against_reference(small, hidden, mixer))
    main = [c for c in configs if c["hidden_size"] == largest]
    return {
        "benchmark": "speed",
        "machine": machine_info(),
        "settings": asdict(settings),
        "configs": configs,
        "large_batch": large_batch,  # the goal's configs at a larger batch, ours only
        "recipe_sizes": recipe_sizes,  # ours against the reference at the recipes' shapes
        "profile": profiles,
        "trm_available": use_reference,
        "trm_note": "" if use_reference else f"TRM reference not available: {trm_reference.unavailable_reason()}",
        "goal": {"fraction_of_peak": GOAL_FRACTION, "hidden_size": largest,
                 "met": all(c["fraction_of_peak"] >= GOAL_FRACTION for c in main),
                 "vs_trm": GOAL_VS_TRM, "vs_trm_recipes": GOAL_VS_TRM_RECIPES},
        "torch_threads": torch.get_num_threads(),
    }


# --- the section of docs/benchmarks.md ---------------------------------------------------------------
def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The section of docs/benchmarks.md: each step against the matmul limit and the TRM reference, and where the time goes."""
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
    profile_parts = []
    for mixer, prof in result["profile"].items():
        profile_parts.append(
            f"\nTop ops of one step, {mixer} mixer, hidden {result['goal']['hidden_size']} (self CPU time, `torch.profiler`, "
            f"{prof['total_ms']:.0f} ms in all): matmuls and attention kernels take {100 * prof['matmul_share']:.0f}% of the "
            "step, elementwise work (norms, rotary, SwiGLU gating, residual adds, AdamW) the rest.\n\n"
            + table(["op", "self ms", "% of step", "calls"], [[f"`{o['op']}`", o["self_ms"], o["percent"], o["calls"]] for o in prof["top_ops"]]))
    return (
        "## Speed: a training step against the machine's matmul limit\n\n"
        f"One supervision step (forward, loss, backward, AdamW step) of `Reasoner` + a linear head: batch {settings['batch']} x "
        f"{settings['length']} positions, {settings['num_layers']} layers, n={settings['latent_steps']}, T={settings['cycles']}, "
        "last_cycle gradients, fp32, the reference's network exactly (`norm_scale=false`: no learnable scale in the RMSNorms). Its matmul FLOPs are counted from the config (qkv, attention, out, SwiGLU; the T(n+1) "
        "net calls forward, the last cycle backward at 2x); `counted/analytic` checks that count against "
        "`torch.utils.flop_counter.FlopCounterMode` (it is above 1 for attention because torch counts the flash kernel's "
        "recomputation of the scores in backward). The limit is a dense "
        f"{settings['matmul_size']}x{settings['matmul_size']} fp32 `torch.mm`, timed interleaved with the step. The TRM "
        "reference (SamsungSAILMontreal/TinyRecursiveModels, imported from a checkout outside the repository, float32) "
        "runs the same configuration; both round every SwiGLU width up to a multiple of 256 (`reasoner.swiglu_multiple=256`, the reference's rule, the mlp mixer's sequence SwiGLU included), so both do the same matmuls.\n\n"
        + provenance(result) + "\n" + table(header, rows) + "\n" + goal_lines(result) + reference_line(result) + "\n"
        + (images.add(figure(result), "speed", "fraction of the matmul limit") if images else "") + "".join(profile_parts)
    )


def _fractions(configs: list[dict[str, Any]], goal: dict[str, Any]) -> str:
    return ", ".join(f"{c['mixer']} {100 * c['fraction_of_peak']:.0f}% {verdict(c['fraction_of_peak'] >= goal['fraction_of_peak'])}"
                     for c in configs)


def _spread(c: dict[str, Any], key: str = "speedup_vs_trm_range") -> str:
    low, high = c.get(key, (None, None))
    return f" (repeats {low:.2f}-{high:.2f})" if low is not None else ""


def _matmul_share(result: dict[str, Any]) -> str:
    return ", ".join(f"{mixer} {100 * prof['matmul_share']:.0f}%" for mixer, prof in result["profile"].items())


def goal_lines(result: dict[str, Any]) -> str:
    """The goal against the matmul limit, what limits a step, and what larger batches and the hand-written backwards buy."""
    settings, configs, goal = result["settings"], result["configs"], result["goal"]
    main = [c for c in configs if c["hidden_size"] == goal["hidden_size"]]
    bound = _matmul_share(result)
    text = (f"- Goal: at least {100 * goal['fraction_of_peak']:.0f}% of the matmul limit at hidden {goal['hidden_size']}: "
            f"{_fractions(main, goal)}.\n")
    if result["trm_available"]:
        reference_limit = (" The TRM reference, the same step written independently, reaches " + ", ".join(
            f"{c['mixer']} {100 * c['trm_fraction_of_peak']:.0f}%" for c in main)
            + " in the same run: the ceiling is the configuration's arithmetic on this CPU, not this library's code.")
    else:
        reference_limit = ""
    batch, length = settings["batch"], settings["length"]
    text += (f"- {'What limits it' if goal['met'] else 'Why'}: in the profile, matmuls and attention kernels take only {bound} of a step's time; the rest is "
             "elementwise work (RMSNorm forward and backward, rotary, SwiGLU gating, residual adds, AdamW) that runs at memory "
             "bandwidth, not at matmul speed. The achievable fraction is at most that share times the matmuls' own "
             f"efficiency at these shapes (a batch of {batch} x {length} positions gives matmuls of {batch * length} rows, and the mlp mixer's "
             f"sequence mixing multiplies over only {length} positions: thinner than the {settings['matmul_size']}-square limit)."
             + reference_limit + " On CPU, latentreason writes the backward of RMSNorm and of the SwiGLU gate by hand "
             "(`latentreason/kernels.py`: fewer memory passes than autograd's, and no concatenation of the gate's two gradients). "
             "Not measured by this benchmark, so no figure here: `torch.compile` of the shared net (tried, no gain on this "
             "CPU) and torch's fused AdamW (what the training loop uses).\n")
    large = result.get("large_batch", [])
    if large:
        text += (f"- What larger batches buy: the same configurations at batch {large[0]['batch']} "
                 f"({large[0]['batch'] * length} rows per matmul), in the same run: " + _fractions(large, goal)
                 + " of the limit (a recipe sets it as `training.batch_size`).\n")
    if all("speedup_vs_unfused" in c for c in configs):
        text += ("- What the hand-written backwards buy: step time with torch's autograd for RMSNorm and the SwiGLU gate over "
                 "the time with latentreason's, in the same run: " + ", ".join(
                     f"{c['mixer']} d={c['hidden_size']} {c['speedup_vs_unfused']:.2f}x{_spread(c, 'speedup_vs_unfused_range')}"
                     for c in configs) + " (> 1: faster with them).\n")
    return text


def _judge(configs: list[dict[str, Any]], goal: float) -> str:
    """Met when every median reaches `goal`; a miss names the short ones and says whether their repeats span the goal."""
    short = [c for c in configs if c["speedup_vs_trm"] < goal]
    if not short:
        return verdict(True)
    names = ", ".join(f"{c['mixer']} d={c['hidden_size']} {c['speedup_vs_trm']:.3f}x" for c in short)
    spans = all(c.get("speedup_vs_trm_range", (2, 0))[0] <= goal <= c.get("speedup_vs_trm_range", (2, 0))[1] for c in short)
    return verdict(False) + f" ({names}" + (f"; each of their repeat ranges spans {goal:g}, so that gap is within this machine's noise)" if spans else ")")


def _elementwise_budget(result: dict[str, Any], goal: float) -> str:
    """What a speedup of `goal` over the reference would ask of the elementwise work, from the profile's matmul share."""
    shares = [prof["matmul_share"] for prof in result["profile"].values()]
    share = sum(shares) / len(shares)
    if goal <= 1.0 or share >= 1 / goal:
        return ""
    left = (1 / goal - share) / (1 - share)
    return (f" Both run the same matmuls, about {100 * share:.0f}% of a step: even with no elementwise work at all, ours could be at "
            f"most {1 / share:.2f}x the reference's speed, and {goal:g}x would need the elementwise work cut to about {100 * left:.0f}% "
            "of the reference's, more than fusing eager CPU ops can give.")


def reference_line(result: dict[str, Any]) -> str:
    """The step time against the TRM reference's at the benchmark's sizes and at the recipes', with the goals."""
    if not result["trm_available"]:
        return f"- TRM reference: {result['trm_note']}.\n"
    configs, goal = result["configs"], result["goal"]
    main = [c for c in configs if c["hidden_size"] == goal["hidden_size"]]
    large_goal = goal.get("vs_trm", 1.0)
    text = ("- Against the TRM reference on the same configuration: " + ", ".join(
        f"{c['mixer']} d={c['hidden_size']} {c['speedup_vs_trm']:.2f}x{_spread(c)}" for c in configs)
        + " (step time of TRM / ours, median over repeats; > 1 means latentreason is faster). Both do the same matmuls "
        f"(matmuls and attention kernels are {_matmul_share(result)} of a step) with the same optimizer (torch's fused AdamW, which latentreason's "
        "training loop uses), so only the elementwise work around them can differ. "
        f"Goal (at least {large_goal:g}x at hidden {goal['hidden_size']}): " + _judge(main, large_goal) + "."
        + (_elementwise_budget(result, large_goal) if any(c["speedup_vs_trm"] < large_goal for c in main) else "") + "\n")
    small = result.get("recipe_sizes", [])
    if small:
        settings = result["settings"]
        rows = [[c["mixer"], c["hidden_size"], c["num_heads"], f"{c['latentreason']['median_s']:.3f}", f"{c['trm']['median_s']:.3f}",
                 f"{c['speedup_vs_trm']:.2f}x", f"{c['speedup_vs_trm_range'][0]:.2f}-{c['speedup_vs_trm_range'][1]:.2f}"] for c in small]
        recipe_goal = goal.get("vs_trm_recipes", 1.0)
        text += (f"\nAt the recipes' sizes (batch {settings['recipe_batch']} x {settings['recipe_length']} positions, "
                 f"n={settings['recipe_latent_steps']}, T={settings['recipe_cycles']}, heads of {settings['recipe_head_size']}), "
                 f"ours against the reference only, {settings['recipe_repeats']} interleaved repeats each:\n\n"
                 + table(["mixer", "hidden", "heads", "step s", "TRM step s", "speed vs TRM", "repeats"], rows)
                 + f"\n- Goal (at least {recipe_goal:g}x at every one of these sizes): " + _judge(small, recipe_goal) + ".\n")
        if all("norm_scale_cost" in c for c in small):
            text += ("- What latentreason's default learnable RMSNorm scale (`norm_scale: true`, which the recipes use) costs, in the same "
                     "runs: step time with it / without it: " + ", ".join(f"{c['mixer']} d={c['hidden_size']} {c['norm_scale_cost']:.2f}x"
                                                                          for c in small) + ".\n")
    return text


def figure(result: dict[str, Any]) -> Figure:
    """Each configuration's fraction of the matmul limit, ours beside the TRM reference's, and the goal."""
    configs, trm = result["configs"], result["trm_available"]
    plot = Figure(figsize=(7, 4))
    axis = plot.subplots()
    labels = [f"{c['mixer']}\nd={c['hidden_size']}" for c in configs]
    positions = range(len(configs))
    width = 0.38 if trm else 0.6
    axis.bar([p - (width / 2 if trm else 0) for p in positions], [100 * c["fraction_of_peak"] for c in configs], width, label="latentreason")
    if trm:
        axis.bar([p + width / 2 for p in positions], [100 * c["trm_fraction_of_peak"] for c in configs], width, label="TRM reference")
    axis.axhline(100 * result["goal"]["fraction_of_peak"], color="gray", linestyle="--", label="goal")
    axis.set_xticks(list(positions), labels)
    axis.set(ylabel="% of dense fp32 matmul FLOP/s", title="training step vs the machine's matmul limit")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    return plot
