"""The test-time scaling benchmark at its tiny preset: every task and variant trains, every depth and breadth is scored."""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks/` lives beside the package, not inside it

from benchmarks import test_time_scaling  # noqa: E402
from latentreason.training.halting import held_out_count  # noqa: E402
from latentreason.training.refinement import drawn_supervision_steps  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class FakeImages:
    """Stands in for the report's `Images`: records what would be saved."""

    def __init__(self) -> None:
        self.saved: list[str] = []

    def add(self, figure, name: str, caption: str) -> str:
        self.saved.append(name)
        assert len(figure.axes) >= len(test_time_scaling.PRESETS["tiny"].tasks)
        return f"![{caption}](img/bench_{name}.png)\n"


def test_tiny_preset_trains_every_variant_and_scores_every_depth_and_breadth(tiny_benchmarks) -> None:
    settings = test_time_scaling.PRESETS["tiny"]
    result = tiny_benchmarks[1]["test_time_scaling"]
    assert [task["task"] for task in result["tasks"]] == [task.name for task in settings.tasks]
    for task, spec in zip(result["tasks"], settings.tasks):
        calls = task["calls_per_step"]
        assert calls == spec.common.cycles * (spec.common.latent_steps + 1)
        assert [variant["variant"] for variant in task["variants"]] == list(settings.variants)
        for variant in task["variants"]:
            assert variant["changes"] == test_time_scaling.training_changes(variant["variant"], settings)
            assert sorted(variant["curves"], key=int) == [str(count) for count in settings.trajectories]
            for count, curve in variant["curves"].items():
                # equal compute: M trajectories are scored while steps x M stays within the deepest single run
                depths = [s for s in settings.test_steps if s * int(count) <= max(settings.test_steps)]
                assert [point["steps"] for point in curve] == depths
                assert [point["net_calls"] for point in curve] == [steps * calls * int(count) for steps in depths]
                assert all(0.0 <= point["exact_match"] <= point["accuracy"] <= 1.0 for point in curve)
        by_name = {variant["variant"]: variant for variant in task["variants"]}
        num_train = spec.common.task_options["num_train"]
        kept_rows = num_train - held_out_count(num_train, settings.calibrate_halting)  # the rest calibrate halting
        batches = kept_rows // spec.common.batch_size * spec.common.epochs
        assert by_name["baseline"]["optimizer_steps"] == batches * settings.supervision_steps
        # The random_steps variant really trained with its switch: one drawn count per batch.
        drawn = sum(drawn_supervision_steps(spec.common.seed, index, settings.supervision_steps) for index in range(batches))
        assert by_name["random_steps"]["optimizer_steps"] == drawn

    images = FakeImages()
    text = test_time_scaling.render(result, images)
    assert images.saved == ["test_time_scaling"]
    for task in result["tasks"]:
        assert f"### {task['task']}:" in text
        budgets = sorted({point["net_calls"] for variant in task["variants"] for curve in variant["curves"].values() for point in curve})
        assert "| variant | trajectories | " + " | ".join(map(str, budgets)) + " |" in text
    assert test_time_scaling.render(result).count("![") == 0  # without images: text only


def _fake_variant(calls: list[str]):
    """A stand-in for `run_variant` (the training is tested above): records each variant it is asked to train."""
    def run_variant(model, common, train_set, test_set, pad_token_id, variant, settings, calls_per_step):
        calls.append(f"{common.task}/{variant}")
        curve = [{"steps": steps, "net_calls": steps * calls_per_step, "exact_match": 0.5, "accuracy": 0.5, "last_cell": 0.5}
                 for steps in settings.test_steps]
        return {"optimizer_steps": len(calls), "train_seconds": 0.0, "load_average": 0.0,
                "curves": {str(count): curve for count in settings.trajectories}, "halting": None}
    return run_variant


def test_an_interrupted_run_keeps_what_it_finished_and_reuse_trains_only_the_rest(tmp_path, monkeypatch) -> None:
    import json

    import pytest

    from benchmarks.__main__ import run_benchmarks

    settings = test_time_scaling.PRESETS["tiny"]
    calls: list[str] = []
    fake = _fake_variant(calls)

    def failing(*args):  # the machine goes away during the third variant of the first task
        if len(calls) == 2:
            raise KeyboardInterrupt
        return fake(*args)

    monkeypatch.setattr(test_time_scaling, "run_variant", failing)
    with pytest.raises(KeyboardInterrupt):
        run_benchmarks(["test_time_scaling"], "tiny", tmp_path)
    partial = json.loads((tmp_path / "tiny" / "test_time_scaling.json").read_text())
    assert partial["partial"] is True
    assert [task["task"] for task in partial["tasks"]] == [settings.tasks[0].name]
    assert [variant["variant"] for variant in partial["tasks"][0]["variants"]] == list(settings.variants[:2])
    text = test_time_scaling.render(partial)
    assert "**Partial result**" in text and f"{settings.tasks[0].name} ({', '.join(settings.variants[2:])})" in text
    assert f"{settings.tasks[1].name} ({', '.join(settings.variants)})" in text

    monkeypatch.setattr(test_time_scaling, "run_variant", fake)
    calls.clear()
    result = run_benchmarks(["test_time_scaling"], "tiny", tmp_path, reuse=True)["test_time_scaling"]
    first = settings.tasks[0].common.task
    assert f"{first}/{settings.variants[0]}" not in calls and f"{first}/{settings.variants[1]}" not in calls
    assert len(calls) == len(settings.tasks) * len(settings.variants) - 2
    assert "partial" not in result
    assert result["tasks"][0]["variants"][:2] == partial["tasks"][0]["variants"]
    assert "**Partial result**" not in test_time_scaling.render(result)

    # Kept only when trained the same way: another test noise keeps nothing.
    calls.clear()
    changed = dataclasses.replace(settings, trajectory_noise=settings.trajectory_noise + 0.1)
    test_time_scaling.run(changed, previous=result)
    assert len(calls) == len(settings.tasks) * len(settings.variants)


def test_the_halting_table_judges_each_variant_by_the_goal() -> None:
    def variant(name: str, halting_exact: float, mean_steps: float, all_steps: float) -> dict:
        curve = [{"steps": steps, "net_calls": steps, "exact_match": all_steps if steps == 16 else 0.0} for steps in (1, 16, 128)]
        return {"variant": name, "curves": {"1": curve},
                "halting": {"threshold": 0.5, "exact_match": halting_exact, "mean_steps": mean_steps}}

    task = {"variants": [variant("close_and_cheap", 0.805, 2.0, 0.81), variant("too_far", 0.70, 2.0, 0.81),
                         variant("too_slow", 0.81, 6.0, 0.81), variant("both", 0.5, 100.0, 0.81)]}
    lines = test_time_scaling.halting_lines(task, trained=16)
    assert lines[0].startswith("Halting at the trained threshold (p > 0.5; a sample that never halts runs all 128 test steps)")
    assert "| close_and_cheap | 0.805 | 2.00 | 0.810 | met |" in lines
    assert "| too_far | 0.700 | 2.00 | 0.810 | missed (more than 1 point below) |" in lines
    assert "| too_slow | 0.810 | 6.00 | 0.810 | missed (too many steps) |" in lines  # 16 / 3 = 5.3 at most
    assert "| both | 0.500 | 100.00 | 0.810 | missed (more than 1 point below, too many steps) |" in lines
    assert not any(line.startswith("- ") for line in lines)  # no stored curve: no threshold suggested

    task["variants"][1]["halting_curve"] = [{"threshold": 0.5, "exact_match": 0.70, "mean_steps": 2.0},
                                            {"threshold": 0.9, "exact_match": 0.801, "mean_steps": 3.5},
                                            {"threshold": 0.99, "exact_match": 0.81, "mean_steps": 9.0}]
    lines = test_time_scaling.halting_lines(task, trained=16)
    assert [line for line in lines if line.startswith("- ")] == [
        "- too_far: the cheapest threshold within 1 point of all 16 steps on the test set is p > 0.9: 0.801 in 3.50 steps "
        "(`training.calibrate_halting` picks one on held-out training rows instead)."]


def test_calibrated_halting_is_judged_at_each_variants_own_threshold_beside_the_trained_one() -> None:
    curve = [{"steps": steps, "net_calls": steps, "exact_match": 0.81 if steps == 16 else 0.0} for steps in (1, 16, 128)]
    task = {"variants": [
        {"variant": "baseline", "curves": {"1": curve}, "halting": {"threshold": 0.95, "exact_match": 0.805, "mean_steps": 3.0},
         "halting_curve": [{"threshold": 0.5, "exact_match": 0.70, "mean_steps": 1.2},
                           {"threshold": 0.95, "exact_match": 0.805, "mean_steps": 3.0}]},
        {"variant": "noisy", "curves": {"1": curve}, "halting": {"threshold": 0.999, "exact_match": 0.79, "mean_steps": 7.0}}]}
    lines = test_time_scaling.halting_lines(task, trained=16, calibrated=True)
    assert lines[0].startswith("Halting at the threshold each variant calibrated on a held-out tenth of its training rows")
    assert "| baseline | 0.95 | 0.805 | 3.00 | 0.700 in 1.20 | 0.810 | met |" in lines
    assert "| noisy | 0.999 | 0.790 | 7.00 | - | 0.810 | missed (more than 1 point below, too many steps) |" in lines
    assert not any(line.startswith("- ") for line in lines)  # thresholds read on the test set are not suggested beside calibrated ones
