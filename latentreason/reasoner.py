"""The TRM core: one small shared net, two latents, and a recursion with truncated gradients.

Notation (Tiny Recursive Model, "Less is More", 2025):
    x      the input, already projected to the reasoner's width      (B, L, d)
    answer z_H, the current answer, read by the output head           (B, L, d)
    latent z_L, the scratchpad                                        (B, L, d)

    latent_recursion(x, answer, latent):       # one cycle
        repeat n:  latent = net(x + answer + latent)
        answer = net(answer + latent)

    one supervision step = T cycles; under `grad_mode="last_cycle"` the first T-1 run without
    gradients, so memory is that of one cycle however large T is. The carry returned is detached:
    the next supervision step starts from it but never backpropagates into this one.

What is notable:
- One net serves both updates; inputs are summed, not concatenated (TRM).
- Post-norm blocks (RMSNorm after each residual add), SwiGLU, no biases: what makes the deep
  recursion train in the reference.
- Two mixers: non-causal attention with rotary positions and a padding mask, or an MLP across
  the sequence (TRM's choice for small fixed grids). The MLP mixer takes sequences up to
  `max_length`; a shorter one uses the first columns of its weights, which is exactly zero padding.
- The halting head reads the masked mean of the answer latent; zero weights and bias -5 make it
  start at "keep going".

Left out: the output head (it lives in `latentreason.heads`, since the LM output paths read
answers through the frozen LM) and the backbone (see `latentreason.backbone`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import ReasonerConfig
from .kernels import gated_silu, rms_norm


@dataclass
class Carry:
    """The state carried between supervision steps: the answer (z_H) and scratchpad (z_L) latents."""

    answer: torch.Tensor  # (B, L, d)
    latent: torch.Tensor  # (B, L, d)

    def detach(self) -> Carry:
        return Carry(self.answer.detach(), self.latent.detach())

    def __getitem__(self, index) -> Carry:
        return Carry(self.answer[index], self.latent[index])


@dataclass
class ReasonerOutput:
    """One supervision step of the reasoner."""

    answer: torch.Tensor  # (B, L, d) the answer latent, with gradients (for the output head)
    halt_logits: torch.Tensor  # (B,) > 0 means "halt"
    carry: Carry  # detached, to start the next supervision step from


class RMSNorm(nn.Module):
    """RMSNorm over the last axis, with a learnable per-channel scale (init 1) unless `scale=False` (TRM's)."""

    def __init__(self, size: int, eps: float, scale: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if scale else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return rms_norm(h, self.weight, self.eps)  # hand-written backward on large CPU tensors (kernels.py)


class SwiGLU(nn.Module):
    """`down(silu(gate(h)) * up(h))`, with gate and up fused into one matmul."""

    def __init__(self, size: int, expansion: float, multiple: int = 1) -> None:
        super().__init__()
        inner = max(1, round(expansion * size * 2 / 3))  # 2/3 keeps the parameter count of a plain MLP
        inner = -(-inner // multiple) * multiple  # TRM's reference rounds up to a multiple of 256
        self.gate_up = nn.Linear(size, 2 * inner, bias=False)
        self.down = nn.Linear(inner, size, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.down(gated_silu(self.gate_up(h)))


def rotary_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (B, 1, L, head_dim) for integer positions (B, L)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq  # (B, L, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, L, head_dim)
    return angles.cos(), angles.sin()


def apply_rotary(h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = h.chunk(2, dim=-1)
    return h * cos + torch.cat([-second, first], dim=-1) * sin


class Attention(nn.Module):
    """Non-causal multi-head self-attention with rotary positions; padded keys are masked out."""

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.out = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, h: torch.Tensor, context: Context) -> torch.Tensor:
        B, L, d = h.shape
        qkv = self.qkv(h).view(B, L, 3, self.num_heads, d // self.num_heads)  # (B, L, 3, H, hd)
        qk = qkv[:, :, :2]
        if context.cos is not None:  # positions="rotary"
            # Rotate q and k together, in the projection's own layout: one pass over contiguous rows instead of
            # two over strided head views (same values, bit for bit; ~1.2x faster attention on CPU).
            qk = apply_rotary(qk, context.cos[:, 0, :, None, None], context.sin[:, 0, :, None, None])  # cos: (B, L, 1, 1, hd)
        q, k = qk.permute(2, 0, 3, 1, 4)  # 2x (B, H, L, hd)
        v = qkv[:, :, 2].transpose(1, 2)  # (B, H, L, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=context.attention_mask)  # (B, H, L, hd)
        return self.out(y.transpose(1, 2).reshape(B, L, d))


class SequenceMLP(nn.Module):
    """A SwiGLU across positions (TRM's mixer for small fixed grids): every position sees every other.

    Weights span `max_length` positions; a shorter sequence uses the first L columns of the input
    weights and the first L rows of the output weights, which equals zero-padding to `max_length`.
    """

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        assert config.max_length is not None
        self.max_length = config.prefix_slots + config.max_length + config.answer_slots
        self.mlp = SwiGLU(self.max_length, config.expansion, config.swiglu_multiple)

    def forward(self, h: torch.Tensor, context: Context) -> torch.Tensor:
        B, L, d = h.shape
        if L > self.max_length:
            raise ValueError(
                f"Sequence of {L} positions is longer than the mlp mixer's fixed length {self.max_length} "
                "(prefix slots + max_length + answer slots): raise `max_length` in the ReasonerConfig (and retrain) or use mixer='attention'."
            )
        if context.padding is not None:
            h = h * context.padding[..., None]  # padded positions contribute nothing
        h = h.transpose(1, 2)  # (B, d, L): mix along the sequence
        gate_up = self.mlp.gate_up.weight  # (2*inner, max_length)
        y = F.linear(gated_silu(F.linear(h, gate_up[:, :L])), self.mlp.down.weight[:L])  # (B, d, L)
        return y.transpose(1, 2)


class LocalConv(nn.Module):
    """A convolution along the sequence (`mixer="conv"`): each position sees its `conv_kernel` nearest
    neighbours, with the same weights at every position, so it runs at any length.

    Not in TRM. Made for state tracking: the state after step i is a function of the state after step
    i-1 and input i, a rule that a local, translation-invariant mixer holds exactly and attention must
    learn to locate. Each net call moves information `conv_kernel // 2` positions, so the recursion's
    depth (N_sup x T x (n + 1) x layers calls) bounds how far a state travels, and more test-time
    steps carry it further on longer inputs than any seen in training. Padded positions are zeroed
    first, so they contribute nothing.
    """

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(config.hidden_size, config.hidden_size, config.conv_kernel, padding=config.conv_kernel // 2, bias=False)

    def forward(self, h: torch.Tensor, context: Context) -> torch.Tensor:
        if context.padding is not None:
            h = h * context.padding[..., None]
        return self.conv(h.transpose(1, 2)).transpose(1, 2)  # (B, L, d)


MIXERS: dict[str, type[nn.Module]] = {"attention": Attention, "mlp": SequenceMLP, "conv": LocalConv}


@dataclass
class Context:
    """What the blocks need besides the hidden state; computed once per supervision step."""

    attention_mask: torch.Tensor | None  # (B, 1, 1, L) bool, True = attend
    padding: torch.Tensor | None  # (B, L) float, 1 = real position
    cos: torch.Tensor | None = None
    sin: torch.Tensor | None = None


class SequenceRMSNorm(nn.Module):
    """RMSNorm over the positions, one channel at a time (TRM's norm after its mlp mixer).

    The reference transposes to (B, d, L), adds the mixer's output and normalises the last axis
    before transposing back, so each channel is scaled by its RMS over the sequence. Padded
    positions are zeroed and left out of the mean. The learned scale is per channel (init 1).
    """

    def __init__(self, size: int, eps: float, scale: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(size)) if scale else None

    def forward(self, h: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        if padding is None:  # one fused kernel over the transposed view, as the reference computes it
            normed = F.rms_norm(h.transpose(1, 2), (h.shape[1],), None, self.eps).transpose(1, 2)
        else:
            h = h * padding[..., None]
            mean_square = h.square().sum(1, keepdim=True) / padding.sum(1).clamp(min=1)[:, None, None]  # (B, 1, d)
            normed = h * torch.rsqrt(mean_square + self.eps)
        return normed if self.weight is None else normed * self.weight


class Block(nn.Module):
    """Post-norm block: h = norm(h + mix(h)); h = norm(h + swiglu(h)).

    After the mlp mixer the first norm runs over the sequence axis (`mlp_norm="sequence"`, TRM's
    reference) or over channels (`"channel"`); after attention or the convolution it is always over channels.
    """

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        self.mix = MIXERS[config.mixer](config)
        self.sequence_norm = config.mixer == "mlp" and config.mlp_norm == "sequence"
        norm = SequenceRMSNorm if self.sequence_norm else RMSNorm
        self.mix_norm = norm(config.hidden_size, config.norm_eps, config.norm_scale)
        self.mlp = SwiGLU(config.hidden_size, config.expansion, config.swiglu_multiple)
        self.mlp_norm = RMSNorm(config.hidden_size, config.norm_eps, config.norm_scale)

    def forward(self, h: torch.Tensor, context: Context) -> torch.Tensor:
        mixed = h + self.mix(h, context)
        h = self.mix_norm(mixed, context.padding) if self.sequence_norm else self.mix_norm(mixed)
        return self.mlp_norm(h + self.mlp(h))


class Net(nn.Module):
    """The one small net of TRM: `num_layers` blocks, shared by the latent and the answer updates."""

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.num_layers))

    def forward(self, h: torch.Tensor, context: Context) -> torch.Tensor:
        for block in self.blocks:
            h = block(h, context)
        return h


class Reasoner(nn.Module):
    """TRM's recursive reasoner over a sequence of input latents.

    Example:
        >>> import torch
        >>> from latentreason import ReasonerConfig
        >>> from latentreason.reasoner import Reasoner
        >>> reasoner = Reasoner(ReasonerConfig(hidden_size=32, num_heads=2, latent_steps=2, cycles=2, num_labels=3))
        >>> x = torch.randn(4, 9, 32)                        # (B, L, d), from the input projection
        >>> carry = reasoner.initial_carry(x)
        >>> for step in range(3):                            # three refinement (supervision) steps
        ...     out = reasoner(x, carry)
        ...     carry = out.carry
        >>> out.answer.shape, out.halt_logits.shape
        (torch.Size([4, 9, 32]), torch.Size([4]))
    """

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        self.config = config
        self.net = Net(config)
        self.halt_head = nn.Linear(config.hidden_size, 1)
        # Initial carries: TRM draws them once (truncated normal, std 1) and keeps them fixed.
        answer_init = nn.init.trunc_normal_(torch.empty(config.hidden_size), std=1.0, a=-2.0, b=2.0)
        latent_init = nn.init.trunc_normal_(torch.empty(config.hidden_size), std=1.0, a=-2.0, b=2.0)
        if config.carry_init == "learned":
            self.answer_init = nn.Parameter(answer_init)
            self.latent_init = nn.Parameter(latent_init)
        else:
            self.register_buffer("answer_init", answer_init)
            self.register_buffer("latent_init", latent_init)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.net.modules():
            if isinstance(module, nn.Linear):
                # LeCun-normal, as in the reference: keeps post-norm activations O(1) at any width.
                nn.init.trunc_normal_(module.weight, std=1.0 / math.sqrt(module.in_features), a=-2.0, b=2.0)
        # The halting head starts at "keep going": halting is learned, not the default.
        nn.init.zeros_(self.halt_head.weight)
        nn.init.constant_(self.halt_head.bias, -5.0)

    # --- carry ------------------------------------------------------------------------------------
    def initial_carry(self, x: torch.Tensor) -> Carry:
        """A fresh carry shaped like `x` (B, L, d): the init vectors broadcast over batch and positions."""
        return Carry(
            answer=self.answer_init.to(x.dtype).expand_as(x).clone(),
            latent=self.latent_init.to(x.dtype).expand_as(x).clone(),
        )

    def reset_carry(self, carry: Carry, reset: torch.Tensor) -> Carry:
        """Replace the carry of the samples where `reset` (B,) is True by a fresh one; keep the others."""
        keep = (~reset.bool())[:, None, None]
        answer_init = self.answer_init.to(carry.answer.dtype)
        latent_init = self.latent_init.to(carry.latent.dtype)
        return Carry(
            answer=torch.where(keep, carry.answer, answer_init),
            latent=torch.where(keep, carry.latent, latent_init),
        )

    # --- recursion --------------------------------------------------------------------------------
    def make_context(self, x: torch.Tensor, mask: torch.Tensor | None) -> Context:
        padding = None if mask is None or bool(mask.all()) else mask.to(x.dtype)
        context = Context(attention_mask=None if padding is None else mask.bool()[:, None, None, :], padding=padding)
        if self.config.mixer == "attention" and self.config.positions == "rotary":
            if mask is None:
                positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
            else:  # count real positions only, so left or right padding gives the same rotary angles
                positions = (mask.long().cumsum(dim=1) - 1).clamp(min=0)
            head_dim = self.config.hidden_size // self.config.num_heads
            context.cos, context.sin = (t.to(x.dtype) for t in rotary_tables(positions, head_dim, self.config.rope_theta))
        return context

    def latent_recursion(
        self, x: torch.Tensor, answer: torch.Tensor, latent: torch.Tensor, context: Context
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One cycle: n scratchpad updates from (x + answer + latent), then one answer update."""
        injected = x + answer  # fixed during the n updates; (x + answer) + latent is what `x + answer + latent` computes
        for _ in range(self.config.latent_steps):
            latent = self.net(injected + latent, context)
        answer = self.net(answer + latent, context)
        return answer, latent

    def forward(self, x: torch.Tensor, carry: Carry | None = None, mask: torch.Tensor | None = None) -> ReasonerOutput:
        """One supervision step: T cycles from `carry`, gradients as `config.grad_mode` says.

        Args:
            x: input latents (B, L, d).
            carry: the carry from the previous step, or None for a fresh one.
            mask: (B, L), 1 for real positions and 0 for padding.
        """
        B, L, d = x.shape
        if d != self.config.hidden_size:
            raise ValueError(f"Reasoner expects inputs of width hidden_size={self.config.hidden_size}, got shape {tuple(x.shape)}.")
        if mask is not None and mask.shape != (B, L):
            raise ValueError(f"`mask` must have shape (batch, length) = {(B, L)}, got {tuple(mask.shape)}.")
        if carry is None:
            carry = self.initial_carry(x)
        elif carry.answer.shape != x.shape or carry.latent.shape != x.shape:
            raise ValueError(
                f"The carry has shape {tuple(carry.answer.shape)} but the input has {tuple(x.shape)}: "
                "a carry can only continue the batch it came from (or pass carry=None to start fresh)."
            )
        context = self.make_context(x, mask)
        answer, latent = carry.answer, carry.latent
        T, mode = self.config.cycles, self.config.grad_mode

        if mode == "full":  # backprop through every cycle: memory grows with T
            for _ in range(T):
                answer, latent = self.latent_recursion(x, answer, latent, context)
        elif mode == "last_cycle":  # TRM: T-1 cycles without gradients, the last one with
            with torch.no_grad():
                for _ in range(T - 1):
                    answer, latent = self.latent_recursion(x, answer, latent, context)
            answer, latent = self.latent_recursion(x, answer, latent, context)
        else:  # "one_step", HRM's 1-step gradient: only the last latent and answer updates
            with torch.no_grad():
                for _ in range(T - 1):
                    answer, latent = self.latent_recursion(x, answer, latent, context)
                for _ in range(self.config.latent_steps - 1):
                    latent = self.net(x + answer + latent, context)
            latent = self.net(x + answer + latent, context)
            answer = self.net(answer + latent, context)

        summary = answer[:, 0] if self.config.halt_read == "first" else masked_mean(answer, mask)
        halt_logits = self.halt_head(summary).squeeze(-1)  # (B,)
        return ReasonerOutput(answer=answer, halt_logits=halt_logits, carry=Carry(answer.detach(), latent.detach()))


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real positions: (B, L, d), (B, L) -> (B, d)."""
    if mask is None:
        return h.mean(dim=1)
    weights = mask.to(h.dtype)[..., None]
    return (h * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
