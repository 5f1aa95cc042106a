"""Memory of a training step: what autograd keeps for backward, counted with `saved_tensors_hooks`.

Under `last_cycle` (TRM) only the last cycle is recorded, so the bytes saved do not grow with the
number of cycles T, and the detached carry keeps supervision steps from piling up. Under `full`
(true backpropagation through time) they grow linearly with T; `one_step` keeps even less than
`last_cycle`.
"""

from __future__ import annotations

import pytest
import torch
from conftest import padded_batch, reasoner_config, shared_backbone, token_labels

from latentreason import LatentReasonerModel, attach_reasoner
from latentreason.reasoner import Carry


class SavedBytes:
    """Bytes of the distinct storages autograd saves for backward inside the block."""

    def __init__(self) -> None:
        self.storages: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    @property
    def total(self) -> int:
        return sum(self.storages.values())


def model_for(grad_mode: str, cycles: int) -> LatentReasonerModel:
    torch.manual_seed(0)
    return attach_reasoner(shared_backbone("llama"), reasoner_config(grad_mode=grad_mode, cycles=cycles))


def training_step_bytes(model: LatentReasonerModel, carry: Carry | None = None) -> tuple[int, Carry]:
    """Forward + loss of one supervision step under the hooks; then backward (outside them)."""
    batch = padded_batch(batch=3, length=10)
    counter = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda tensor: tensor):
        output = model(**batch, labels=token_labels(batch), carry=carry)
    output.loss.backward()
    model.zero_grad(set_to_none=True)
    assert counter.total > 0
    return counter.total, output.carry


def test_last_cycle_memory_does_not_grow_with_cycles() -> None:
    one, _ = training_step_bytes(model_for("last_cycle", cycles=1))
    sixteen, _ = training_step_bytes(model_for("last_cycle", cycles=16))
    assert sixteen <= 1.05 * one, f"T=16 saved {sixteen} bytes, T=1 saved {one}"


def test_supervision_steps_do_not_accumulate() -> None:
    model = model_for("last_cycle", cycles=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    carry, per_step = None, []
    for _ in range(3):
        saved, carry = training_step_bytes(model, carry)
        optimizer.step()
        per_step.append(saved)
        assert not carry.answer.requires_grad and carry.answer.grad_fn is None
    assert all(saved == per_step[0] for saved in per_step), per_step


def test_full_backprop_memory_grows_linearly_with_cycles() -> None:
    saved = {cycles: training_step_bytes(model_for("full", cycles=cycles))[0] for cycles in (1, 2, 4)}
    assert saved[4] > 3 * saved[1], saved
    per_cycle = saved[2] - saved[1]
    assert per_cycle > 0
    assert saved[4] - saved[1] == pytest.approx(3 * per_cycle, rel=0.1), saved


def test_last_cycle_equals_full_at_one_cycle() -> None:
    """With T=1 there is nothing to cut: both modes record the same graph."""
    assert training_step_bytes(model_for("last_cycle", cycles=1))[0] == training_step_bytes(model_for("full", cycles=1))[0]


def test_one_step_saves_less_than_last_cycle() -> None:
    one_step, _ = training_step_bytes(model_for("one_step", cycles=2))
    last_cycle, _ = training_step_bytes(model_for("last_cycle", cycles=2))
    assert one_step < last_cycle, (one_step, last_cycle)
