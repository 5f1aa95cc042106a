"""Hand-written CPU autograd kernels for the two hot ops of the net: RMSNorm and the SwiGLU gate.

torch's CPU kernels run these ops fused forward but differentiate through their decomposition; the
Functions here save what the backward needs and take fewer memory passes (the speed
benchmark times both; results agree to rounding). They are used where they pay (`fused_path`): large
CPU tensors in full precision. GPUs have fused kernels of their own and always take torch's path.

    with cpu_kernels(False):       # torch's autograd of the same ops, e.g. to time or compare them
        ...
    with cpu_kernels(min_elements=0):   # the hand-written ones at any size (tests)
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class _Settings:
    enabled: bool = True
    # Below this many elements a custom autograd Function's Python overhead costs more than the memory passes
    # it saves (measured on this project's 2-core CPU: 0.8x at 10k elements, 1.1x at 41k, 1.3x at 200k+).
    min_elements: int = 32768


_settings = _Settings()  # changed only through `cpu_kernels`, which restores it


@contextlib.contextmanager
def cpu_kernels(enabled: bool = True, *, min_elements: int | None = None) -> Iterator[None]:
    """Inside this block the hand-written kernels are on or off (`enabled`), from `min_elements` elements on.

    Example:
        >>> h = torch.randn(4, 128, 64)
        >>> with cpu_kernels(False):
        ...     fused_path(h)
        False
        >>> fused_path(h)
        True
    """
    previous = _Settings(_settings.enabled, _settings.min_elements)
    _settings.enabled = enabled
    if min_elements is not None:
        _settings.min_elements = min_elements
    try:
        yield
    finally:
        _settings.enabled, _settings.min_elements = previous.enabled, previous.min_elements


def kernels_enabled() -> bool:
    """Whether the hand-written kernels are on (they are, outside a `cpu_kernels(False)` block)."""
    return _settings.enabled


def fused_path(h: torch.Tensor) -> bool:
    """True where the hand-written backwards pay: large CPU tensors in full precision (GPUs have fused kernels).

    The choice depends on the tensor alone, not on whether autograd records: the first T-1 cycles take
    the same path, so a step computes the same values, to the bit, with or without gradients
    (`refine` under no_grad equals a training forward).
    """
    return (_settings.enabled and h.device.type == "cpu" and h.dtype in (torch.float32, torch.float64)
            and h.numel() >= _settings.min_elements)


class _RMSNormFunction(torch.autograd.Function):
    """RMSNorm with a hand-written backward: about half the memory passes of autograd's.

    torch's CPU `rms_norm` runs fused forward but differentiates through its decomposition (a dozen
    elementwise passes); this saves the normalized input and the inverse RMS and needs five.
    With n = h * r, r = 1/rms(h), y = n * w:
        dL/dw = sum over rows of g * n
        dL/dh = r * (g*w - n * mean(g*w * n))
    """

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
        inverse_rms = torch.rsqrt(h.square().mean(-1, keepdim=True).add_(eps))
        normalized = h * inverse_rms
        ctx.save_for_backward(normalized, inverse_rms, weight)
        return normalized if weight is None else normalized * weight

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        normalized, inverse_rms, weight = ctx.saved_tensors
        grad_h = grad_weight = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (grad * normalized).reshape(-1, normalized.shape[-1]).sum(0)
        if ctx.needs_input_grad[0]:
            scaled = grad.clone() if weight is None else grad * weight
            projection = (scaled * normalized).mean(-1, keepdim=True)
            grad_h = scaled.addcmul_(normalized, projection, value=-1).mul_(inverse_rms)
        return grad_h, grad_weight, None


def rms_norm(h: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMSNorm over the last axis (times `weight` when given): the hand-written kernel where it pays, else torch's."""
    if fused_path(h):
        return _RMSNormFunction.apply(h, weight, eps)
    return F.rms_norm(h, (h.shape[-1],), weight, eps)  # fused kernels on GPU


class _GatedSiLUFunction(torch.autograd.Function):
    """`silu(gate) * up` from the fused projection `gate_up` = [gate | up] (last dim), with a hand-written backward.

    Autograd's backward of `silu(gate) * up` runs separate passes for each product and concatenates
    the two halves' gradients; this writes both halves into one buffer with three passes: torch's
    vectorized `silu_backward` for the gate half and one product for the up half. The forward is the
    same two ops as the plain path (`F.silu(gate) * up`), so both give the same bits.
    With silu = gate * sigmoid(gate):  d/d up = g * silu;  d/d gate = silu'(gate) * g * up.
    """

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        silu = F.silu(gate)
        ctx.save_for_backward(gate_up, silu)
        return silu * up

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        gate_up, silu = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        grad_gate_up = torch.empty_like(gate_up)
        grad_gate, grad_up = grad_gate_up.chunk(2, dim=-1)
        torch.mul(grad, silu, out=grad_up)
        torch.mul(grad, up, out=grad_gate)
        torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)  # in place: silu'(gate) * (g * up)
        return grad_gate_up


def gated_silu(gate_up: torch.Tensor) -> torch.Tensor:
    """`silu(gate) * up` for `gate_up` = [gate | up] (last dim)."""
    if fused_path(gate_up):
        return _GatedSiLUFunction.apply(gate_up)
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up
