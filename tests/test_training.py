"""The training loop end to end on a tiny model: learning, evaluation files, resume, the feature cache, DDP.

One tiny run (sort 4 digits with a tiny Llama) is trained once per module and shared; the other
tests train a few steps more each. Everything runs on the CPU in seconds of compute.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys

import pytest
import torch
from conftest import save_tiny_base
from safetensors.torch import load_file

from latentreason import ReasonerConfig, attach_reasoner
from latentreason.backbone import count_calls
from latentreason.data import PairEncoder, collate
from latentreason.features import FeatureCache
from latentreason.pipeline import train_recipe
from latentreason.recipe import load_recipe
from latentreason.tasks import get_task
from latentreason.testing import tiny_tokenizer
from latentreason.training import TrainingConfig, latest_checkpoint, train
from latentreason.training.ema import ExponentialMovingAverage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_overrides(base: str, output_dir: str, cache_dir: str, **changes: object) -> list[str]:
    """Overrides that make any task recipe tiny: 64 short lists, a 32-wide reasoner, 12 optimizer steps."""
    values = {
        "model.base": base,
        "data.task": "sort_words",
        "data.task_options": "{length: 4, max_value: 4, as_digits: true, num_train: 64, num_test: 32, seed: 0}",
        "reasoner.hidden_size": 32,
        "reasoner.num_heads": 2,
        "reasoner.latent_steps": 1,
        "reasoner.cycles": 2,
        "reasoner.max_supervision_steps": 3,
        "training.batch_size": 16,
        "training.max_steps": 12,
        "training.warmup_steps": 2,
        "training.learning_rate": 3e-3,
        "training.checkpoint_every": 6,
        "training.log_every": 1,
        "training.output_dir": output_dir,
        "training.cache_dir": cache_dir,
        "training.report_to": "none",
        "training.progress_bar": False,
        **changes,
    }
    return [f"{key}={value}" for key, value in values.items()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("training")
    return {"root": str(root), "base": save_tiny_base(str(root / "base")), "cache": str(root / "cache")}


@pytest.fixture(scope="module")
def reference_run(workspace: dict[str, str]):
    """The uninterrupted tiny run (12 steps, checkpoints every 6): trained once, used by several tests."""
    output_dir = os.path.join(workspace["root"], "reference")
    recipe = load_recipe(None, tiny_overrides(workspace["base"], output_dir, workspace["cache"]))
    return output_dir, train_recipe(recipe)


def test_loss_falls_and_run_folder_is_complete(reference_run) -> None:
    output_dir, result = reference_run
    losses = [row["train/loss"] for row in result.history]
    assert len(losses) >= 3
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses
    assert result.finished and result.global_step == 12
    for name in ("reasoner_config.json", "reasoner.safetensors", "recipe.yaml", "eval_results.json", "README.md"):
        assert os.path.isfile(os.path.join(output_dir, name)), name
    assert latest_checkpoint(output_dir).endswith("step-12")
    saved = load_file(os.path.join(output_dir, "reasoner.safetensors"))
    assert not any(name.startswith("backbone.") for name in saved)
    # The saved weights are the EMA's, not the last raw weights.
    for name, tensor in result.adapter_state_dict.items():
        if name in saved:
            torch.testing.assert_close(saved[name], tensor)


def test_eval_results_have_per_step_numbers(reference_run) -> None:
    output_dir, result = reference_run
    with open(os.path.join(output_dir, "eval_results.json")) as handle:
        results = json.load(handle)
    assert {"accuracy", "exact_match", "per_step", "mean_steps", "halting"} <= set(results)
    assert [row["step"] for row in results["per_step"]] == [1, 2, 3]
    assert results["num_examples"] == 32
    for row in results["per_step"]:
        assert 0.0 <= row["exact_match"] <= row["accuracy"] <= 1.0  # every list has 4 cells: whole-right <= cell-right
    assert 1.0 <= results["mean_steps"] <= 3.0
    assert results == result.eval_results


def test_resume_ends_with_the_same_weights(reference_run, workspace: dict[str, str]) -> None:
    reference_dir, reference = reference_run
    output_dir = os.path.join(workspace["root"], "interrupted")
    recipe = load_recipe(None, tiny_overrides(workspace["base"], output_dir, workspace["cache"]))
    crashed = train_recipe(recipe, stop_after_steps=9)  # "crashes" after step 9; the last checkpoint is at 6
    assert not crashed.finished and crashed.global_step == 9
    assert latest_checkpoint(output_dir).endswith("step-6")
    assert not os.path.exists(os.path.join(output_dir, "reasoner.safetensors"))
    resumed = train_recipe(recipe, resume=True)
    assert resumed.finished and resumed.global_step == 12
    assert resumed.adapter_state_dict.keys() == reference.adapter_state_dict.keys()
    for name, tensor in reference.adapter_state_dict.items():
        torch.testing.assert_close(resumed.adapter_state_dict[name], tensor, atol=1e-6, rtol=0, msg=name)
    assert resumed.eval_results["per_step"] == reference.eval_results["per_step"]


def test_a_half_written_checkpoint_is_never_loaded(reference_run, workspace: dict[str, str]) -> None:
    reference_dir, _ = reference_run
    staging = os.path.join(reference_dir, "checkpoints", ".tmp-step-99")
    os.makedirs(staging)
    with open(os.path.join(staging, "model.safetensors"), "wb") as handle:
        handle.write(b"truncated")
    assert latest_checkpoint(reference_dir).endswith("step-12")


def test_feature_cache_means_no_backbone_calls_in_training(workspace: dict[str, str]) -> None:
    tokenizer = tiny_tokenizer()
    task = get_task("sort_words", length=3, max_value=4, as_digits=True, num_train=32, num_test=8)
    encoder = PairEncoder(tokenizer, "aligned", task.labels())
    encoded = encoder.encode_dataset(task.to_dataset("train"))
    config = ReasonerConfig(hidden_size=32, num_heads=2, latent_steps=1, cycles=1, max_supervision_steps=2, num_labels=5)
    model = attach_reasoner(workspace["base"], config)
    cached = FeatureCache(workspace["cache"]).features_for(model, encoded, progress=False).with_format("torch")
    collate_fn = functools.partial(collate, pad_token_id=tokenizer.pad_token_id)

    def run(dataset, name: str) -> int:
        training = TrainingConfig(
            max_steps=4, batch_size=16, checkpoint_every=None, report_to="none", progress_bar=False,
            output_dir=os.path.join(workspace["root"], name), halting=False,
        )
        with count_calls(model.backbone) as calls:
            train(model, dataset, training, collate_fn=collate_fn, eval_dataset=dataset)
        return calls[0]

    assert run(cached, "cached") == 0  # neither training nor evaluation touches the backbone
    uncached = encoded.with_format("torch", columns=["input_ids", "attention_mask", "labels"])
    # Without the cache the backbone runs once per batch, never once per supervision step:
    # 4 optimizer steps = 2 batches of 2 supervision steps, then 1 evaluation batch.
    assert run(uncached, "uncached") == 2 + 1


def test_ema_warms_up_then_averages() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    ema = ExponentialMovingAverage(model, decay=0.999, warmup=True)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # first update copies
    with torch.no_grad():
        model.weight.fill_(2.0)
    ema.update()  # step 1: decay (1 + 1) / (10 + 1) = 2/11, so the average moves 9/11 of the way
    expected = 1.0 + 9.0 / 11.0
    torch.testing.assert_close(ema.named_averages()["weight"], torch.full((1, 2), expected))
    with ema.swapped_into():
        torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), expected))
    torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), 2.0))


def test_training_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(ValueError, match="divisible"):
        TrainingConfig(batch_size=10, gradient_accumulation_steps=3)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainingConfig(ema_decay=1.5)
    with pytest.raises(ValueError, match=r"`training.halt_exploration` must be a probability in \[0, 1\], got 1.5"):
        TrainingConfig(halt_exploration=1.5)


def test_halt_exploration_moved_to_training_and_old_places_still_load(tmp_path) -> None:
    """It was a reasoner field: recipes and saved run recipes that set `reasoner.halt_exploration`, and saved
    reasoner configs that hold it, still load; the value lands in the training config."""
    from latentreason.hub import read_config

    recipe = load_recipe(None, ["model.base=gpt2", "data.task=sort_words", "reasoner.halt_exploration=0.3"])
    assert recipe.training.halt_exploration == 0.3 and "halt_exploration" not in recipe.reasoner
    both = load_recipe(None, ["model.base=gpt2", "data.task=sort_words", "reasoner.halt_exploration=0.3", "training.halt_exploration=0.2"])
    assert both.training.halt_exploration == 0.2  # the training section wins
    path = tmp_path / "reasoner_config.json"
    path.write_text(json.dumps({**ReasonerConfig(hidden_size=32, num_heads=2, num_labels=3).to_dict(), "halt_exploration": 0.1}))
    assert read_config(path) == ReasonerConfig(hidden_size=32, num_heads=2, num_labels=3)


def test_gradient_accumulation_matches_one_big_batch(workspace: dict[str, str]) -> None:
    """Two micro-batches of 8 accumulate to the same update as one batch of 16 (halting off, equal sizes)."""
    results = []
    for accumulation in (1, 2):
        output_dir = os.path.join(workspace["root"], f"accumulate-{accumulation}")
        recipe = load_recipe(
            None,
            tiny_overrides(
                workspace["base"], output_dir, workspace["cache"],
                **{"training.gradient_accumulation_steps": accumulation, "training.max_steps": 3, "training.halting": False,
                   "training.checkpoint_every": "null"},
            ),
        )
        results.append(train_recipe(recipe).adapter_state_dict)
    for name, tensor in results[0].items():
        torch.testing.assert_close(results[1][name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_two_processes_match_one(reference_run, workspace: dict[str, str]) -> None:
    """Two gloo processes (torchrun, CPU) with the same global batch end with the same weights."""
    reference_dir, _ = reference_run
    output_dir = os.path.join(workspace["root"], "two-processes")
    recipe_path = os.path.join(workspace["root"], "tiny.yaml")
    load_recipe(None, tiny_overrides(workspace["base"], output_dir, workspace["cache"])).save(recipe_path)
    # `accelerate launch --cpu --num_processes 2` starts one process without MPI; torchrun starts two, and the
    # CLI joins them over gloo (`cli._join_cpu_process_group`).
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "--module", "latentreason.cli", "train", recipe_path]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert os.path.isfile(os.path.join(latest_checkpoint(output_dir), "random_states_1.pkl"))  # a second process really trained
    one = load_file(os.path.join(reference_dir, "reasoner.safetensors"))
    two = load_file(os.path.join(output_dir, "reasoner.safetensors"))
    assert one.keys() == two.keys()
    for name, tensor in one.items():
        torch.testing.assert_close(two[name], tensor, atol=1e-5, rtol=1e-4, msg=name)


def test_bf16_mixed_precision_trains_on_cpu(workspace: dict[str, str]) -> None:
    """bf16 autocast runs through the same loop (tiny: bf16 matmuls are ~100x slower than fp32 on this CPU)."""
    output_dir = os.path.join(workspace["root"], "bf16")
    overrides = tiny_overrides(
        workspace["base"], output_dir, workspace["cache"],
        **{"training.mixed_precision": "bf16", "training.max_steps": 3, "training.checkpoint_every": "null"},
    )
    result = train_recipe(load_recipe(None, overrides))
    assert result.finished and result.history
    assert all(math.isfinite(row["train/loss"]) for row in result.history)
    assert all(tensor.dtype == torch.float32 for tensor in result.adapter_state_dict.values() if tensor.is_floating_point())


def test_adamw_is_fused_and_updates_like_the_default():
    from latentreason.training import adamw

    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    twins = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    start = [w.detach().clone() for w in weights]
    fused, plain = adamw(weights, lr=1e-2, weight_decay=0.1), torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.1)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for group in (weights, twins):
            sum((w**2).sum() for w in group).backward()
        fused.step(), plain.step()
        fused.zero_grad(), plain.zero_grad()
    for w, twin, before in zip(weights, twins, start):
        torch.testing.assert_close(w, twin)
        assert (w - before).abs().min() > 1e-3  # every weight moved


def test_evaluate_scores_halting_at_each_threshold_of_the_curve() -> None:
    """The halting curve agrees with refine(halt=True) at every threshold, from the same halt logits."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from latentreason.testing import tiny_backbone
    from latentreason.training import evaluate
    from latentreason.training.evaluation import HALTING_CURVE, score

    torch.manual_seed(0)
    model = attach_reasoner(tiny_backbone("llama"), ReasonerConfig(hidden_size=16, num_heads=2, num_labels=3, max_supervision_steps=4))
    with torch.no_grad():  # spread the halt logits over the curve's thresholds
        model.reasoner.halt_head.weight.normal_(0, 3.0)
        model.reasoner.halt_head.bias.fill_(1.0)
    examples = [{"input_ids": torch.randint(3, 100, (6,)), "attention_mask": torch.ones(6, dtype=torch.long),
                 "labels": torch.randint(0, 3, (6,))} for _ in range(12)]
    loader = DataLoader(examples, batch_size=5, collate_fn=lambda rows: {k: torch.stack([r[k] for r in rows]) for k in rows[0]})
    results = evaluate(model, loader, Accelerator(), steps=4)
    assert [row["threshold"] for row in results["halting_curve"]] == sorted(HALTING_CURVE)
    batch = {k: torch.stack([e[k] for e in examples]) for k in examples[0]}
    seen_steps = set()
    for row in results["halting_curve"]:
        model.config = model.config.replace(halt_threshold=row["threshold"])
        refined = model.refine(batch["input_ids"], batch["attention_mask"], steps=4, halt=True)
        right, scored, exact = score(refined.logits, batch["labels"])
        assert row["exact_match"] == pytest.approx(exact.float().mean().item())
        assert row["accuracy"] == pytest.approx(right.sum().item() / scored.sum().item())
        assert row["mean_steps"] == pytest.approx(refined.halted_at.float().mean().item())
        seen_steps.add(row["mean_steps"])
    assert len(seen_steps) > 2  # the thresholds really halt at different steps


