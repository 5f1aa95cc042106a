"""Memory of a training step against the cycles T and the supervision steps N_sup, per `grad_mode`.

Two measures, for one training step (forward, loss, backward, AdamW step) of a
`LatentReasonerModel` on precomputed features:

- bytes saved for backward: every tensor autograd keeps is seen by a
  `torch.autograd.graph.saved_tensors_hooks` pack hook; the distinct storages are summed, the
  model's parameters left out (they are there whatever T is). Exact and independent of the
  allocator.
- peak process memory: the high-water mark of the resident set (`VmHWM` in /proc/self/status,
  reset through /proc/self/clear_refs just before the step; `getrusage` max RSS where that is
  not possible), in a fresh Python process per point, minus the resident memory just before the
  step. It includes what the allocator holds, the AdamW state (allocated at the first step,
  the same at every T) and the activations that live during backward.

The N_sup curve comes from one process per mode that runs N_sup supervision steps, the carry
passed on (detached) and an optimizer step after each, reading both measures after every step.

Goals (issue 8): `last_cycle` flat (T=16 within 5% of T=1); `full` grows linearly with T.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Any

import torch
from matplotlib.figure import Figure

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.testing import tiny_backbone

from .harness import REPO_ROOT, load_average, log, machine_info
from .markdown import Images, mib, provenance, table, verdict

GRAD_MODES = ("last_cycle", "one_step", "full")
FLATNESS_GOAL = 0.05  # last_cycle at the largest T within 5% of T=1
MODE_COLORS = {"last_cycle": "tab:blue", "one_step": "tab:green", "full": "tab:red"}  # in the figure


@dataclass(frozen=True)
class MemorySettings:
    """Sizes of the memory benchmark."""

    cycles: tuple[int, ...] = (1, 2, 4, 8, 16)
    supervision_steps: int = 16  # the N_sup curve: 1..supervision_steps
    supervision_cycles: int = 3  # T used for the N_sup curve
    hidden_size: int = 256
    num_heads: int = 4
    latent_steps: int = 2
    batch: int = 8
    length: int = 32
    num_labels: int = 10
    fresh_process: bool = True  # False: all points in this process (for tests; peak RSS then shares the allocator's state)


PRESETS: dict[str, MemorySettings] = {
    "full": MemorySettings(),
    "quick": MemorySettings(cycles=(1, 4, 16), supervision_steps=4, hidden_size=128, batch=4),
    "tiny": MemorySettings(cycles=(1, 3), supervision_steps=3, supervision_cycles=2, hidden_size=32, num_heads=2,
                           latent_steps=1, batch=2, length=8, fresh_process=False),
}


class SavedTensors:
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self.parameters:
            self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


class PeakResidentMemory:
    """Growth of the process's peak resident memory (RSS) from `start()`, in bytes.

    On Linux the high-water mark is reset at `start()` (writing 5 to /proc/self/clear_refs), so
    earlier peaks (imports, building the model) cannot hide the one measured; elsewhere the
    lifetime peak (`getrusage` max RSS) is used, which is why every point runs in a fresh process.
    """

    def __init__(self) -> None:
        self.method = "VmHWM after clear_refs" if _reset_high_water_mark() else "ru_maxrss"
        self.baseline = 0

    def start(self) -> None:
        _reset_high_water_mark()
        self.baseline = _status_bytes("VmRSS") if self.method != "ru_maxrss" else _maxrss_bytes()

    def growth(self) -> int:
        peak = _status_bytes("VmHWM") if self.method != "ru_maxrss" else _maxrss_bytes()
        return max(0, peak - self.baseline)


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _status_bytes(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def build(settings: MemorySettings, grad_mode: str, cycles: int) -> tuple[LatentReasonerModel, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    config = ReasonerConfig(
        hidden_size=settings.hidden_size, num_heads=settings.num_heads, latent_steps=settings.latent_steps,
        cycles=cycles, grad_mode=grad_mode, num_labels=settings.num_labels,
    )
    model = attach_reasoner(tiny_backbone("llama"), config)
    model.train()
    data = {
        "features": torch.randn(settings.batch, settings.length, model.backbone.hidden_size),
        "attention_mask": torch.ones(settings.batch, settings.length, dtype=torch.long),
        "labels": torch.randint(0, settings.num_labels, (settings.batch, settings.length)),
    }
    return model, data


def measure_point(settings: MemorySettings, grad_mode: str, cycles: int, supervision_steps: int) -> dict[str, Any]:
    """Run `supervision_steps` training steps; saved bytes and peak-RSS growth after each step."""
    model, data = build(settings, grad_mode, cycles)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    resident = PeakResidentMemory()
    resident.start()
    carry, saved, peaks = None, [], []
    for _ in range(supervision_steps):
        recorder = SavedTensors(model)
        with torch.autograd.graph.saved_tensors_hooks(recorder.pack, lambda tensor: tensor):
            out = model(features=data["features"], attention_mask=data["attention_mask"], labels=data["labels"], carry=carry)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        carry = out.carry
        del out
        saved.append(recorder.total)
        peaks.append(resident.growth())
    return {"grad_mode": grad_mode, "cycles": cycles, "saved_bytes": saved, "peak_rss_growth_bytes": peaks,
            "rss_method": resident.method}


def measure_in_fresh_process(settings: MemorySettings, grad_mode: str, cycles: int, supervision_steps: int) -> dict[str, Any]:
    """`measure_point` in a new Python process, so its peak RSS is its own."""
    request = json.dumps({"settings": asdict(settings), "grad_mode": grad_mode, "cycles": cycles,
                          "supervision_steps": supervision_steps})
    completed = subprocess.run([sys.executable, "-m", "benchmarks.memory", request], cwd=REPO_ROOT,
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory point {grad_mode}, T={cycles} failed in its subprocess:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(settings: MemorySettings) -> dict[str, Any]:
    """Run the memory benchmark; returns the JSON-ready result."""
    measure = measure_in_fresh_process if settings.fresh_process else measure_point
    load_before = load_average()
    cycles_curve: dict[str, list[dict[str, Any]]] = {mode: [] for mode in GRAD_MODES}
    for mode in GRAD_MODES:
        for cycles in settings.cycles:
            log(f"memory: {mode}, T={cycles}")
            point = measure(settings, mode, cycles, 1)
            cycles_curve[mode].append({"cycles": cycles, "saved_bytes": point["saved_bytes"][0],
                                       "peak_rss_growth_bytes": point["peak_rss_growth_bytes"][0]})
    supervision_curve = {}
    for mode in GRAD_MODES:
        log(f"memory: {mode}, N_sup 1..{settings.supervision_steps}")
        point = measure(settings, mode, settings.supervision_cycles, settings.supervision_steps)
        supervision_curve[mode] = {"saved_bytes": point["saved_bytes"], "peak_rss_growth_bytes": point["peak_rss_growth_bytes"]}
    return {
        "benchmark": "memory",
        "machine": machine_info(),
        "settings": asdict(settings),
        "vs_cycles": cycles_curve,
        "vs_supervision_steps": supervision_curve,
        "goals": goals(cycles_curve),
        "rss_method": PeakResidentMemory().method,
        "load_average": [load_before, load_average()],
    }


def goals(curve: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """last_cycle: relative change from the smallest to the largest T; full: growth per cycle and linearity."""
    def change(points: list[dict[str, Any]], key: str) -> float | None:
        first, last = points[0][key], points[-1][key]
        return None if first is None or not first else (last - first) / first

    flat = {key: change(curve["last_cycle"], key) for key in ("saved_bytes", "peak_rss_growth_bytes")}
    cycles = [p["cycles"] for p in curve["full"]]
    saved = [p["saved_bytes"] for p in curve["full"]]
    slope, intercept, r_squared = linear_fit(cycles, saved)
    return {
        "last_cycle_change": flat,
        "last_cycle_flat": all(abs(v) <= FLATNESS_GOAL for v in flat.values() if v is not None),
        "full_bytes_per_cycle": slope,
        "full_intercept_bytes": intercept,
        "full_linear_r_squared": r_squared,
    }


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least-squares line y = slope * x + intercept, and R^2."""
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, mean_y, 1.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sxx
    intercept = mean_y - slope * mean_x
    residual = sum((y - slope * x - intercept) ** 2 for x, y in zip(xs, ys))
    total = sum((y - mean_y) ** 2 for y in ys)
    return slope, intercept, 1.0 - residual / total if total else 1.0


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The section of docs/benchmarks.md: saved and peak memory against T per grad mode, the goals, the N_sup curve."""
    settings, curve, goals = result["settings"], result["vs_cycles"], result["goals"]
    cycles = [p["cycles"] for p in curve["last_cycle"]]
    rows = []
    for index, t in enumerate(cycles):
        row = [t]
        for mode in GRAD_MODES:
            point = curve[mode][index]
            row += [mib(point["saved_bytes"]), mib(point["peak_rss_growth_bytes"])]
        rows.append(row)
    header = ["T"] + [f"{mode} {what}" for mode in GRAD_MODES for what in ("saved MiB", "peak MiB")]

    change = goals["last_cycle_change"]
    rss_change = change["peak_rss_growth_bytes"]
    flat_line = (
        f"- `last_cycle` from T={cycles[0]} to T={cycles[-1]}: saved bytes change {100 * change['saved_bytes']:+.1f}%"
        + ("" if rss_change is None else f", peak RSS growth {100 * rss_change:+.1f}%")
        + f". Goal (within {100 * FLATNESS_GOAL:.0f}%): {verdict(goals['last_cycle_flat'])}.\n"
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
        + (images.add(figure(result), "memory", "memory vs cycles and supervision steps") if images else "")
    )


def figure(result: dict[str, Any]) -> Figure:
    """Saved bytes and peak RSS growth against T, and both against the supervision step."""
    settings, curve = result["settings"], result["vs_cycles"]
    cycles = [p["cycles"] for p in curve["last_cycle"]]
    plot = Figure(figsize=(14, 4))
    axes = plot.subplots(1, 3)
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
    return plot


if __name__ == "__main__":  # one point, in a fresh process (see measure_in_fresh_process)
    request = json.loads(sys.argv[1])
    settings = MemorySettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in request["settings"].items()})
    print(json.dumps(measure_point(settings, request["grad_mode"], request["cycles"], request["supervision_steps"])))
