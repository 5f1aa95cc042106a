"""The recursion equals a plain reference loop written here, for every mixer and all three gradient modes.

The reference rebuilds the net from the raw weights (explicit softmax attention with rotary
positions written as pair rotations; the sequence MLP as explicit zero padding to `max_length`; the
convolution as a sum over neighbours),
runs TRM's loop in its most literal form, and stops gradients with `.detach()` where the library
uses `torch.no_grad()`. Outputs, halting logits, carries and gradients must agree.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import reasoner_config

from latentreason.reasoner import Carry, Reasoner, masked_mean

# --- the reference, from raw weights ---------------------------------------------------------------


def rms_norm(h: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    normed = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return normed if weight is None else normed * weight


def swiglu(h: torch.Tensor, gate_up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    inner = down.shape[1]
    projected = h @ gate_up.T
    return (F.silu(projected[..., :inner]) * projected[..., inner:]) @ down.T


def rotate_pairs(h: torch.Tensor, positions: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate each pair (i, i + head_dim/2) by angle position * theta^(-2i/head_dim)."""
    half = h.shape[-1] // 2
    frequencies = theta ** (-torch.arange(half, dtype=torch.float32) * 2 / h.shape[-1])
    angle = positions[:, None, :, None].float() * frequencies  # (B, 1, L, half)
    first, second = h[..., :half], h[..., half:]
    return torch.cat([first * angle.cos() - second * angle.sin(), second * angle.cos() + first * angle.sin()], dim=-1)