def test_stablemax_loss_is_what_the_trainer_minimises(reference_run, workspace: dict[str, str]) -> None:
    """`training.loss=stablemax`: same seed, same first batch, another loss value; and it still learns."""
    _, softmax_run = reference_run
    output_dir = os.path.join(workspace["root"], "stablemax")
    recipe = load_recipe(None, tiny_overrides(workspace["base"], output_dir, workspace["cache"], **{"training.loss": "stablemax"}))
    result = train_recipe(recipe)
    losses = [row["train/loss"] for row in result.history]
    softmax_losses = [row["train/loss"] for row in softmax_run.history]
    assert abs(losses[0] - softmax_losses[0]) > 1e-3, (losses[0], softmax_losses[0])
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses


def test_without_a_terminal_progress_goes_out_as_plain_lines(workspace: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """Redirected (no TTY), the bar is replaced by one line per `log_every` steps, with the logged numbers."""
    output_dir = os.path.join(workspace["root"], "plain-log")
    overrides = tiny_overrides(workspace["base"], output_dir, workspace["cache"], **{"training.log_every": 4, "training.progress_bar": True})
    result = train_recipe(load_recipe(None, overrides))
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("step ")]
    expected = [f"step {row['step']}/12: loss {row['train/loss']:.4f}, accuracy {row['train/accuracy']:.3f}" for row in result.history]
    assert len(lines) == len(expected) == 3 and all(line.startswith(prefix) for line, prefix in zip(lines, expected)), (lines, expected)
    assert "Training:" not in captured.err  # no carriage-return training bar in a log file


