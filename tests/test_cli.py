"""The `latentreason` command, called in-process: train a custom JSONL, eval, predict, tasks, export-task, errors."""

from __future__ import annotations

import json
import os
import random

import pytest
from conftest import save_tiny_base

from latentreason import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUSTOM_RECIPE = os.path.join(REPO, "recipes", "custom_pairs.yaml")
LETTERS = "abcde"


def write_pairs(path: str, count: int, seed: int) -> None:
    """Pairs the tests never saw elsewhere: each letter maps to its position in the alphabet, as a word."""
    rng = random.Random(seed)
    names = {"a": "first", "b": "second", "c": "third", "d": "fourth", "e": "fifth"}
    with open(path, "w", encoding="utf-8") as handle:
        for _ in range(count):
            letters = [rng.choice(LETTERS) for _ in range(5)]
            handle.write(json.dumps({"input": " ".join(letters), "output": " ".join(names[c] for c in letters)}) + "\n")


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Train recipes/custom_pairs.yaml on a fresh JSONL, changing only base, files and where/how long to run."""
    root = tmp_path_factory.mktemp("cli")
    base = save_tiny_base(str(root / "base"))
    write_pairs(str(root / "train.jsonl"), 128, seed=1)
    write_pairs(str(root / "test.jsonl"), 32, seed=2)
    run_dir = str(root / "run")
    status = cli.main([
        "train", CUSTOM_RECIPE,
        f"model.base={base}", f"data.train_file={root / 'train.jsonl'}", f"data.eval_file={root / 'test.jsonl'}",
        f"training.output_dir={run_dir}", f"training.cache_dir={root / 'cache'}",
        # run length and size only, so the test takes seconds (the recipe's own model is sized for real data)
        "training.max_steps=60", "training.progress_bar=false", "training.report_to=none",
        "reasoner.hidden_size=32", "reasoner.num_heads=2", "reasoner.latent_steps=1",
    ])
    assert status == 0
    return {"root": str(root), "run": run_dir}


def test_custom_pairs_train_and_learn_the_mapping(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    with open(os.path.join(custom_run["run"], "eval_results.json")) as handle:
        results = json.load(handle)
    assert results["num_examples"] == 32
    # A per-cell lookup: chance is 1/5 per cell; a few dozen steps learn most of it.
    assert results["per_step"][-1]["accuracy"] > 0.5, results["per_step"]
    with open(os.path.join(custom_run["run"], "recipe.yaml")) as handle:
        saved = handle.read()
    assert "output_kind: aligned" in saved  # guessed from the data and recorded for predict


def test_eval_command_prints_and_writes_per_step_results(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    other = os.path.join(custom_run["root"], "other.jsonl")
    write_pairs(other, 16, seed=3)
    assert cli.main(["eval", custom_run["run"], "--data", other, "--steps", "2", "--no-halt"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["step", "accuracy", "exact_match"]
    with open(os.path.join(custom_run["run"], "eval_results_other.json")) as handle:
        results = json.load(handle)
    assert results["num_examples"] == 16 and [row["step"] for row in results["per_step"]] == [1, 2]
    assert results["halt"] is False and results["accuracy"] == results["per_step"][-1]["accuracy"]


def test_eval_halt_threshold_sets_the_headline_and_the_curve_covers_it(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from latentreason.training.evaluation import suggest_halt_threshold

    other = os.path.join(custom_run["root"], "other_halt.jsonl")
    write_pairs(other, 16, seed=4)
    assert cli.main(["eval", custom_run["run"], "--data", other, "--steps", "3", "--halt", "--halt-threshold", "0.999"]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(custom_run["run"], "eval_results_other_halt.json")) as handle:
        results = json.load(handle)
    strict = next(row for row in results["halting_curve"] if row["threshold"] == 0.999)
    assert results["halting"] == strict  # the headline uses the threshold given
    assert results["exact_match"] == strict["exact_match"] and results["mean_steps"] == strict["mean_steps"]
    assert "halting curve: halt when p >" in printed
    best = suggest_halt_threshold(results)
    assert best is not None and best["exact_match"] >= results["all_steps"]["exact_match"] - 0.01
    assert all(row["mean_steps"] >= best["mean_steps"] for row in results["halting_curve"]
               if row["exact_match"] >= results["all_steps"]["exact_match"] - 0.01)
    assert cli.main(["eval", custom_run["run"], "--data", other, "--halt-threshold", "1.5"]) == 2
    assert "halt_threshold" in capsys.readouterr().err


def test_predict_prints_one_answer_per_input(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", custom_run["run"], "a b c d e", "e e a"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    words = {"first", "second", "third", "fourth", "fifth"}
    assert len(lines[0].split()) == 5 and set(lines[0].split()) <= words
    assert len(lines[1].split()) == 3 and set(lines[1].split()) <= words


def test_predict_with_steps_prints_each_refinement(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["predict", custom_run["run"], "b a", "--steps", "3", "--no-halt"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["step 1", "step 2", "step 3"]
    assert lines[3].startswith("answer (after 3 steps): ")
    assert lines[3].split(": ", 1)[1] == lines[2].split(": ", 1)[1]  # without halting the answer is the last step's
    assert cli.main(["predict", custom_run["run"], "b a", "--steps", "3", "--halt"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("answer (halted at step ")


def test_predict_with_trajectories_matches_refine_and_checks_its_flags(custom_run: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    from latentreason.pipeline import load_run, predict

    run = load_run(custom_run["run"])
    plain = predict(run, ["b a c"], steps=5, halt=False)
    assert predict(run, ["b a c"], steps=5, halt=False, trajectories=4, noise=0.0) == plain  # no noise: the one trajectory
    assert cli.main(["predict", custom_run["run"], "b a c", "--steps", "20", "--no-halt", "--trajectories", "4", "--noise", "0.5",
                     "--select", "vote"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 21 and lines[-1].startswith("answer (after 20 steps): ")  # 20 steps, past the trained N_sup
    for flag, value in (("--trajectories", "0"), ("--noise", "-1"), ("--select", "best")):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["predict", custom_run["run"], "b a", flag, value])
        assert exit_info.value.code == 2
        assert flag in capsys.readouterr().err


def test_bad_override_exits_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["train", CUSTOM_RECIPE, "training.learnig_rate=0.1"]) == 2
    error = capsys.readouterr().err
    assert "training.learnig_rate" in error and "learning_rate" in error


def test_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "recipe.yaml" in capsys.readouterr().err


def test_tasks_and_export_task(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["tasks"]) == 0
    listed = capsys.readouterr().out
    assert "sudoku" in listed and "sort_words" in listed and "givens" in listed
    path = tmp_path / "sudoku.jsonl"
    assert cli.main(["export-task", "sudoku", str(path), "size=4", "num_train=5", "--split", "train"]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and all(len(row["input"].split()) == 16 == len(row["output"].split()) for row in rows)
    assert cli.main(["export-task", "sudoku", str(path), "colour=red"]) == 2
    assert "colour" in capsys.readouterr().err


def test_export_task_options_may_follow_flags(tmp_path) -> None:
    """`export-task NAME PATH --split test length=5`, as in its --help, writes the test split with the option."""
    path = tmp_path / "sorted.jsonl"
    assert cli.main(["export-task", "sort_words", str(path), "--split", "test", "length=5", "num_test=3"]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 3 and all(len(row["input"].split()) == 5 for row in rows)
    with pytest.raises(SystemExit):
        cli.main(["export-task", "sort_words", str(path), "--bogus"])


@pytest.mark.parametrize("command", ["train", "eval", "predict", "push", "export-task", "convert-trm"])
def test_every_example_in_a_command_help_parses(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """The example command lines that `--help` shows are valid for today's parser, and the recipes they name exist."""
    import shlex

    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    lines = [line.split("  #")[0].strip() for line in text.splitlines()]
    examples = [shlex.split(line.split(" latentreason.cli ", 1)[1]) if " latentreason.cli " in line else shlex.split(line)[1:]
                for line in lines if line.startswith(f"latentreason {command} ") or f" latentreason.cli {command} " in line]
    assert examples, f"the help of {command} shows no example command line"
    parser = cli.build_parser()
    for argv in examples:
        args, extra = parser.parse_known_args(argv)  # exits (SystemExit) on an unknown command or a bad flag value
        assert args.command == command
        assert all("=" in token and not token.startswith("-") for token in extra), f"{argv}: unrecognized {extra}"
        for token in argv:
            if token.startswith("recipes/"):
                assert os.path.isfile(os.path.join(REPO, token)), f"the help of {command} names {token}, which does not exist"