def attention(block, h: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    B, L, d = h.shape
    heads, head_dim = config.num_heads, d // config.num_heads
    q, k, v = (h @ block.mix.qkv.weight.T).split(d, dim=-1)
    q, k, v = (t.reshape(B, L, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # real tokens only
    q, k = rotate_pairs(q, positions, config.rope_theta), rotate_pairs(k, positions, config.rope_theta)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(head_dim)
    scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
    mixed = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, L, d)
    return mixed @ block.mix.out.weight.T


def sequence_mlp(block, h: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    B, L, d = h.shape
    full = torch.zeros(B, block.mix.max_length, d, dtype=h.dtype)
    full[:, :L] = h * mask[..., None]
    mixed = swiglu(full.transpose(1, 2), block.mix.mlp.gate_up.weight, block.mix.mlp.down.weight)  # (B, d, max_length)
    return mixed.transpose(1, 2)[:, :L]


def local_conv(block, h: torch.Tensor, mask: torch.Tensor, config) -> torch.Tensor:
    """The conv mixer as a sum over offsets: position i gets W[:, :, r + o] @ h[i + o] for |o| <= r, zero outside."""
    weight, radius = block.mix.conv.weight, config.conv_kernel // 2  # (d_out, d_in, kernel)
    h = h * mask[..., None]
    out = torch.zeros_like(h)
    for offset in range(-radius, radius + 1):
        for i in range(h.shape[1]):
            if 0 <= i + offset < h.shape[1]:
                out[:, i] += h[:, i + offset] @ weight[:, :, radius + offset].T
    return out


def sequence_rms_norm(h: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """TRM's norm after the mlp mixer, sample by sample: each channel over the real positions; padding stays 0."""
    rows = []
    for sample, real in zip(h, mask.bool()):
        channels = sample[real].T  # (d, real positions)
        normed = (channels * torch.rsqrt(channels.pow(2).mean(-1, keepdim=True) + eps)).T * (1.0 if weight is None else weight)
        rows.append(torch.zeros_like(sample).index_put((real.nonzero()[:, 0],), normed))
    return torch.stack(rows)


def reference_net(reasoner: Reasoner, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    config = reasoner.config
    mix = {"attention": attention, "mlp": sequence_mlp, "conv": local_conv}[config.mixer]
    for block in reasoner.net.blocks:
        if config.mixer == "mlp" and config.mlp_norm == "sequence":
            h = sequence_rms_norm(h + mix(block, h, mask, config), mask, block.mix_norm.weight, config.norm_eps)
        else:
            h = rms_norm(h + mix(block, h, mask, config), block.mix_norm.weight, config.norm_eps)
        h = rms_norm(h + swiglu(h, block.mlp.gate_up.weight, block.mlp.down.weight), block.mlp_norm.weight, config.norm_eps)
    return h


def reference_step(reasoner: Reasoner, x, answer, latent, mask):
    """One supervision step, TRM's loop written out; gradients cut with detach() as the grad mode says."""
    config = reasoner.config
    n, T = config.latent_steps, config.cycles
    for cycle in range(T):
        last_cycle = cycle == T - 1
        if last_cycle and config.grad_mode == "last_cycle":
            answer, latent = answer.detach(), latent.detach()
        for step in range(n):
            if last_cycle and step == n - 1 and config.grad_mode == "one_step":
                answer, latent = answer.detach(), latent.detach()
            latent = reference_net(reasoner, x + answer + latent, mask)
        answer = reference_net(reasoner, answer + latent, mask)
    weights = mask[..., None].to(answer.dtype)
    pooled = answer[:, 0] if config.halt_read == "first" else (answer * weights).sum(1) / weights.sum(1)
    halt = pooled @ reasoner.halt_head.weight[0] + reasoner.halt_head.bias[0]
    return answer, latent, halt


# --- the tests ------------------------------------------------------------------------------------

MODES = ["last_cycle", "one_step", "full"]
# "_unscaled": norms without a learnable scale (norm_scale=False, TRM's reference network exactly).
MIXERS = ["attention", "mlp", "mlp_channel_norm", "attention_unscaled", "mlp_unscaled", "conv"]


def make_reasoner(mixer: str, grad_mode: str, **changes) -> Reasoner:
    torch.manual_seed(0)
    if mixer == "mlp_channel_norm":  # the mlp mixer with its first norm over channels (latentreason's older network)
        mixer, changes = "mlp", {"mlp_norm": "channel", **changes}
    if mixer.endswith("_unscaled"):
        mixer, changes = mixer.removesuffix("_unscaled"), {"norm_scale": False, **changes}
    config = reasoner_config(mixer=mixer, grad_mode=grad_mode, max_length=8, **changes)
    reasoner = Reasoner(config)
    # Give the halting head weights, so the test sees whether it reads the right pooled answer.
    torch.nn.init.normal_(reasoner.halt_head.weight, std=0.5)
    return reasoner


def inputs(batch: int = 3, length: int = 6):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, length, 32, generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[1, 4:] = 0  # one right-padded row
    return x, mask


def grads_of(reasoner: Reasoner, x: torch.Tensor, answer: torch.Tensor, halt: torch.Tensor, weights: torch.Tensor):
    loss = (answer * weights).sum() + (halt * torch.arange(1.0, halt.shape[0] + 1)).sum()
    parameters = [p for p in reasoner.parameters() if p.requires_grad]
    return torch.autograd.grad(loss, [x, *parameters], allow_unused=True)


@pytest.fixture(params=["fused", "torch"])
def cpu_ops(request):
    """Both paths of the norm and the SwiGLU gate: latentreason's hand-written backwards (forced on at any
    size) and torch's autograd of the same ops."""
    from latentreason.kernels import cpu_kernels

    with cpu_kernels(True, min_elements=0) if request.param == "fused" else cpu_kernels(False):
        yield request.param


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("grad_mode", MODES)
def test_recursion_matches_reference_loop(mixer: str, grad_mode: str, cpu_ops: str) -> None:
    reasoner = make_reasoner(mixer, grad_mode).double()  # float64, as in the gradient test below
    x, mask = inputs()
    x = x.double()
    real = mask.bool()
    carry = reasoner.initial_carry(x)
    reference_answer, reference_latent = carry.answer, carry.latent
    for _ in range(3):  # three supervision steps, chained through the carry
        out = reasoner(x, carry, mask)
        reference_answer, reference_latent, reference_halt = reference_step(reasoner, x, reference_answer, reference_latent, mask)
        torch.testing.assert_close(out.answer[real], reference_answer[real], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out.halt_logits, reference_halt, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out.carry.latent[real], reference_latent[real], rtol=1e-9, atol=1e-10)
        assert not out.carry.answer.requires_grad and not out.carry.latent.requires_grad
        carry = out.carry
        reference_answer, reference_latent = reference_answer.detach(), reference_latent.detach()


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("grad_mode", MODES)
def test_gradients_match_reference_loop(mixer: str, grad_mode: str, cpu_ops: str) -> None:
    # float64: the library's hand-written backward (RMSNorm) and the reference's autograd then agree to
    # rounding, so a tight tolerance can catch a real error rather than float32 noise through the recursion.
    reasoner = make_reasoner(mixer, grad_mode).double()
    x, mask = inputs()
    x = x.double().requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * mask[..., None]
    start = reasoner(x.detach(), None, mask).carry  # a non-trivial carry from a previous step

    out = reasoner(x, start, mask)
    got = grads_of(reasoner, x, out.answer, out.halt_logits, weights)
    answer, _, halt = reference_step(reasoner, x, start.answer, start.latent, mask)
    expected = grads_of(reasoner, x, answer, halt, weights)
    for got_grad, expected_grad in zip(got, expected):
        assert (got_grad is None) == (expected_grad is None)
        if got_grad is not None:
            torch.testing.assert_close(got_grad, expected_grad, rtol=1e-9, atol=1e-10)


def test_grad_modes_differ_in_their_gradients() -> None:
    """Same weights, same outputs, different gradients: the modes really cut the graph in different places."""
    x, mask = inputs()
    x.requires_grad_(True)
    weights = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    grads, answers = {}, {}
    for mode in MODES:
        reasoner = make_reasoner("attention", mode)
        out = reasoner(x, None, mask)
        answers[mode] = out.answer.detach()
        grads[mode] = grads_of(reasoner, x, out.answer, out.halt_logits, weights)[1]  # first net weight
    torch.testing.assert_close(answers["last_cycle"], answers["full"])
    torch.testing.assert_close(answers["one_step"], answers["full"])
    assert not torch.allclose(grads["last_cycle"], grads["full"])
    assert not torch.allclose(grads["one_step"], grads["last_cycle"])


@pytest.mark.parametrize("mixer", MIXERS)
def test_padding_does_not_change_real_positions(mixer: str) -> None:
    reasoner = make_reasoner(mixer, "last_cycle")
    x, _ = inputs(batch=3, length=7)
    alone = reasoner(x[1:2, :4], None, None)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 4:] = 0
    padded_x = x.clone()
    padded_x[1, 4:] = 100.0  # garbage in the padding must not leak into real positions
    padded = reasoner(padded_x, None, mask)
    torch.testing.assert_close(padded.answer[1, :4], alone.answer[0])
    torch.testing.assert_close(padded.halt_logits[1], alone.halt_logits[0])
    torch.testing.assert_close(padded.carry.latent[1, :4], alone.carry.latent[0])


def test_left_padding_equals_right_padding() -> None:
    """Rotary positions count real tokens only, so where the padding sits does not matter (attention mixer).

    The last position plays an answer slot: appended after the padding, it must still sit right
    after the real tokens, as it does with no padding at all.
    """
    reasoner = make_reasoner("attention", "last_cycle")
    x, _ = inputs(batch=1, length=5)  # 4 tokens and a slot
    tokens, slot = x[:, :4], x[:, 4:]
    pad = torch.full((1, 2, 32), 7.0)
    alone = reasoner(x)
    right = reasoner(torch.cat([tokens, pad, slot], 1), None, torch.tensor([[1, 1, 1, 1, 0, 0, 1]]))
    left = reasoner(torch.cat([pad, tokens, slot], 1), None, torch.tensor([[0, 0, 1, 1, 1, 1, 1]]))
    torch.testing.assert_close(right.answer[:, [0, 1, 2, 3, 6]], alone.answer)
    torch.testing.assert_close(left.answer[:, 2:], alone.answer)
    torch.testing.assert_close(right.halt_logits, alone.halt_logits)
    torch.testing.assert_close(left.halt_logits, alone.halt_logits)


def test_positions_matter_for_attention() -> None:
    """The attention mixer is not permutation-invariant: rotary positions are really applied."""
    reasoner = make_reasoner("attention", "last_cycle")
    x, _ = inputs(batch=1, length=5)
    out = reasoner(x).answer
    flipped = reasoner(x.flip(1)).answer.flip(1)
    assert not torch.allclose(out, flipped, atol=1e-4)


def test_initial_carry_and_reset() -> None:
    reasoner = make_reasoner("attention", "last_cycle")
    x, mask = inputs()
    carry = reasoner.initial_carry(x)
    assert torch.equal(carry.answer, reasoner.answer_init.expand_as(x))
    assert torch.equal(carry.latent, reasoner.latent_init.expand_as(x))
    assert not torch.equal(reasoner.answer_init, reasoner.latent_init)
    stepped = reasoner(x, carry, mask).carry
    reset = reasoner.reset_carry(stepped, torch.tensor([False, True, False]))
    assert torch.equal(reset.answer[1], carry.answer[1]) and torch.equal(reset.latent[1], carry.latent[1])
    for row in (0, 2):
        assert torch.equal(reset.answer[row], stepped.answer[row]) and torch.equal(reset.latent[row], stepped.latent[row])
    assert isinstance(reset[0:2], Carry) and reset[0:2].answer.shape == (2, 6, 32)


def test_fixed_carry_init_is_a_buffer() -> None:
    fixed = make_reasoner("attention", "last_cycle")
    assert "answer_init" in dict(fixed.named_buffers()) and "answer_init" not in dict(fixed.named_parameters())


@pytest.mark.parametrize(("grad_mode", "changes"), [("full", {}), ("last_cycle", {"cycles": 1}), ("one_step", {"cycles": 1, "latent_steps": 1})])
def test_learned_carry_init_receives_gradients(grad_mode: str, changes: dict) -> None:
    """Wherever the config allows a learned initial carry, the first step's loss reaches it."""
    learned = make_reasoner("attention", grad_mode, carry_init="learned", **changes)
    assert "answer_init" in dict(learned.named_parameters()) and "latent_init" in dict(learned.named_parameters())
    x, mask = inputs()
    out = learned(x, None, mask)
    (out.answer.sum() + out.halt_logits.sum()).backward()
    assert learned.answer_init.grad is not None and learned.answer_init.grad.abs().sum() > 0
    assert learned.latent_init.grad is not None and learned.latent_init.grad.abs().sum() > 0


def test_halting_head_starts_at_keep_going() -> None:
    reasoner = Reasoner(reasoner_config())
    x, mask = inputs()
    halt = reasoner(x, None, mask).halt_logits
    torch.testing.assert_close(halt, torch.full((3,), -5.0))


def test_masked_mean_ignores_padding() -> None:
    h = torch.tensor([[[1.0], [3.0], [100.0]]])
    torch.testing.assert_close(masked_mean(h, torch.tensor([[1, 1, 0]])), torch.tensor([[2.0]]))
    torch.testing.assert_close(masked_mean(h, None), torch.tensor([[104.0 / 3]]))


@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_rms_norm_backward_matches_autograd(needs: tuple[bool, bool]) -> None:
    """The hand-written RMSNorm backward: torch's gradcheck (float64), and the same gradients as autograd."""
    from latentreason.kernels import _RMSNormFunction
    from latentreason.reasoner import RMSNorm

    torch.manual_seed(0)
    h64 = torch.randn(3, 5, 8, dtype=torch.float64, requires_grad=True)
    w64 = torch.rand(8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda h, w: _RMSNormFunction.apply(h, w, 1e-5), (h64, w64))

    norm = RMSNorm(64, 1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    norm.weight.requires_grad_(needs[1])
    h = torch.randn(4, 128, 64, requires_grad=needs[0])  # above the kernels' min_elements: large enough for the fused path
    y = norm(h)
    assert y.grad_fn is not None and "RMSNormFunction" in type(y.grad_fn).__name__  # the fused path ran
    expected = rms_norm(h, norm.weight, 1e-5)
    torch.testing.assert_close(y, expected)
    upstream = torch.randn_like(y)
    inputs = [t for t, need in zip((h, norm.weight), needs) if need]
    torch.testing.assert_close(torch.autograd.grad(y, inputs, upstream), torch.autograd.grad(expected, inputs, upstream))
    with torch.no_grad():  # the same values, to the bit, without gradients
        assert torch.equal(norm(h), y.detach())


def test_gated_silu_backward_matches_autograd() -> None:
    """The hand-written SwiGLU gating: torch's gradcheck (float64), and autograd's values and gradients in float32."""
    from latentreason.kernels import _GatedSiLUFunction, gated_silu

    torch.manual_seed(0)
    assert torch.autograd.gradcheck(_GatedSiLUFunction.apply, (torch.randn(3, 4, 10, dtype=torch.float64, requires_grad=True),))
    gate_up = torch.randn(4, 64, 128, requires_grad=True)  # above the kernels' min_elements: large enough for the fused path
    y = gated_silu(gate_up)
    assert "GatedSiLUFunction" in type(y.grad_fn).__name__  # the fused path ran
    expected = F.silu(gate_up[..., :64]) * gate_up[..., 64:]
    small = torch.randn(3, 4, 10, requires_grad=True)  # below the threshold: torch's ops, the same values
    assert "GatedSiLUFunction" not in type(gated_silu(small).grad_fn).__name__
    torch.testing.assert_close(gated_silu(small), F.silu(small[..., :5]) * small[..., 5:])
    assert torch.equal(y, expected)  # the forward runs the plain path's two ops: the same bits
    upstream = torch.randn_like(y)
    torch.testing.assert_close(torch.autograd.grad(y, gate_up, upstream)[0], torch.autograd.grad(expected, gate_up, upstream)[0])
    with torch.no_grad():  # the same values, to the bit, without gradients
        assert torch.equal(gated_silu(gate_up), y.detach())


def test_halting_can_read_the_first_position() -> None:
    """`halt_read="first"` (TRM's reference, what convert-trm sets) reads z_H[:, 0], not the mean."""
    reasoner = make_reasoner("attention", "last_cycle", halt_read="first").double()
    x, mask = inputs()
    x = x.double()
    out = reasoner(x, None, mask)
    carry = reasoner.initial_carry(x)
    _, _, reference_halt = reference_step(reasoner, x, carry.answer, carry.latent, mask)
    torch.testing.assert_close(out.halt_logits, reference_halt, rtol=1e-9, atol=1e-10)
    mean_read = reasoner.halt_head(masked_mean(out.answer, mask)).squeeze(-1)
    assert not torch.allclose(out.halt_logits, mean_read)


def test_mlp_mixer_normalises_each_channel_over_the_positions() -> None:
    """The default mlp mixer is TRM's: after token mixing, every channel has unit RMS over the sequence."""
    reasoner = make_reasoner("mlp", "last_cycle")
    assert reasoner.config.mlp_norm == "sequence"
    block = reasoner.net.blocks[0]
    h = torch.randn(2, 6, 32, generator=torch.Generator().manual_seed(3)) * 3
    context = reasoner.make_context(h, None)
    normed = block.mix_norm(h + block.mix(h, context), context.padding)
    torch.testing.assert_close(normed.pow(2).mean(1), torch.ones(2, 32), rtol=1e-4, atol=1e-4)
    assert not torch.allclose(normed.pow(2).mean(2), torch.ones(2, 6), rtol=1e-2, atol=1e-2)
    channel = make_reasoner("mlp_channel_norm", "last_cycle").net.blocks[0]
    per_position = channel.mix_norm(h + channel.mix(h, context))
    torch.testing.assert_close(per_position.pow(2).mean(2), torch.ones(2, 6), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel", [3, 5])
def test_conv_mixer_sees_exactly_its_window_per_net_call(kernel: int) -> None:
    """One supervision step reaches T x (n + 1) x layers x (kernel // 2) positions: no further, and that far."""
    reasoner = make_reasoner("conv", "last_cycle", conv_kernel=kernel)
    config = reasoner.config
    reach = config.cycles * (config.latent_steps + 1) * config.num_layers * (kernel // 2)
    length = 2 * reach + 5
    x = torch.randn(1, length, 32, generator=torch.Generator().manual_seed(4))
    changed = x.clone()
    changed[0, 2] += 1.0  # one input position
    moved = (reasoner(changed, None, None).answer - reasoner(x, None, None).answer).abs().amax(-1)[0]
    assert moved[: 2 + reach + 1].min() > 0  # every position within reach sees the change
    assert torch.all(moved[2 + reach + 1 :] == 0)  # none beyond it


def test_conv_mixer_runs_past_any_length_and_rejects_an_even_window() -> None:
    reasoner = make_reasoner("conv", "last_cycle")
    out = reasoner(torch.randn(2, 300, 32), None, None)  # no max_length: the same weights at every position
    assert out.answer.shape == (2, 300, 32)
    with pytest.raises(ValueError, match="conv_kernel` must be an odd number"):
        reasoner_config(mixer="conv", conv_kernel=4)
