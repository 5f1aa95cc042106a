"""The default-recipes section reads its figures from the result, and judges no time goal on a shared machine."""

from __future__ import annotations

from benchmarks import default_recipes


def result(load: float) -> dict:
    def row(recipe: str, task: str, exact: float, seconds: float, per_step: list[float]) -> dict:
        run = {"train_rows": 2000, "test_rows": 300, "layer": "8", "exact_match": exact, "seconds": seconds,
               "per_step_exact_match": per_step, "mean_steps": 1.25}
        return {"recipe": recipe, "task": task, "runs": [run], "exact_match_mean": exact, "exact_match_min": exact,
                "exact_match_max": exact, "seconds_mean": seconds, "seconds_max": seconds}

    return {"settings": {"seeds": [0]}, "machine": {"cpu": "test cpu", "cores": 2, "load_average": load},
            "rows": [row("custom_pairs", "sort", 0.99, 100.0, [0.9, 0.99]), row("text_pairs", "sort_words", 0.85, 1200.0, [0.85, 0.8])]}


def test_an_idle_machine_judges_both_goals() -> None:
    text = default_recipes.render(result(load=1.0))
    assert "| custom_pairs | sort | 2000 / 300 | 0.990 (0.990-0.990) | 100 s (100 s) | 8 | met |" in text
    assert "| text_pairs | sort_words | 2000 / 300 | 0.850 (0.850-0.850) | 1200 s (1200 s) | 8 | missed |" in text  # 20 > 15 minutes
    assert "- text_pairs / sort_words, seed 0: exact match after each refinement step 0.850 0.800; with halting, 1.25 steps on average." in text
    assert "shared the cores" not in text


def test_a_shared_machine_judges_only_the_accuracy_of_a_time_goal() -> None:
    text = default_recipes.render(result(load=5.0))
    assert "| 8 | exact match met; time not judged (shared machine) |" in text
    assert "| custom_pairs | sort | 2000 / 300 | 0.990 (0.990-0.990) | 100 s (100 s) | 8 | met |" in text  # no time goal
    assert "Other processes shared the cores during this run" in text