def test_halting_calibrated_on_held_out_training_data_is_saved_and_used(workspace: dict[str, str]) -> None:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from latentreason.data import torch_format
    from latentreason.inference import load_run
    from latentreason.pipeline import with_features
    from latentreason.prepare import prepare_data
    from latentreason.training.evaluation import closest_halt_threshold, evaluate, suggest_halt_threshold
    from latentreason.training.halting import hold_out

    output_dir = os.path.join(workspace["root"], "calibrated")
    recipe = load_recipe(None, tiny_overrides(workspace["base"], output_dir, workspace["cache"], **{"training.calibrate_halting": 0.25}))
    result = train_recipe(recipe)
    calibration = result.eval_results["halting_calibration"]
    assert calibration["examples"] == 16  # a quarter of the 64 training examples, held out of training
    run = load_run(output_dir)
    saved = json.load(open(os.path.join(output_dir, "reasoner_config.json")))["halt_threshold"]
    assert run.model.config.halt_threshold == saved == result.eval_results["halting"]["threshold"]
    # The same choice, made again here from the saved (EMA) weights on the same held-out slice.
    from latentreason.prepare import load_tokenizer

    data = prepare_data(recipe, load_tokenizer(recipe))
    train_set = torch_format(with_features(run.model, data.train, recipe))
    kept, held_out = hold_out(train_set, 0.25, recipe.training.seed)
    assert len(kept) == 48 and not set(kept.indices) & set(held_out.indices)
    loader = DataLoader(held_out, batch_size=recipe.eval.batch_size, collate_fn=functools.partial(collate, pad_token_id=0))
    again = evaluate(run.model, loader, Accelerator(cpu=True), calibration["all_steps"]["steps"], halt=False)
    row = suggest_halt_threshold(again) or closest_halt_threshold(again)
    assert saved == row["threshold"] and calibration["within_tolerance"] == (suggest_halt_threshold(again) is not None)
    with pytest.raises(ValueError, match="calibrate_halting"):
        TrainingConfig(calibrate_halting=1.0)


def test_calibration_picks_the_cheapest_threshold_within_a_point_else_the_closest_to_all_steps() -> None:
    from latentreason.training.evaluation import closest_halt_threshold, suggest_halt_threshold

    def results(all_steps: float, curve: list[tuple[float, float, float]]) -> dict:
        return {"all_steps": {"exact_match": all_steps},
                "halting_curve": [{"threshold": t, "exact_match": e, "mean_steps": m} for t, e, m in curve]}

    within = results(0.90, [(0.5, 0.80, 1.1), (0.9, 0.895, 1.8), (0.99, 0.90, 2.5)])
    assert suggest_halt_threshold(within)["threshold"] == 0.9  # 0.895 is within 1 point, in fewer steps than 0.99
    short = results(0.95, [(0.5, 0.80, 1.1), (0.9, 0.91, 1.8), (0.99, 0.91, 2.5), (0.999, 0.90, 3.0)])
    assert suggest_halt_threshold(short) is None
    assert closest_halt_threshold(short)["threshold"] == 0.9  # the best exact match, and of those the fewest steps
    assert closest_halt_threshold({"all_steps": {"exact_match": 1.0}}) is None
