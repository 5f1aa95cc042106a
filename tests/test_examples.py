"""Every example runs in its smoke mode (a tiny local model, a handful of steps), so examples never rot.

`quickstart.py` runs as a script in a subprocess, exactly as a user runs it; the others are loaded
from their files and their `main(argv)` is called in this process (same code path, without paying
for a fresh interpreter and imports each time). Each test checks what the example promises to
produce, not only that it exits cleanly. `text_generation.py` is tested by the text-outputs tests.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in a temporary folder with its own feature cache, offline."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATENTREASON_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return tmp_path


def test_quickstart_smoke_as_a_script(workdir: Path) -> None:
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="2")
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py"), "--smoke", "--output-dir", "out"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    out = result.stdout
    assert "reloaded reasoner gives the same answer: True" in out
    assert "trainable params:" in out
    # One line per refinement step (max_supervision_steps=2 in smoke mode), each a 4x4 grid of digits 1-4.
    steps = [line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 2 and all(len(cells) == 16 and set(cells) <= set("1234") for cells in steps)
    saved = workdir / "out" / "sudoku-reasoner"
    assert {"reasoner_config.json", "reasoner.safetensors", "README.md", "eval_results.json"} <= {p.name for p in saved.iterdir()}
    config = json.loads((saved / "reasoner_config.json").read_text())
    assert config["label_names"] == ["1", "2", "3", "4"] and config["output"] == "token_classification"
    assert len(json.loads((saved / "eval_results.json").read_text())["per_step"]) == 2


def test_custom_pairs_with_your_own_columns_and_labels(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A CSV with its own column names and one label per row: the run must find the columns and build a sequence classifier.
    rows = [("3 1 2", "unsorted"), ("1 2 3", "sorted"), ("2 3 1", "unsorted"), ("1 3 3", "sorted")] * 4
    for name, selected in (("mine.csv", rows), ("mine_test.csv", rows[:4])):
        with open(name, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "question", "answer"])
            writer.writerows((index, q, a) for index, (q, a) in enumerate(selected))
    load_example("custom_pairs").main(
        ["--smoke", "--csv", "mine.csv", "--eval-csv", "mine_test.csv", "--input-column", "question", "--output-column", "answer", "--output-dir", "out"]
    )
    out = capsys.readouterr().out
    run = workdir / "out" / "run"
    config = json.loads((run / "reasoner_config.json").read_text())
    assert config["output"] == "sequence_classification"
    assert config["label_names"] == ["sorted", "unsorted"]
    assert (run / "recipe.yaml").is_file()
    assert "input:   3 1 2" in out
    answers = [line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("step ")]
    assert len(answers) == 2 and set(answers) <= {"sorted", "unsorted"}


def test_visualize_refinement_writes_one_panel_per_step(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from matplotlib.image import imread

    from latentreason.visualize import DPI, PANEL_INCHES, TITLE_INCHES

    load_example("visualize_refinement").main(["--smoke", "--output-dir", "out"])
    out = capsys.readouterr().out
    steps = [line for line in out.splitlines() if line.startswith("step ")]
    assert len(steps) == 3  # max_supervision_steps=3 in smoke mode
    picture = imread(workdir / "out" / "refinement.png")
    assert picture.shape[:2] == (round((PANEL_INCHES + TITLE_INCHES) * DPI), round(3 * PANEL_INCHES * DPI))
    assert imread(workdir / "out" / "accuracy_per_step.png").shape[:2] == (350, 500)
    accuracies = out.split("cell accuracy after each refinement step: ")[1].splitlines()[0].split(", ")
    (written,) = list((workdir / "out").rglob("eval_results.json"))  # what evaluate_run wrote for the curve
    assert accuracies == [f"{row['accuracy']:.2f}" for row in json.loads(written.read_text())["per_step"]]


def test_publish_smoke_lists_the_files_and_uploads_nothing(workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    example = load_example("publish")

    def no_upload(*args: object, **kwargs: object) -> None:
        raise AssertionError("smoke mode must never upload")

    monkeypatch.setattr(example, "push_folder", no_upload)
    example.main(["--smoke", "--push", "--repo-id", "someone/tiny-reasoner", "--output-dir", "out"])
    out = capsys.readouterr().out
    listed = out.split("files for someone/tiny-reasoner:")[1].split("model card")[0].split()
    assert "reasoner_config.json" in listed and "reasoner.safetensors" in listed
    assert not any("tiny-bert" in name or name.endswith((".bin", ".pt")) for name in listed)  # never the base model
    assert "LatentReasonerModel.from_pretrained('someone/tiny-reasoner')" in out  # the card loads the repo
    assert "nothing uploaded" in out


def test_publish_without_a_saved_reasoner_says_what_to_do(workdir: Path) -> None:
    with pytest.raises(SystemExit, match="train and save a reasoner first"):
        load_example("publish").main(["--reasoner", "missing-folder"])


# example -> the test that runs it in smoke mode
SMOKE_RUNS = {
    "quickstart": "test_examples.py::test_quickstart_smoke_as_a_script",
    "custom_pairs": "test_examples.py::test_custom_pairs_with_your_own_columns_and_labels",
    "visualize_refinement": "test_examples.py::test_visualize_refinement_writes_one_panel_per_step",
    "publish": "test_examples.py::test_publish_smoke_lists_the_files_and_uploads_nothing",
    "text_generation": "test_text_outputs.py::test_example_smoke_mode_runs_end_to_end",
}


def test_every_example_has_a_smoke_mode_that_a_test_runs(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A new example needs a smoke run here; each example's own command line offers `--smoke`."""
    assert sorted(SMOKE_RUNS) == sorted(path.stem for path in EXAMPLES.glob("*.py"))
    for name, test in SMOKE_RUNS.items():
        file, _, function = test.partition("::")
        assert f"def {function}(" in (REPO / "tests" / file).read_text(encoding="utf-8"), f"{test} (the smoke run of {name}) is gone"
        monkeypatch.setattr(sys, "argv", [f"{name}.py", "--help"])
        with pytest.raises(SystemExit) as exited:
            main = load_example(name).main
            main(["--help"]) if main.__code__.co_argcount else main()
        assert exited.value.code == 0
        assert "--smoke" in capsys.readouterr().out, f"examples/{name}.py --help lists no --smoke option"
