"""The training switches of training/refinement.py: carry start and noise, random N_sup, DIS, a curriculum over length.

Each run is a tiny reasoner on learned token embeddings (no backbone) trained for a few optimizer steps;
a wrapper on `model.forward` records the carry and targets of every call, and the tests recompute what
they must be from the same generators, in loops written here.
"""

from __future__ import annotations

import functools
import math
import os

import pytest
import torch

from latentreason import LatentReasonerModel, ReasonerConfig
from latentreason.data import collate
from latentreason.heads.classification import TokenClassificationHead
from latentreason.losses import IGNORE_INDEX, cross_entropy, supervision_loss
from latentreason.recipe import RecipeError, load_recipe
from latentreason.training import Trainer, TrainingConfig, latest_checkpoint, train
from latentreason.training.refinement import (
    CARRY,
    ORDER,
    PERSISTENT_CARRY,
    curriculum_targets,
    drawn_supervision_steps,
    generator,
    improvement_targets,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_SUP = 4
SEED = 3


def tiny_model(**changes: object) -> LatentReasonerModel:
    torch.manual_seed(0)
    values = dict(input="token_embeddings", vocab_size=11, hidden_size=16, num_heads=2, latent_steps=1, cycles=2,
                  max_supervision_steps=N_SUP, num_labels=5, **changes)
    return LatentReasonerModel.from_config(ReasonerConfig(**values))


def examples(count: int = 16, length: int = 6) -> list[dict[str, torch.Tensor]]:
    """Reverse a list of tokens mod 5; every other example one token shorter (padding, an unlabelled position)."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for index in range(count):
        size = length - index % 2
        ids = torch.randint(3, 11, (size,), generator=g)
        rows.append({"input_ids": ids, "attention_mask": torch.ones(size, dtype=torch.long), "labels": ids.flip(0) % 5})
    return rows


COLLATE = functools.partial(collate, pad_token_id=0)


def config(output_dir: str, **changes: object) -> TrainingConfig:
    values = {**dict(output_dir=output_dir, seed=SEED, batch_size=8, epochs=1, checkpoint_every=None, report_to="none",
                     progress_bar=False, halting=False, log_every=1000), **changes}
    return TrainingConfig(**values)


def record(model: LatentReasonerModel) -> list[dict[str, object]]:
    """Wrap `model.forward`: every call appends what it was given and what it returned."""
    calls: list[dict[str, object]] = []
    original = model.forward

    def forward(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append({"training": model.training, "carry": kwargs.get("carry"), "out": out.carry,
                      "labels": kwargs.get("labels"), "task_labels": kwargs.get("task_labels")})
        return out

    model.forward = forward
    return calls


def init_vectors(model: LatentReasonerModel, rows: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (model.reasoner.answer_init.expand(rows, length, -1), model.reasoner.latent_init.expand(rows, length, -1))


def exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def evaluation_never_touches_the_carry(calls: list[dict[str, object]]) -> None:
    evaluation = [call for call in calls if not call["training"]]
    assert evaluation, "the run evaluated nothing"
    for step, call in enumerate(evaluation):
        if step % N_SUP == 0:
            assert call["carry"] is None  # a fresh batch starts from the model's own init vectors
        else:
            previous = evaluation[step - 1]["out"]
            exact(call["carry"].answer, previous.answer)
            exact(call["carry"].latent, previous.latent)


def test_switches_off_pass_the_carry_through_untouched(tmp_path) -> None:
    model = tiny_model()
    calls = record(model)
    plain = train(model, examples(), config(str(tmp_path / "plain")), collate_fn=COLLATE, eval_dataset=examples(8))
    training = [call for call in calls if call["training"]]
    assert len(training) == 2 * N_SUP
    for index, call in enumerate(training):
        assert call["task_labels"] is None
        if index % N_SUP == 0:
            assert call["carry"] is None  # the reasoner builds the start itself, as before the switches existed
        else:
            assert call["carry"] is training[index - 1]["out"]  # the very carry the last step returned
    # Settings that only matter with a switch on change nothing, bit for bit.
    other = train(tiny_model(), examples(), config(str(tmp_path / "other"), carry_init_std=3.0, carry_noise=0.0),
                  collate_fn=COLLATE, eval_dataset=examples(8))
    for name, tensor in plain.adapter_state_dict.items():
        assert torch.equal(other.adapter_state_dict[name], tensor), name
    assert other.eval_results == plain.eval_results


def test_carry_noise_is_the_drawn_noise_before_every_training_step_and_never_at_eval(tmp_path) -> None:
    sigma = 0.3
    model = tiny_model()
    calls = record(model)
    train(model, examples(), config(str(tmp_path), carry_noise=sigma), collate_fn=COLLATE, eval_dataset=examples(8))
    training = [call for call in calls if call["training"]]
    assert len(training) == 2 * N_SUP
    for batch_index in range(2):
        steps = training[batch_index * N_SUP:(batch_index + 1) * N_SUP]
        rows, length, width = steps[0]["out"].answer.shape
        generators = [generator(SEED, CARRY, batch_index, row) for row in range(rows)]
        answer, latent = init_vectors(model, rows, length)
        for step, call in enumerate(steps):
            if step:
                answer, latent = steps[step - 1]["out"].answer, steps[step - 1]["out"].latent
            noise = [(torch.randn(length, width, generator=g), torch.randn(length, width, generator=g)) for g in generators]
            exact(call["carry"].answer, answer + sigma * torch.stack([a for a, _ in noise]))
            exact(call["carry"].latent, latent + sigma * torch.stack([z for _, z in noise]))
    evaluation_never_touches_the_carry(calls)


def test_random_carry_start_is_drawn_per_sample_and_only_at_the_first_step(tmp_path) -> None:
    std = 0.5
    model = tiny_model()
    calls = record(model)
    train(model, examples(), config(str(tmp_path), carry_init="random", carry_init_std=std), collate_fn=COLLATE, eval_dataset=examples(8))
    training = [call for call in calls if call["training"]]
    first = training[0]["carry"]
    rows, length, width = first.answer.shape
    for row in range(rows):
        g = generator(SEED, CARRY, 0, row)
        expected = [torch.nn.init.trunc_normal_(torch.empty(length, width), std=std, a=-2 * std, b=2 * std, generator=g) for _ in range(2)]
        exact(first.answer[row], expected[0])
        exact(first.latent[row], expected[1])
    assert float(first.answer.abs().max()) <= 2 * std
    assert not torch.equal(first.answer[0], first.answer[1])  # every sample has its own start
    for index in range(1, N_SUP):  # later steps continue from the returned carry, no noise
        assert training[index]["carry"].answer is training[index - 1]["out"].answer
    evaluation_never_touches_the_carry(calls)


def test_persistent_schedule_draws_its_noise_per_step_and_slot(tmp_path) -> None:
    sigma = 0.2
    model = tiny_model()
    calls = record(model)
    train(model, examples(), config(str(tmp_path), carry_noise=sigma, schedule="persistent", max_steps=3), collate_fn=COLLATE)
    training = [call for call in calls if call["training"]]
    assert len(training) == 3
    rows, length, width = training[0]["out"].answer.shape
    for step, call in enumerate(training):
        # N_sup = 4 and no halting: no slot takes a new example within these 3 steps.
        answer, latent = init_vectors(model, rows, length) if step == 0 else (training[step - 1]["out"].answer, training[step - 1]["out"].latent)
        generators = [generator(SEED, PERSISTENT_CARRY, step, slot) for slot in range(rows)]
        noise = [(torch.randn(length, width, generator=g), torch.randn(length, width, generator=g)) for g in generators]
        exact(call["carry"].answer, answer + sigma * torch.stack([a for a, _ in noise]))
        exact(call["carry"].latent, latent + sigma * torch.stack([z for _, z in noise]))


def test_random_supervision_steps_are_drawn_per_batch_and_used(tmp_path) -> None:
    counts = [drawn_supervision_steps(SEED, index, N_SUP) for index in range(64)]
    assert set(counts) == set(range(1, N_SUP + 1))  # every count in 1..N_sup occurs, and nothing else
    assert counts == [drawn_supervision_steps(SEED, index, N_SUP) for index in range(64)]  # the same draws again

    trainer = Trainer(tiny_model(), examples(32), config(str(tmp_path), random_supervision_steps=True, epochs=2), collate_fn=COLLATE)
    batches = 2 * 4
    expected = [drawn_supervision_steps(SEED, index, N_SUP) for index in range(batches)]
    assert trainer.max_steps == sum(expected)  # the learning-rate schedule ends where the data does
    done = [metrics["steps"] for metrics in trainer.batches(trainer.max_steps)]
    trainer.close()
    assert done == expected


def test_resume_mid_run_equals_the_uninterrupted_run_with_every_switch_on(tmp_path) -> None:
    switches = dict(random_supervision_steps=True, carry_init="random", carry_noise=0.1, improvement_supervision=True,
                    length_curriculum=0.5, halting=True, epochs=3, checkpoint_every=4)
    data = examples(16)
    reference = train(tiny_model(), data, config(str(tmp_path / "reference"), **switches), collate_fn=COLLATE)
    assert reference.finished
    output_dir = str(tmp_path / "interrupted")
    crashed = train(tiny_model(), data, config(output_dir, **switches), collate_fn=COLLATE, stop_after_steps=reference.global_step // 2)
    assert not crashed.finished and latest_checkpoint(output_dir) is not None
    resumed = train(tiny_model(), data, config(output_dir, **switches), collate_fn=COLLATE, resume=True)
    assert resumed.finished and resumed.global_step == reference.global_step
    for name, tensor in reference.adapter_state_dict.items():
        torch.testing.assert_close(resumed.adapter_state_dict[name], tensor, atol=1e-6, rtol=0, msg=name)


def test_improvement_targets_follow_the_formula() -> None:
    labels = torch.tensor([[1, 2, 3, 4, 0, 1, 2, IGNORE_INDEX], [4, IGNORE_INDEX, 3, 2, 1, 0, 4, 3]])
    scores = torch.rand(labels.shape, generator=torch.Generator().manual_seed(0))
    order = scores.masked_fill(labels == IGNORE_INDEX, math.inf).argsort(1).argsort(1)
    steps = 3
    for step in (1, 2, steps):
        targets = improvement_targets(labels, order, step, steps)
        for row in range(2):
            labelled = [p for p in range(labels.shape[1]) if labels[row, p] != IGNORE_INDEX]
            shown = sorted(labelled, key=lambda p: float(scores[row, p]))[: step * len(labelled) // steps]
            expected = [int(labels[row, p]) if p in shown else IGNORE_INDEX for p in range(labels.shape[1])]
            assert targets[row].tolist() == expected, (step, row)
    assert torch.equal(improvement_targets(labels, order, steps, steps), labels)  # the last step: the whole answer
    assert (improvement_targets(labels, order, 1, steps) != IGNORE_INDEX).sum(1).tolist() == [7 // 3, 7 // 3]


def test_trainer_trains_step_s_on_its_improvement_targets(tmp_path) -> None:
    model = tiny_model()
    calls = record(model)
    train(model, examples(), config(str(tmp_path), improvement_supervision=True), collate_fn=COLLATE)
    training = [call for call in calls if call["training"]]
    first, last = training[0], training[N_SUP - 1]
    labels = first["labels"]
    for row in range(labels.shape[0]):
        scores = torch.rand(labels.shape[1], generator=generator(SEED, ORDER, 0, row))
        labelled = [p for p in range(labels.shape[1]) if labels[row, p] != IGNORE_INDEX]
        shown = sorted(labelled, key=lambda p: float(scores[p]))[: len(labelled) // N_SUP]
        expected = [int(labels[row, p]) if p in shown else IGNORE_INDEX for p in range(labels.shape[1])]
        assert first["task_labels"][row].tolist() == expected
    assert torch.equal(last["task_labels"], last["labels"])


def test_task_loss_reads_the_step_targets_and_halting_the_whole_answer() -> None:
    head = TokenClassificationHead(ReasonerConfig(hidden_size=16, num_heads=2, num_labels=3))
    labels = torch.tensor([[0, 1, 2], [2, 1, 0]])
    logits = torch.nn.functional.one_hot(labels, 3).float() * 4
    logits[0, 2] = torch.tensor([0.0, 4.0, 0.0])  # sample 0 gets its last cell wrong
    task_labels = torch.tensor([[0, IGNORE_INDEX, IGNORE_INDEX], [IGNORE_INDEX, 1, 0]])
    out = supervision_loss(head, logits, torch.zeros(2), labels, task_labels=task_labels, active=torch.tensor([True, True]))
    assert out.exact.tolist() == [False, True]  # against the whole answer, not the step's targets
    shown = task_labels != IGNORE_INDEX
    torch.testing.assert_close(out.task_loss, cross_entropy(logits[shown], task_labels[shown]))
    with pytest.raises(ValueError, match="task_labels must have the shape of labels"):
        supervision_loss(head, logits, torch.zeros(2), labels, task_labels=task_labels[:, :2])


def test_curriculum_targets_follow_the_formula() -> None:
    labels = torch.tensor([[IGNORE_INDEX, 1, 2, 3, 4, 0, 1, IGNORE_INDEX], [4, 3, IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX, 1, 0]])
    fraction = 0.4
    for progress in (0.0, 0.05, 0.1, 0.2, 0.3, 0.39, 0.4, 0.9):
        horizon = labels.shape[1] if progress >= fraction else max(1, math.ceil(labels.shape[1] * progress / fraction))
        targets = curriculum_targets(labels, progress, fraction)
        for row in range(2):
            expected, seen = [], 0
            for value in labels[row].tolist():
                seen += value != IGNORE_INDEX
                expected.append(value if value != IGNORE_INDEX and seen <= horizon else IGNORE_INDEX)
            assert targets[row].tolist() == expected, (progress, row)
    assert (curriculum_targets(labels, 0.0, fraction) != IGNORE_INDEX).sum(1).tolist() == [1, 1]  # never an empty target
    with pytest.raises(ValueError, match="per-position labels"):
        curriculum_targets(labels[:, 0], 0.1, fraction)


def test_trainer_widens_the_supervised_horizon_batch_by_batch(tmp_path) -> None:
    model = tiny_model()
    calls = record(model)
    fraction = 0.5
    trainer = Trainer(model, examples(32), config(str(tmp_path), length_curriculum=fraction, epochs=2), collate_fn=COLLATE)
    max_steps = trainer.max_steps
    trainer.fit()
    training = [call for call in calls if call["training"]]
    assert len(training) == max_steps == 2 * 4 * N_SUP
    horizons = []
    for step, call in enumerate(training):
        batch_start = step - step % N_SUP  # every step of a batch keeps the batch's horizon
        exact(call["task_labels"], curriculum_targets(call["labels"], batch_start / max_steps, fraction))
        horizons.append(int((call["task_labels"] != IGNORE_INDEX).sum(1).max()))
    assert horizons[0] == 1 and horizons == sorted(horizons)  # from one position, only ever wider
    assert all(torch.equal(call["task_labels"], call["labels"]) for call in training[max_steps // 2:])  # then the whole answer


@pytest.mark.parametrize(("changes", "message"), [
    ({"carry_noise": -0.1}, r"`training.carry_noise` must be a finite number >= 0 .*0 = off.*got -0.1"),
    ({"carry_noise": float("nan")}, r"`training.carry_noise` must be a finite number >= 0.*got nan"),
    ({"carry_noise": float("inf")}, r"`training.carry_noise` must be a finite number >= 0.*got inf"),
    ({"carry_init_std": 0.0}, r"`training.carry_init_std` must be a finite number > 0"),
    ({"carry_init": "zeros"}, r"`training.carry_init` must be 'model' .* or 'random'"),
    ({"random_supervision_steps": True, "schedule": "persistent"},
     r"`training.random_supervision_steps` works with `training.schedule=per_batch` only.*set `training.random_supervision_steps=false`"),
    ({"improvement_supervision": True, "schedule": "persistent"}, r"`training.improvement_supervision` works with `training.schedule=per_batch` only"),
    ({"length_curriculum": 1.5}, r"`training.length_curriculum` must be a fraction of the run in \[0, 1\].*got 1.5"),
    ({"length_curriculum": 0.5, "schedule": "persistent"}, r"`training.length_curriculum` works with `training.schedule=per_batch` only"),
])
def test_bad_values_name_the_key_and_the_fix(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainingConfig(**changes)


def test_improvement_supervision_refuses_outputs_without_positions(tmp_path) -> None:
    model = tiny_model(output="sequence_classification")
    with pytest.raises(ValueError, match=r"`training.improvement_supervision` needs one label per input position .*got output='sequence_classification'"):
        Trainer(model, examples(), config(str(tmp_path), improvement_supervision=True), collate_fn=COLLATE)


def test_length_curriculum_refuses_outputs_without_positions(tmp_path) -> None:
    model = tiny_model(output="sequence_classification")
    with pytest.raises(ValueError, match=r"`training.length_curriculum` needs one label per input position .*got output='sequence_classification'"):
        Trainer(model, examples(), config(str(tmp_path), length_curriculum=0.5), collate_fn=COLLATE)


def test_recipe_overrides_set_the_switches() -> None:
    recipe = os.path.join(REPO, "latentreason", "recipes", "sudoku_6x6.yaml")  # as `latentreason train RECIPE key=value` reads it
    loaded = load_recipe(recipe, ["training.carry_noise=0.1", "training.carry_init=random", "training.carry_init_std=0.5",
                                  "training.random_supervision_steps=true", "training.improvement_supervision=true"])
    switches = loaded.training
    assert (switches.carry_noise, switches.carry_init, switches.carry_init_std) == (0.1, "random", 0.5)
    assert switches.random_supervision_steps and switches.improvement_supervision
    assert load_recipe(recipe).training.carry_noise == 0.0
    with pytest.raises(RecipeError, match=r"`training.carry_noise` must be a finite number >= 0"):
        load_recipe(recipe, ["training.carry_noise=-1"])
    with pytest.raises(RecipeError, match=r"Invalid value 'zeros', expected one of \['model', 'random'\]"):
        load_recipe(recipe, ["training.carry_init=zeros"])
