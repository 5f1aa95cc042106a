"""The demo app (`latentreason app`, `push --with-app`) on a tiny 4x4 Sudoku run.

What the page shows is checked against the model itself, and the page is driven in a real browser:
Debian's chromium, headless, through selenium and chromium-driver, typing an input, pressing Refine and
reading the answer after each step off the page. The browser test is skipped (saying what to install)
where chromium, chromium-driver, gradio or selenium is missing; `.ci/run` installs them.
"""

from __future__ import annotations

import ast
import io
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import matplotlib.image
import pytest
import torch
from conftest import TINY_SUDOKU_STEPS
from huggingface_hub import HfApi

from latentreason import app, cli
from latentreason.inference import load_run
from latentreason.visualize import run_example

STEPS = TINY_SUDOKU_STEPS
PUZZLE = "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1"  # typed by hand: not one of the run's own examples


@pytest.fixture(scope="module")
def tiny_run(tiny_sudoku_run: str) -> str:
    return tiny_sudoku_run


@pytest.fixture(scope="module")
def run(tiny_run: str):
    return load_run(tiny_run)


def answers_by_hand(run, text: str, steps: int) -> tuple[list[str], list[float]]:
    """The answer and halt probability after each step, straight from `model.refine` and the encoder."""
    row = run.encoder.encode_input(text)
    input_ids = torch.tensor([row["input_ids"]])
    with torch.no_grad():
        refined = run.model.refine(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), steps=steps, halt=False)
    answers = [run.encoder.decode(logits[0], row["cell_positions"]) for logits in refined.step_logits]
    return answers, [float(torch.sigmoid(logits[0])) for logits in refined.step_halt_logits]


def png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def test_the_table_holds_the_answer_and_halt_probability_after_each_step(run) -> None:
    answers, probabilities = answers_by_hand(run, PUZZLE, 5)  # past the trained N_sup (3): the slider goes there too
    refinement = app.refine_input(run, f"  {PUZZLE}\n", 5)
    assert [row.step for row in refinement.steps] == [1, 2, 3, 4, 5]
    assert [row.answer for row in refinement.steps] == answers
    assert [row.halt_probability for row in refinement.steps] == pytest.approx(probabilities, abs=1e-6)
    assert all(len(answer.split()) == 16 for answer in answers)  # one digit per cell of the 4x4 grid
    # The picture is the one `latentreason plot` draws for the same answers (no target: uncoloured).
    from latentreason.visualize import refinement_figure

    assert png_bytes(refinement.figure) == png_bytes(refinement_figure("sudoku", PUZZLE, answers, None))
    # The HTML table carries the same rows, in the cells the browser test reads.
    table = app.steps_table(refinement.steps)
    assert table.count('<tr class="step">') == 5
    assert f'<td class="answer"><code>{answers[3]}</code></td><td class="halt">{probabilities[3]:.3f}</td>' in table


def test_the_summary_names_the_step_where_halting_would_stop(tiny_run: str) -> None:
    run = load_run(tiny_run)
    _, probabilities = answers_by_hand(run, PUZZLE, 4)
    # A threshold just under the k-th largest probability: halting stops at the first step above it.
    for threshold in sorted({min(max(p - 1e-4, 1e-3), 0.999) for p in probabilities}):
        run.model.config = run.model.config.replace(halt_threshold=threshold)
        expected = next(step for step, p in enumerate(probabilities, start=1) if p > threshold)
        summary = app.refine_input(run, PUZZLE, 4).summary
        assert f"refinement stops at step {expected} " in summary, (threshold, probabilities, summary)
    run.model.config = run.model.config.replace(halt_threshold=min(max(probabilities) + 1e-4, 0.9999))
    assert "with halting on, all steps run" in app.refine_input(run, PUZZLE, 4).summary


def test_bad_inputs_are_clear_errors(run) -> None:
    with pytest.raises(ValueError, match="Type an input first"):
        app.refine_input(run, "   ", 2)
    with pytest.raises(ValueError, match="steps must be a whole number >= 1"):
        app.refine_input(run, PUZZLE, 0)


def test_example_inputs_are_the_runs_own_test_inputs(run) -> None:
    assert app.example_inputs(run) == [run_example(run.recipe, f"test:{index}")[0] for index in range(app.MAX_EXAMPLES)]


