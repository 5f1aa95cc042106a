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
    with pytest.raises(SystemExit) as exit_info:  # refused by the parser, before the run loads
        cli.main(["eval", custom_run["run"], "--data", other, "--halt-threshold", "1.5"])
    assert exit_info.value.code == 2
    assert "argument --halt-threshold: expected a probability strictly between 0 and 1" in capsys.readouterr().err


def write_pairs_with_mistakes(path: str, count: int, seed: int, mistaken: tuple[int, ...]) -> list[dict[str, str]]:
    """`write_pairs`, with the targets of rows `mistaken` rotated by one cell: no model of the mapping answers those."""
    write_pairs(path, count, seed)
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle]
    for index in mistaken:
        cells = rows[index]["output"].split()
        rows[index]["output"] = " ".join(cells[1:] + cells[:1]) if len(set(cells)) > 1 else " ".join(["fifth" if c != "fifth" else "first" for c in cells])
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def printed_wrong_examples(printed: str) -> list[tuple[str, str, str]]:
    """(input, prediction, target) of each wrong example that `latentreason eval` printed."""
    lines = [line.strip() for line in printed.splitlines()]
    return [tuple(line.split(": ", 1)[1].strip() for line in lines[index : index + 3])
            for index, line in enumerate(lines) if line.startswith("input:")]


@pytest.fixture(scope="module")
def mistakes(custom_run: dict[str, str]) -> dict:
    """`latentreason eval --data` on 24 fresh pairs, three of them with wrong targets, and what `predict` answers to each."""
    path = os.path.join(custom_run["root"], "mistakes.jsonl")
    rows = write_pairs_with_mistakes(path, 24, seed=5, mistaken=(2, 9, 17))
    return {"path": path, "rows": rows}


def test_eval_shows_the_first_wrong_examples_as_predict_answers_them(custom_run: dict[str, str], mistakes: dict,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    rows = mistakes["rows"]
    assert cli.main(["predict", custom_run["run"], *(row["input"] for row in rows)]) == 0
    answers = capsys.readouterr().out.strip().splitlines()
    wrong = [index for index, (answer, row) in enumerate(zip(answers, rows)) if answer != row["output"]]
    assert {2, 9, 17} <= set(wrong) and len(wrong) > 3  # the rotated targets, and some the model gets wrong on its own

    assert cli.main(["eval", custom_run["run"], "--data", mistakes["path"], "--show-wrong", "3"]) == 0
    printed = capsys.readouterr().out
    shown = printed_wrong_examples(printed)
    assert shown == [(rows[index]["input"], answers[index], rows[index]["output"]) for index in wrong[:3]]
    assert all(prediction != target for _, prediction, target in shown)
    assert f"wrong answers: {len(wrong)} of 24; the first 3, in data order:" in printed
    with open(os.path.join(custom_run["run"], "eval_results_mistakes.json")) as handle:
        results = json.load(handle)
    assert [example["index"] for example in results["wrong_examples"]] == wrong[:3]
    assert [example["where"] for example in results["wrong_examples"]] == [f"{mistakes['path']}, line {index + 1}" for index in wrong[:3]]
    assert results["exact_match"] == pytest.approx(1 - len(wrong) / 24)

    assert cli.main(["eval", custom_run["run"], "--data", mistakes["path"], "--show-wrong", "0"]) == 0
    assert printed_wrong_examples(capsys.readouterr().out) == []
    with open(os.path.join(custom_run["run"], "eval_results_mistakes.json")) as handle:
        assert json.load(handle)["wrong_examples"] == []


def test_eval_accuracy_per_position_is_predicts_and_averages_to_the_accuracy(custom_run: dict[str, str], mistakes: dict,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    rows = mistakes["rows"]
    assert cli.main(["predict", custom_run["run"], *(row["input"] for row in rows)]) == 0
    answers = [answer.split() for answer in capsys.readouterr().out.strip().splitlines()]
    targets = [row["output"].split() for row in rows]
    expected = [sum(answer[k] == target[k] for answer, target in zip(answers, targets)) / len(rows) for k in range(5)]

    assert cli.main(["eval", custom_run["run"], "--data", mistakes["path"]]) == 0
    printed = capsys.readouterr().out
    with open(os.path.join(custom_run["run"], "eval_results_mistakes.json")) as handle:
        results = json.load(handle)
    per_position = results["per_position"]
    assert [(row["position"], row["cells"]) for row in per_position] == [(k, 24) for k in range(1, 6)]  # one per answer cell
    assert [row["accuracy"] for row in per_position] == pytest.approx(expected)
    weighted = sum(row["accuracy"] * row["cells"] for row in per_position) / sum(row["cells"] for row in per_position)
    assert weighted == pytest.approx(results["accuracy"])
    line = next(line for line in printed.splitlines() if line.startswith("accuracy per answer position: "))
    shown = [cell.split(":") for cell in line.split(": ", 1)[1].split()]
    assert [(int(k), float(value)) for k, value in shown] == [(k, pytest.approx(a, abs=5e-4)) for k, a in enumerate(expected, start=1)]


def test_plot_draws_a_file_runs_examples_and_its_curve(custom_run: dict[str, str], tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from latentreason.inference import load_run, predict
    from latentreason.visualize import plot_refinement, strip_size

    out = tmp_path / "pictures"
    assert cli.main(["plot", custom_run["run"], "--example", "test:0", "--example", "train:3", "--steps", "2", "--out", str(out)]) == 0
    written = [line.removeprefix("wrote ") for line in capsys.readouterr().out.strip().splitlines()]
    assert written == [str(out / "refine_test_0.png"), str(out / "refine_train_3.png"), str(out / "curve.png")]
    with open(os.path.join(custom_run["root"], "test.jsonl")) as handle:
        first = json.loads(handle.readline())  # test:0 of a run on files: the first pair of data.eval_file
    (prediction,) = predict(load_run(custom_run["run"]), [first["input"]], steps=2, halt=False)
    again = plot_refinement("strip", first["input"], prediction.per_step, first["output"], tmp_path / "direct.png")
    assert open(written[0], "rb").read() == open(again, "rb").read()
    width, height = strip_size(5, 2, True, longest_cell=len(max(" ".join([first["output"], *prediction.per_step]).split(), key=len)))
    assert png_size(written[0]) == (round(width * 100), round(height * 100))

    assert cli.main(["plot", custom_run["run"], "--example", "test:32"]) == 2
    assert "out of range" in capsys.readouterr().err


def png_size(path: str) -> tuple[int, int]:
    from matplotlib.image import imread

    height, width = imread(path).shape[:2]
    return width, height


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
    from latentreason.inference import load_run, predict

    run = load_run(custom_run["run"])
    plain = predict(run, ["b a c"], steps=5, halt=False)
    (many,) = predict(run, ["b a c"], steps=5, halt=False, trajectories=4, noise=0.0)  # no noise: the one trajectory
    # the same answers; the probabilities to float32 rounding (4 rows in a batch round the last digits differently)
    assert (many.answer, many.per_step, many.halted_at) == (plain[0].answer, plain[0].per_step, plain[0].halted_at)
    assert many.halt_probabilities == pytest.approx(plain[0].halt_probabilities, rel=1e-5)
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


@pytest.mark.parametrize("command", ["train", "eval", "predict", "plot", "push", "export-task", "convert-trm"])
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
