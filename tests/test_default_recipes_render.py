"""The default-recipes section reads its figures from the result, and judges no time goal on a shared machine."""

from __future__ import annotations

from benchmarks import default_recipes


def result(load: float) -> dict:
    def row(recipe: str, task: str, exact: float, seconds: float, per_step: list[float]) -> dict:
        run = {"seed": 0, "train_rows": 2000, "test_rows": 300, "layer": "8", "exact_match": exact, "seconds": seconds,
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
    assert "Some runs shared the cores" in text


def test_a_time_goal_is_judged_from_its_own_runs_when_they_had_the_cores() -> None:
    busy_start = result(load=5.0)  # the aligned runs shared the cores; the text run then trained alone
    busy_start["rows"][0]["runs"][0]["load_average"] = 3.7
    busy_start["rows"][1]["runs"][0]["load_average"] = 1.9
    text = default_recipes.render(busy_start)
    assert "| text_pairs | sort_words | 2000 / 300 | 0.850 (0.850-0.850) | 1200 s (1200 s) | 8 | missed |" in text  # judged: 20 > 15 min
    busy_start["rows"][1]["runs"][0]["load_average"] = 2.02  # its own 2 threads on 2 cores: alone
    assert "| 8 | missed |" in default_recipes.render(busy_start)
    busy_start["rows"][1]["runs"][0]["load_average"] = 2.6  # more than half a core of other work
    assert "| 8 | exact match met; time not judged (shared machine) |" in default_recipes.render(busy_start)


def test_a_partial_result_names_what_is_not_measured_yet() -> None:
    partial = {**result(load=1.0), "partial": True}
    partial["settings"] = {"seeds": [0, 1], "aligned_tasks": ["sort", "reverse"], "text_tasks": ["sort_words"]}
    text = default_recipes.render(partial)
    assert "**Partial result**: not measured yet: custom_pairs / sort (seeds 1); custom_pairs / reverse (seeds 0, 1); " \
           "text_pairs / sort_words (seeds 1)." in text
    assert "**Partial result**" not in default_recipes.render(result(load=1.0))


def test_an_interrupted_run_keeps_its_runs_and_reuse_trains_only_the_rest(monkeypatch) -> None:
    import dataclasses
    import json

    import pytest

    trained: list[tuple[str, str]] = []

    def fake_train_once(recipe, train, test, output_dir, overrides, threads=None):
        task = output_dir.parent.name.split("-")[1]
        if len(trained) == 2 and not fake_train_once.resumed:
            raise KeyboardInterrupt  # the machine goes away during the third run
        trained.append((recipe, task))
        return {"exact_match": 0.5, "accuracy": 0.9, "mean_steps": 1.0, "per_step_exact_match": [0.5], "seconds": 1.0,
                "layer": "0", "layer_line": None}

    fake_train_once.resumed = False
    monkeypatch.setattr(default_recipes, "train_once", fake_train_once)
    settings = dataclasses.replace(default_recipes.PRESETS["tiny"], aligned_tasks=("reverse", "sort"), seeds=(0, 1), tiny_bases=False)
    saved: list[dict] = []
    with pytest.raises(KeyboardInterrupt):
        default_recipes.run(settings, progress=lambda partial: saved.append(json.loads(json.dumps(partial))))  # as on disk
    partial = saved[-1]
    # seed by seed: each task once before any task twice
    assert partial["partial"] is True and [(row["task"], len(row["runs"])) for row in partial["rows"]] == [("reverse", 1), ("sort", 1)]

    fake_train_once.resumed = True
    trained.clear()
    final = default_recipes.run(settings, previous=partial)
    assert trained == [("custom_pairs", "reverse"), ("custom_pairs", "sort"), ("text_pairs", "sort_words"), ("text_pairs", "sort_words")]
    assert "partial" not in final and [run["seed"] for run in final["rows"][0]["runs"]] == [0, 1]
    assert final["rows"][0]["runs"][0] == partial["rows"][0]["runs"][0]

    # A run is kept only while its recipe file is unchanged, and only for the same data settings.
    trained.clear()
    monkeypatch.setattr(default_recipes, "recipe_digest", lambda recipe: "edited since")
    default_recipes.run(settings, previous=final)
    assert len(trained) == (len(settings.aligned_tasks) + len(settings.text_tasks)) * len(settings.seeds)
    monkeypatch.undo()
    monkeypatch.setattr(default_recipes, "train_once", fake_train_once)
    trained.clear()
    default_recipes.run(dataclasses.replace(settings, aligned_rows=(50, 8)), previous=final)
    assert len(trained) == (len(settings.aligned_tasks) + len(settings.text_tasks)) * len(settings.seeds)


def test_aligned_jobs_train_at_once_on_one_thread_each_and_keep_seed_order(monkeypatch) -> None:
    import dataclasses
    import json
    import threading

    started, both_running = [], threading.Barrier(2, timeout=10)

    def fake_train_once(recipe, train, test, output_dir, overrides, threads=None):
        task, seed = output_dir.parent.name.split("-")[1], int(output_dir.parent.name.split("-")[2])
        started.append((recipe, task, seed, threads))
        if recipe == "custom_pairs" and len(started) <= 2:
            both_running.wait()  # the first two aligned runs must be under way together, or this times out
        exact = 0.1 * seed if recipe == "custom_pairs" else 0.9
        return {"exact_match": exact, "accuracy": 0.9, "mean_steps": 1.0, "per_step_exact_match": [exact], "seconds": 1.0,
                "layer": "0", "layer_line": None}

    monkeypatch.setattr(default_recipes, "train_once", fake_train_once)
    settings = dataclasses.replace(default_recipes.PRESETS["tiny"], seeds=(0, 1, 2), tiny_bases=False, aligned_jobs=2)
    result = default_recipes.run(settings)
    aligned, text = result["rows"]
    assert [run["seed"] for run in aligned["runs"]] == [0, 1, 2] and [run["exact_match"] for run in aligned["runs"]] == [0.0, 0.1, 0.2]
    assert {threads for recipe, _, _, threads in started if recipe == "custom_pairs"} == {1}
    assert [threads for recipe, _, _, threads in started if recipe == "text_pairs"] == [None, None, None]  # alone, every core
    assert [run["seed"] for run in text["runs"]] == [0, 1, 2]
    # jobs change no result: runs trained with 2 jobs are kept by a run with 1
    on_disk = json.loads(json.dumps(result))
    assert default_recipes.kept_runs(dataclasses.replace(settings, aligned_jobs=1), on_disk).keys() == {
        (recipe, task, seed) for recipe, task in (("custom_pairs", "reverse"), ("text_pairs", "sort_words")) for seed in (0, 1, 2)}