def test_a_saved_adapter_without_its_recipe_serves_the_same_answers(run, tmp_path) -> None:
    folder = tmp_path / "adapter"
    run.model.save_pretrained(folder)
    adapter = app.load_source(str(folder))
    refinement = app.refine_input(adapter, PUZZLE, STEPS)
    assert [row.answer for row in refinement.steps] == [row.answer for row in app.refine_input(run, PUZZLE, STEPS).steps]
    assert refinement.figure is None  # no recipe, so no task to draw
    assert app.example_inputs(adapter) == []


def test_space_files_serve_the_pushed_repo() -> None:
    files = app.space_files("user/sudoku-reasoner")
    tree = ast.parse(files["app.py"])
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "build_app"]
    assert [ast.literal_eval(call.args[0]) for call in calls] == ["user/sudoku-reasoner"]
    requirements = files["requirements.txt"].split()
    assert requirements[0].startswith("latentreason[app]>=") and app.GRADIO_REQUIREMENT in requirements


def test_push_with_app_uploads_the_space_files(tiny_run: str, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys) -> None:
    uploaded: dict[str, Any] = {}

    def upload_folder(self: HfApi, **kwargs: Any) -> str:
        uploaded["patterns"] = kwargs["allow_patterns"]
        uploaded["files"] = {path.name: path.read_text() for path in Path(kwargs["folder_path"]).iterdir() if path.suffix in (".py", ".txt")}
        return "https://huggingface.co/user/sudoku-reasoner"

    monkeypatch.setattr(HfApi, "whoami", lambda self, *args, **kwargs: {"name": "user"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    assert cli.main(["push", tiny_run, "user/sudoku-reasoner", "--allow-local-base", "--with-app"]) == 0
    assert uploaded["files"] == app.space_files("user/sudoku-reasoner")
    assert {"app.py", "requirements.txt"} <= set(uploaded["patterns"])
    assert "create a Space" in capsys.readouterr().out

    uploaded.clear()
    assert cli.main(["push", tiny_run, "user/sudoku-reasoner", "--allow-local-base"]) == 0
    assert uploaded["files"] == {} and "app.py" not in uploaded["patterns"]


def test_app_without_gradio_says_how_to_install_it(tiny_run: str, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` raises ImportError
    assert cli.main(["app", tiny_run]) == 2
    assert f"latentreason app: error: The demo app needs gradio, which is not installed: {app.INSTALL}" in capsys.readouterr().err


# --- in a real browser -------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
WINDOW = (1200, 1400)


def missing_for_the_browser() -> str | None:
    import importlib.util

    missing = [name for name in ("gradio", "selenium") if importlib.util.find_spec(name) is None]
    if missing:
        return f"needs {' and '.join(missing)} (pip install -e '.[dev]')"
    if not (CHROMIUM and CHROMEDRIVER):
        return "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    reason = missing_for_the_browser()
    if reason:
        pytest.skip(f"the browser test of the app {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_typing_an_input_in_a_browser_shows_the_answer_after_each_step(run, tiny_run: str, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    page = app.build_app(run, steps=STEPS, title="sudoku_4x4")
    port = free_port()
    page.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 60)
        box = wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "#input textarea"))
        assert box.get_attribute("value") == app.example_inputs(run)[0]  # the page opens on the run's first test input
        box.clear()
        box.send_keys(PUZZLE)
        browser.find_element(By.ID, "refine").click()
        rows = wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#steps-table tr.step"))
        shown = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")] for row in rows]
        answers, probabilities = answers_by_hand(run, PUZZLE, STEPS)
        assert shown == [[str(step), answer, f"{p:.3f}"] for step, (answer, p) in enumerate(zip(answers, probabilities), start=1)]
        summary = " ".join(browser.find_element(By.ID, "summary").text.split())
        assert f"Answer after {STEPS} steps: {answers[-1]}" in summary
        wait.until(lambda driver: driver.find_elements(By.CSS_SELECTOR, "#picture img"))  # the grids, drawn

        screenshot = os.environ.get("LATENTREASON_APP_SCREENSHOT") or str(Path(tiny_run) / "app.png")
        browser.save_screenshot(screenshot)
        image = matplotlib.image.imread(screenshot)
        assert image.shape[1] == WINDOW[0] and image[..., :3].std() > 0.05  # the page, not a blank window
    finally:
        page.close()
