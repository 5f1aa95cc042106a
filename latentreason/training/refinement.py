"""Training that makes more refinement steps safe: four switches of `TrainingConfig`, all off by default.

A reasoner trained for N_sup steps from one fixed start has only ever been asked to take the path from
that start; past N_sup, or a little off the path, nothing says its steps still lead to the answer. The
published routes to steps that stay safe (issue 21, DESIGN.md "Test-time compute"), each a switch:

    carry_init: random          every training sample starts from its own random carry, drawn per position
                                and channel (EqR, locuslab/EqR): the answer must be reached from anywhere
                                near, so it becomes an attractor of the recursion
    carry_noise: sigma          N(0, sigma^2) added to the carry (z_H and z_L) before every supervision step,
                                in training only: steps learn to correct drift (EqR adds its noise after every
                                net call, with a damped update; here it is once per step)
    random_supervision_steps    each batch trains for N ~ uniform{1..N_sup} steps instead of always N_sup
    improvement_supervision     step s of N is trained on a part of the answer that grows with s, all of it
                                at step N: every step must improve on the one before (Deep Improvement
                                Supervision, DIS, arXiv 2511.16886)

DIS, as its reference code builds the targets: a path of N + 1 frames from the input x0 to the answer;
the positions where they differ are put in a random order per example, and frame s holds the answer on
the first floor(s * n / N) of those n positions and x0 on the rest; step s is trained towards frame s.
Here the input is read by a frozen language model and has no value in the label space, so the frames
start from "nothing asked" (the absorbing state of discrete diffusion): frame s holds the answer on the
first floor(s * n / N) of the n labelled positions, in a random order per example, and leaves the other
positions out of that step's task loss. Step N is trained on the whole answer, as without the switch.
The halting head still learns "the prediction is the whole answer", so halting keeps its meaning.

Every draw comes from its own generator, seeded by (the run's seed, what is drawn, the batch or step,
the sample's index in the global batch), never from torch's global generator: a run with every switch
off is today's run bit for bit, a resumed run draws what the uninterrupted one drew, and 1 or N
processes draw the same numbers for the same sample.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import torch

from ..losses import IGNORE_INDEX
from ..reasoner import Carry

# What a generator draws (part of its seed): the carry (start and noise) per batch, the carry per persistent
# step, the number of supervision steps of a batch, and the order in which DIS reveals the answer.
CARRY, PERSISTENT_CARRY, STEPS, ORDER = "carry", "persistent_carry", "steps", "order"


def seed_for(seed: int, stream: str, *indices: int) -> int:
    """A 63-bit seed for one generator, a hash of (the run's seed, the stream, indices): streams never collide."""
    digest = hashlib.blake2b(repr((seed, stream, *indices)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, stream: str, *indices: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of (seed, stream, indices) on `device`.

    Example:
        >>> a = torch.rand(2, generator=generator(0, STEPS, 5))
        >>> torch.equal(a, torch.rand(2, generator=generator(0, STEPS, 5))), torch.equal(a, torch.rand(2, generator=generator(0, STEPS, 6)))
        (True, False)
    """
    return torch.Generator(device=device).manual_seed(seed_for(seed, stream, *indices))


# --- the number of supervision steps ---------------------------------------------------------------
def drawn_supervision_steps(seed: int, batch_index: int, supervision_steps: int) -> int:
    """`random_supervision_steps`: batch `batch_index`'s number of supervision steps, uniform in 1..N_sup.

    Example:
        >>> counts = [drawn_supervision_steps(0, index, 8) for index in range(100)]
        >>> min(counts) >= 1 and max(counts) <= 8 and len(set(counts)) > 1
        True
    """
    return int(torch.randint(1, supervision_steps + 1, (1,), generator=generator(seed, STEPS, batch_index)))


# --- the carry: a random start, noise before every step ---------------------------------------------
class SampleDraws:
    """One generator per sample, seeded by (seed, stream, key, the sample's row in the global batch).

    A sample's draws never depend on which process holds it or on the other samples, so 1 or N processes,
    or a resumed run, draw the same numbers for it.
    """

    def __init__(self, seed: int, stream: str, key: int, rows: Sequence[int], device: torch.device | str = "cpu") -> None:
        self.generators = [generator(seed, stream, key, row, device=device) for row in rows]
        self.device = device

    def normal(self, shape: tuple[int, ...], which: Sequence[int] | None = None) -> torch.Tensor:
        """N(0, 1) of `shape` for each sample (or the samples `which`): (samples, *shape)."""
        chosen = self._chosen(which)
        return torch.stack([torch.randn(shape, generator=g, device=self.device) for g in chosen]) if chosen else torch.empty(0, *shape)

    def truncated_normal(self, shape: tuple[int, ...], std: float, which: Sequence[int] | None = None) -> torch.Tensor:
        """N(0, std^2) truncated to [-2 std, 2 std], as the reasoner's own init vectors (and EqR's random starts)."""
        chosen = self._chosen(which)
        draw = [torch.nn.init.trunc_normal_(torch.empty(shape, device=self.device), std=std, a=-2 * std, b=2 * std, generator=g)
                for g in chosen]
        return torch.stack(draw) if draw else torch.empty(0, *shape)

    def uniform(self, shape: tuple[int, ...]) -> torch.Tensor:
        """U[0, 1) of `shape` for each sample: (samples, *shape)."""
        return torch.stack([torch.rand(shape, generator=g, device=self.device) for g in self.generators])

    def _chosen(self, which: Sequence[int] | None) -> list[torch.Generator]:
        return list(self.generators) if which is None else [self.generators[index] for index in which]


def uses_carry_switches(config: Any) -> bool:
    """True when the training carry is not the plain one (`carry_init: random` or `carry_noise` > 0)."""
    return config.carry_init == "random" or config.carry_noise > 0


def training_carry(model: Any, carry: Carry | None, fresh: torch.Tensor | None, shape: tuple[int, int, int],
                   draws: SampleDraws, config: Any) -> Carry | None:
    """The carry one training step starts from, with `carry_init` and `carry_noise` applied.

    Args:
        model: the `LatentReasonerModel` (its reasoner's init vectors are the `model` start).
        carry: the previous step's carry, or None when every sample starts now.
        fresh: (B,) bool, the samples that start now (their `carry` rows are replaced); None: all of them when
            `carry` is None, none otherwise.
        shape: the carry's shape (B, P + L + K, d) (`carry_shape`).
        draws: this step's generators, one per sample: a fresh sample draws its start (answer, then latent),
            then every sample draws its noise (answer, then latent).
        config: the `TrainingConfig`.

    With both switches off the carry is returned as given (the reasoner starts a None carry itself).
    """
    if not uses_carry_switches(config):
        return carry
    device, dtype = draws.device, model.answer_dtype
    if carry is None:
        carry = model.reasoner.initial_carry(torch.zeros(shape, dtype=dtype, device=device))
        fresh = torch.ones(shape[0], dtype=torch.bool, device=device)
    if config.carry_init == "random" and fresh is not None:
        rows = fresh.nonzero().flatten().tolist()
        if rows:
            starts = [draws.truncated_normal(shape[1:], config.carry_init_std, which=[row]) for row in rows for _ in range(2)]
            index = torch.tensor(rows, device=device)
            answer, latent = carry.answer.clone(), carry.latent.clone()
            answer[index] = torch.cat(starts[0::2]).to(dtype)
            latent[index] = torch.cat(starts[1::2]).to(dtype)
            carry = Carry(answer, latent)
    if config.carry_noise > 0:
        noise = [draws.normal(shape[1:], which=[row]) for row in range(shape[0]) for _ in range(2)]
        carry = Carry(carry.answer + config.carry_noise * torch.cat(noise[0::2]).to(dtype),
                      carry.latent + config.carry_noise * torch.cat(noise[1::2]).to(dtype))
    return carry


def carry_shape(model: Any, batch_size: int, num_inputs: int) -> tuple[int, int, int]:
    """The carry's shape for `batch_size` inputs of `num_inputs` tokens: (B, P + L + K, d), slots included."""
    config = model.config
    return batch_size, config.prefix_slots + num_inputs + config.answer_slots, config.hidden_size


# --- Deep Improvement Supervision ------------------------------------------------------------------
def improvement_order(draws: SampleDraws, labels: torch.Tensor) -> torch.Tensor:
    """(B, L) the rank at which DIS reveals each position of each sample's answer (0 first; unlabelled positions last)."""
    scores = draws.uniform(tuple(labels.shape[1:])).to(labels.device)
    scores = scores.masked_fill(labels == IGNORE_INDEX, float("inf"))
    return scores.argsort(dim=1).argsort(dim=1)


def improvement_targets(labels: torch.Tensor, order: torch.Tensor, step: int, steps: int) -> torch.Tensor:
    """Step `step` of `steps`' targets: the answer at the first floor(step * n / steps) of each sample's n labelled
    positions in `order`, the ignore index elsewhere.

    Example:
        >>> labels = torch.tensor([[3, 1, -100, 4, 1]])                   # n = 4 labelled positions
        >>> order = torch.tensor([[2, 0, 4, 3, 1]])                        # revealed: position 1, then 4, 0, 3
        >>> improvement_targets(labels, order, 1, 2).tolist(), improvement_targets(labels, order, 2, 2).tolist()
        ([[-100, 1, -100, -100, 1]], [[3, 1, -100, 4, 1]])
    """
    if labels.dim() != 2:
        raise ValueError(f"Deep Improvement Supervision needs per-position labels (batch, length), got shape {tuple(labels.shape)}.")
    revealed = (labels != IGNORE_INDEX).sum(dim=1) * step // steps  # (B,)
    return labels.masked_fill(order >= revealed[:, None], IGNORE_INDEX)


# --- a curriculum over length ------------------------------------------------------------------------
def curriculum_targets(labels: torch.Tensor, progress: float, fraction: float) -> torch.Tensor:
    """`length_curriculum`: the targets at `progress` (0 to 1, the share of the run's optimizer steps done) when the
    supervised horizon grows over the first `fraction` of the run: each sample's first ceil(L x progress / fraction)
    labelled positions (L: the batch's padded length, at least one position), the ignore index after them; the whole
    answer from `progress` >= `fraction` on.

    Example:
        >>> labels = torch.tensor([[-100, 3, 1, 4, 1], [-100, 2, 7, -100, -100]])
        >>> curriculum_targets(labels, 0.25, 0.5).tolist()               # horizon ceil(5 x 0.5) = 3 labelled positions
        [[-100, 3, 1, 4, -100], [-100, 2, 7, -100, -100]]
        >>> torch.equal(curriculum_targets(labels, 0.5, 0.5), labels)
        True
    """
    if labels.dim() != 2:
        raise ValueError(f"A curriculum over length needs per-position labels (batch, length), got shape {tuple(labels.shape)}.")
    if progress >= fraction:
        return labels
    horizon = max(1, math.ceil(labels.shape[1] * progress / fraction))
    rank = (labels != IGNORE_INDEX).long().cumsum(dim=1)  # 1 at the first labelled position
    return labels.masked_fill(rank > horizon, IGNORE_INDEX)
