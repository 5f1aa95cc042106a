"""What every benchmark shares: machine facts, interleaved timing, FLOP counts, one training step, JSON I/O.

Timing on a shared machine is noisy, so no benchmark reports a lone time. Each comparison runs its
candidates *interleaved* (A, B, C, A, B, C, ...; the order rotates every repeat), and the figure
reported is the median over repeats of the ratio taken inside one repeat: a burst of load from
another process slows both sides of a ratio alike. The load average is recorded with every
result, so a reader can tell a quiet run from a busy one.
"""

from __future__ import annotations

import contextlib
import datetime as _datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from latentreason import ReasonerConfig
from latentreason.reasoner import Reasoner
from latentreason.training import adamw

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
IMG_DIR = REPO_ROOT / "docs" / "img"


# --- the machine ----------------------------------------------------------------------------------
def load_average() -> float:
    """1-minute load average (number of runnable processes); compare it with the core count."""
    return round(os.getloadavg()[0], 2)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block on `threads` torch threads (None: leave them as they are), then restore the old count."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def training_run(threads: int | None) -> Iterator[None]:
    """The block as a benchmark's training runs it: offline (no Hub calls) and on `threads` torch threads."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with torch_threads(threads):
        yield


def machine_info() -> dict[str, Any]:
    """Cores, threads, torch version, CPU model and load: stamped on every result."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": load_average(),
        "date": _datetime.datetime.now(_datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# --- timing ---------------------------------------------------------------------------------------
def interleaved_times(candidates: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall time (s) of each candidate, `repeats` times, interleaved with a rotating order.

    Every candidate runs `warmup` times first (untimed): first calls pay for allocations and
    kernel selection that later calls do not.

    Example:
        >>> times = interleaved_times({"a": lambda: sum(range(100)), "b": lambda: sum(range(200))}, repeats=3)
        >>> sorted(times), len(times["a"])
        (['a', 'b'], 3)
    """
    if repeats < 1:
        raise ValueError(f"`repeats` must be >= 1, got {repeats}.")
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over repeats of numerator[i] / denominator[i] (both measured in the same repeat)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator))


def summary(times: list[float]) -> dict[str, float]:
    """Median, min and max of a list of times (s)."""
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": len(times)}


# --- the machine's limit --------------------------------------------------------------------------
def matmul_flops(size: int) -> tuple[Callable[[], Any], float]:
    """A dense fp32 `size x size` matmul and its FLOP count (2 size^3): the machine's practical limit."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    out = torch.empty(size, size)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * size**3


# --- FLOPs of the reasoner, counted from its config -----------------------------------------------
def swiglu_inner(size: int, expansion: float, multiple: int = 1) -> int:
    """Inner width of the reasoner's SwiGLU (as `latentreason.reasoner.SwiGLU` computes it)."""
    inner = max(1, round(expansion * size * 2 / 3))
    return -(-inner // multiple) * multiple


def net_call_flops(config: ReasonerConfig, batch: int, length: int) -> float:
    """Matmul FLOPs of one forward call of the shared net on (batch, length, hidden) latents.

    Per block: the mixer (attention: qkv 2*N*d*3d, scores and weighted sum 2 x 2*B*L^2*d,
    out 2*N*d^2; mlp mixer: a SwiGLU across positions, 6*B*d*L*inner_L) plus the SwiGLU
    over channels (6*N*d*inner). Elementwise work (norms, rotary, softmax) is not counted.
    """
    d, tokens = config.hidden_size, batch * length
    if config.mixer == "attention":
        mixer = 2 * tokens * d * 3 * d + 2 * tokens * d * d + 2 * (2 * batch * length * length * d)
    else:
        max_length = (config.max_length or length) + config.answer_slots
        mixer = 6 * batch * d * length * swiglu_inner(max_length, config.expansion, config.swiglu_multiple)
    channel_mlp = 6 * tokens * d * swiglu_inner(d, config.expansion, config.swiglu_multiple)
    return float(config.num_layers * (mixer + channel_mlp))


def training_step_flops(config: ReasonerConfig, batch: int, length: int, num_labels: int) -> dict[str, float]:
    """Matmul FLOPs of one supervision step (forward, backward) of `Reasoner` + a linear head.

    The T x (n + 1) net calls all run forward; the ones inside the gradient window (`grad_mode`)
    run backward too, at twice their forward cost (gradients of inputs and of weights), except
    the very first matmul of the window: its input (x + carry) needs no gradient.
    """
    calls = config.cycles * (config.latent_steps + 1)
    grad_calls = {"full": calls, "last_cycle": config.latent_steps + 1, "one_step": 2}[config.grad_mode]
    d, tokens = config.hidden_size, batch * length
    per_call = net_call_flops(config, batch, length)
    heads = 2 * tokens * d * num_labels + 2 * batch * d  # output head per position, halting head per sample
    if config.mixer == "attention":
        first_input_grad = 2 * tokens * d * 3 * d  # qkv projection of the first block
    else:
        max_length = (config.max_length or length) + config.answer_slots
        first_input_grad = 2 * batch * d * length * 2 * swiglu_inner(max_length, config.expansion, config.swiglu_multiple)
    forward = calls * per_call + heads
    backward = 2 * (grad_calls * per_call + heads) - first_input_grad
    return {"forward": float(forward), "backward": float(backward), "total": float(forward + backward)}


def counted_flops(fn: Callable[[], Any]) -> float:
    """FLOPs that `torch.utils.flop_counter.FlopCounterMode` counts while `fn` runs.

    torch's counter has no formula for the CPU flash-attention kernels; the standard attention
    formulas are registered for them here, so attention is counted too.
    """
    from torch.utils import flop_counter

    def raw(formula: Callable[..., int]) -> Callable[..., int]:  # `formula` already turns tensors into shapes
        def counted(*args: Any, out_val: Any = None, **kwargs: Any) -> int:
            return formula(*args, out_val=out_val, **kwargs)

        counted._get_raw = True  # type: ignore[attr-defined]
        return counted

    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: raw(flop_counter.sdpa_flop),
        aten._scaled_dot_product_flash_attention_for_cpu_backward: raw(flop_counter.sdpa_backward_flop),
    }
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
        fn()
    return float(counter.get_total_flops())


# --- one training step of a bare reasoner ---------------------------------------------------------
@dataclass
class ReasonerStep:
    """A bare `Reasoner` + linear head on fixed random inputs: one supervision step per call.

    This is the arithmetic a training step must do and nothing else: the reference point for
    the speed and overhead benchmarks.
    """

    config: ReasonerConfig
    batch: int
    length: int
    num_labels: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        torch.manual_seed(self.seed)
        self.reasoner = Reasoner(self.config)
        self.head = torch.nn.Linear(self.config.hidden_size, self.num_labels, bias=False)
        params = list(self.reasoner.parameters()) + list(self.head.parameters())
        self.optimizer = adamw(params, lr=1e-4)  # what the training loop uses (fused where possible)
        self.x = torch.randn(self.batch, self.length, self.config.hidden_size)
        self.labels = torch.randint(0, self.num_labels, (self.batch, self.length))

    def loss(self) -> torch.Tensor:
        out = self.reasoner(self.x)
        logits = self.head(out.answer)
        exact = (logits.argmax(-1) == self.labels).all(dim=1).float()
        task = F.cross_entropy(logits.flatten(0, 1), self.labels.flatten())
        return task + 0.5 * F.binary_cross_entropy_with_logits(out.halt_logits, exact)

    def __call__(self) -> None:
        self.loss().backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


# --- results --------------------------------------------------------------------------------------
def command_line(names: list[str], quick: bool) -> str:
    """The command that reproduces a result."""
    return " ".join([".venv/bin/python -m benchmarks run", *names, *(["--quick"] if quick else [])])


def as_stored(settings: Any) -> Any:
    """A settings dataclass as a JSON result stores it (tuples become lists), for comparing with a stored one."""
    return json.loads(json.dumps(asdict(settings)))


def same_settings(previous: dict[str, Any] | None, settings: Any, ignore: tuple[str, ...] = ()) -> bool:
    """Whether the result `previous` was made with `settings`, all but the `ignore`d fields equal (`--reuse`)."""
    if not previous:
        return False
    before, now = previous.get("settings", {}), as_stored(settings)
    return {k: v for k, v in before.items() if k not in ignore} == {k: v for k, v in now.items() if k not in ignore}


def write_result(results_dir: Path, name: str, result: dict[str, Any]) -> Path:
    """Write `result` as `results_dir/name.json` (sorted keys, indented)."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    temporary = path.with_name(f".{path.name}.tmp")  # written whole, then renamed: never half a result
    temporary.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_results(results_dir: Path) -> dict[str, dict[str, Any]]:
    """All results in `results_dir`, by benchmark name."""
    return {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(results_dir.glob("*.json"))}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.1f}] {message}", file=sys.stderr, flush=True)
