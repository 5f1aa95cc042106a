"""Test-time depth and breadth: `refine(steps=K)` past N_sup, and perturbed trajectories with halt or vote selection."""

from __future__ import annotations

import collections

import pytest
import torch

from latentreason import LatentReasonerModel, ReasonerConfig
from latentreason import trajectories as trajectories_lib


@pytest.fixture(scope="module")
def model() -> LatentReasonerModel:
    torch.manual_seed(0)
    config = ReasonerConfig(input="token_embeddings", vocab_size=7, hidden_size=16, num_heads=2, latent_steps=2, cycles=2,
                            max_supervision_steps=3, num_labels=3)
    built = LatentReasonerModel.from_config(config).eval()
    with torch.no_grad():  # a halting head that says something, so confidences differ between trajectories
        built.reasoner.halt_head.weight.normal_(0.0, 1.0)
        built.reasoner.halt_head.bias.zero_()
    return built


IDS = torch.randint(0, 7, (5, 6), generator=torch.Generator().manual_seed(3))


def test_trajectories_without_noise_equal_one_trajectory(model: LatentReasonerModel) -> None:
    one = model.refine(IDS, steps=4, halt=True)
    many = model.refine(IDS, steps=4, halt=True, trajectories=4, noise=0.0, select="vote")
    assert torch.equal(one.logits, many.logits) and torch.equal(one.halted_at, many.halted_at)
    assert all(torch.equal(a, b) for a, b in zip(one.step_logits, many.step_logits))


def _all_trajectories(model: LatentReasonerModel, trajectories: int, noise: float, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Final logits and halting logits of every trajectory, by a loop written here (no halting)."""
    features = model.encode(IDS).repeat_interleave(trajectories, dim=0)
    generator, carry = torch.Generator().manual_seed(0), None
    with torch.no_grad():
        for _ in range(steps):
            out = model(features=features, carry=carry)
            carry = trajectories_lib.perturb(out.carry, trajectories, noise, generator)
    return out.logits.view(IDS.shape[0], trajectories, *out.logits.shape[1:]), out.halt_logits.view(IDS.shape[0], trajectories)


def _kept(logits: torch.Tensor, halts: torch.Tensor, example: int, select: str) -> int:
    """The trajectory a selection written here keeps: the most confident, or the most frequent answer (ties: most confident)."""
    trajectories = logits.shape[1]
    answers = [tuple(logits[example, t].argmax(-1).tolist()) for t in range(trajectories)]
    candidates = range(trajectories)
    if select == "vote":
        counts = collections.Counter(answers)
        candidates = [t for t in candidates if counts[answers[t]] == max(counts.values())]
    return max(candidates, key=lambda t: halts[example, t].item())


@pytest.mark.parametrize("select", ["halt", "vote"])
def test_the_kept_trajectory_is_the_one_a_plain_loop_picks(model: LatentReasonerModel, select: str) -> None:
    M, steps = 6, 4
    logits, halts = _all_trajectories(model, M, 0.7, steps)
    out = model.refine(IDS, steps=steps, trajectories=M, noise=0.7, select=select, seed=0)
    for example in range(IDS.shape[0]):
        expected = _kept(logits, halts, example, select)
        assert out.trajectory[example].item() == expected
        assert torch.equal(out.logits[example], logits[example, expected])
    assert len(set(map(tuple, logits.argmax(-1).flatten(0, 1).tolist()))) > IDS.shape[0]  # the noise made trajectories differ


def test_depth_far_past_n_sup_keeps_nothing_for_backward_and_one_logits_tensor(model: LatentReasonerModel) -> None:
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        long = model.refine(IDS, steps=64, every_step=False)  # 21x the trained N_sup of 3
    assert saved == [] and len(long.step_logits) == 1 and long.logits.grad_fn is None
    every = model.refine(IDS, steps=64)
    assert len(every.step_logits) == 64 and torch.equal(every.step_logits[-1], long.logits)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": 0}, "`steps` must be a whole number >= 1"),
    ({"trajectories": 0}, "`trajectories` must be a whole number >= 1"),
    ({"noise": -0.1}, "`noise` must be >= 0"),
    ({"noise": float("nan")}, "`noise` must be >= 0"),
    ({"select": "best"}, "`select` must be one of"),
])
def test_bad_values_name_the_fix(model: LatentReasonerModel, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model.refine(IDS, **kwargs)


def _evaluate(model: LatentReasonerModel, labels: torch.Tensor, **kwargs) -> dict:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from latentreason.data import collate
    from latentreason.training import evaluate

    rows = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": label, "cell_positions": torch.arange(6)}
            for ids, label in zip(IDS, labels)]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=2, collate_fn=lambda batch: collate(batch, pad_token_id=0)))
    return evaluate(model, loader, accelerator, 4, halt=True, **kwargs)


LABELS = torch.randint(0, 3, IDS.shape, generator=torch.Generator().manual_seed(4))


def test_evaluate_with_trajectories_without_noise_equals_the_plain_evaluation(model: LatentReasonerModel) -> None:
    plain = _evaluate(model, LABELS)
    many = _evaluate(model, LABELS, trajectories=4, noise=0.0, select="vote")
    for key in ("per_step", "halting_curve", "all_steps", "accuracy", "exact_match"):
        assert many[key] == plain[key], key
    assert many["trajectories"] == {"count": 4, "noise": 0.0, "select": "vote", "seed": 0}


@pytest.mark.parametrize("select", ["halt", "vote"])
def test_evaluate_scores_the_trajectory_a_plain_loop_keeps(model: LatentReasonerModel, select: str) -> None:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from latentreason.data import collate
    from latentreason.training import evaluate

    M = 6
    logits, halts = _all_trajectories(model, M, 0.7, 4)
    labels = torch.stack([logits[example, _kept(logits, halts, example, select)].argmax(-1) for example in range(IDS.shape[0])])
    labels[::2, 0] = (labels[::2, 0] + 1) % 3  # every other example: the kept answer is wrong in one cell
    # One batch of all examples draws the noise in the same order as the loop above.
    rows = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": label, "cell_positions": torch.arange(6)}
            for ids, label in zip(IDS, labels)]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=len(rows), collate_fn=lambda batch: collate(batch, pad_token_id=0)))
    results = evaluate(model, loader, accelerator, 4, halt=False, trajectories=M, noise=0.7, select=select)
    assert results["per_step"][-1]["exact_match"] == len(range(1, IDS.shape[0], 2)) / IDS.shape[0]
    assert results["trajectories"]["count"] == M
