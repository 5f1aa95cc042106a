"""The test-time scaling benchmark at its tiny preset: every task and variant trains, every depth and breadth is scored."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks/` lives beside the package, not inside it

from benchmarks import test_time_scaling  # noqa: E402
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


def test_tiny_preset_trains_every_variant_and_scores_every_depth_and_breadth() -> None:
    settings = test_time_scaling.PRESETS["tiny"]
    result = test_time_scaling.run(settings)
    assert [task["task"] for task in result["tasks"]] == [task.name for task in settings.tasks]
    for task, spec in zip(result["tasks"], settings.tasks):
        calls = task["calls_per_step"]
        assert calls == spec.common.cycles * (spec.common.latent_steps + 1)
        assert [variant["variant"] for variant in task["variants"]] == list(settings.variants)
        for variant in task["variants"]:
            assert variant["changes"] == test_time_scaling.training_changes(variant["variant"], settings)
            assert sorted(variant["curves"], key=int) == [str(count) for count in settings.trajectories]
            for count, curve in variant["curves"].items():
                assert [point["steps"] for point in curve] == list(settings.test_steps)
                assert [point["net_calls"] for point in curve] == [steps * calls * int(count) for steps in settings.test_steps]
                assert all(0.0 <= point["exact_match"] <= point["accuracy"] <= 1.0 for point in curve)
        by_name = {variant["variant"]: variant for variant in task["variants"]}
        batches = spec.common.task_options["num_train"] // spec.common.batch_size * spec.common.epochs
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
