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

import statistics
from dataclasses import asdict, dataclass
from typing import Any

import torch
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
    training_step_flops,
)

GOAL_FRACTION = 0.75


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
    reference_expansion: float = 4.0  # TRM's; ours is set to give the same SwiGLU width
    num_labels: int = 10
    repeats: int = 5
    matmul_size: int = 2048
    top_ops: int = 12


PRESETS: dict[str, SpeedSettings] = {
    "full": SpeedSettings(),
    "quick": SpeedSettings(hidden_sizes=(512,), batch=4, large_batch=8, latent_steps=2, cycles=2, repeats=3),
    "tiny": SpeedSettings(hidden_sizes=(32,), batch=2, large_batch=4, length=9, head_size=16, latent_steps=1, cycles=2, repeats=2,
                          matmul_size=128, top_ops=5),
}


def reasoner_config(settings: SpeedSettings, hidden: int, mixer: str) -> ReasonerConfig:
    return ReasonerConfig(
        hidden_size=hidden, num_layers=settings.num_layers, num_heads=max(1, hidden // settings.head_size),
        expansion=trm_reference.matching_expansion(hidden, settings.reference_expansion), mixer=mixer,
        max_length=settings.length if mixer == "mlp" else None, latent_steps=settings.latent_steps,
        cycles=settings.cycles, num_labels=settings.num_labels,
    )


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
        reference = trm_reference.reference_step(config, settings.reference_expansion, batch, settings.length,
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
        "swiglu_width": round(config.expansion * hidden * 2 / 3),
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
    main = [c for c in configs if c["hidden_size"] == largest]
    return {
        "benchmark": "speed",
        "machine": machine_info(),
        "settings": asdict(settings),
        "configs": configs,
        "large_batch": large_batch,  # the goal's configs at a larger batch, ours only
        "profile": profiles,
        "trm_available": use_reference,
        "trm_note": "" if use_reference else f"TRM reference not available: {trm_reference.unavailable_reason()}",
        "goal": {"fraction_of_peak": GOAL_FRACTION, "hidden_size": largest,
                 "met": all(c["fraction_of_peak"] >= GOAL_FRACTION for c in main)},
        "torch_threads": torch.get_num_threads(),
    }
