"""A demo app: type an input, press a button, watch the reasoner refine its answer step by step.

    build_app(source)      a `gradio.Blocks` page for a run folder, a saved adapter folder or a Hub id: an input
                           box, a steps slider and a button; it shows the answer after each refinement step with
                           the halting head's probability, and for the grid tasks (sudoku, maze, arc) their picture
    launch(source)         build the page and serve it: what `latentreason app RUN_DIR_OR_HUB_ID` runs
    space_files(repo_id)   app.py and requirements.txt of a Hugging Face Space that serves a pushed adapter

The page calls `refine_input`, plain Python with no gradio in it (what most tests call). Every step
is shown, so refinement runs with halting off; the step at which halting would have stopped is named
under the table. gradio is an optional dependency (`pip install 'latentreason[app]'`), imported only
when a page is built.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from . import __version__
from . import recipe as recipes
from .inference import Prediction, Run, load_run, predict, run_for_model
from .model import LatentReasonerModel
from .visualize import GRID_TASKS, refinement_figure, run_example

if TYPE_CHECKING:
    import gradio

INSTALL = "pip install 'latentreason[app]'"
GRADIO_REQUIREMENT = "gradio>=6.31"  # as the `app` extra in pyproject.toml says
MAX_EXAMPLES = 3  # example inputs from the run's own test data, offered under the input box
DEPTH_FACTOR = 4  # the slider reaches this many times the trained N_sup: the reasoner may refine past its training depth


@dataclass
class Step:
    """One row of the page's table: the answer after a refinement step, and the halting head's probability then."""

    step: int
    answer: str
    halt_probability: float | None  # None: the run has no halting readout (the LM output paths)


@dataclass
class Refinement:
    """What the page shows for one input: a row per refinement step, a line on halting, the picture (grid tasks)."""

    steps: list[Step]
    summary: str  # Markdown: the answer, and where halting would have stopped
    figure: Figure | None  # the answer after each step drawn as a grid; None for the other tasks


def load_source(source: str) -> Run:
    """A run folder (it has a recipe.yaml) through `load_run`; a saved adapter folder or a Hub id on the base its config names.

    An adapter without a recipe knows no task, so it gets the table of answers but no grid picture.
    """
    if os.path.isfile(os.path.join(source, recipes.RECIPE_NAME)):
        return load_run(source)
    model = LatentReasonerModel.from_pretrained(source)
    config = model.config
    if config.base_model_name_or_path is None:
        raise ValueError(f"{source} names no base model in its config, so the app has no tokenizer for its inputs: serve its run folder instead.")
    recipe = recipes.Recipe(model=recipes.ModelSection(base=config.base_model_name_or_path, revision=config.base_model_revision))
    return run_for_model(model, recipe)


def refine_input(run: Run, text: str, steps: int) -> Refinement:
    """Refine `text` (an input in the run's data format) `steps` times, halting off: the page's table, halting line and picture.

    Example:
        >>> run = load_source("runs/sudoku_4x4")                                       # doctest: +SKIP
        >>> refinement = refine_input(run, "1 0 0 4 0 0 1 0 0 1 0 0 4 0 0 1", steps=3)  # doctest: +SKIP
        >>> [row.step for row in refinement.steps]                                     # doctest: +SKIP
        [1, 2, 3]
    """
    text = text.strip()
    if not text:
        raise ValueError("Type an input first, in the format of the run's training data (e.g. `1 0 0 4 ...` for a 4x4 Sudoku).")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a whole number >= 1 of refinement steps, got {steps!r}.")
    (prediction,) = predict(run, [text], steps=steps, halt=False)
    probabilities: list[float | None] = list(prediction.halt_probabilities) or [None] * len(prediction.per_step)
    rows = [Step(step, answer, probability) for step, (answer, probability) in enumerate(zip(prediction.per_step, probabilities), start=1)]
    task = run.recipe.data.task
    figure = refinement_figure(task, text, prediction.per_step, None) if task in GRID_TASKS else None
    return Refinement(rows, halting_summary(run, prediction), figure)


def halting_summary(run: Run, prediction: Prediction) -> str:
    """The answer, and the first step whose halt probability passes the run's threshold (where `predict --halt` stops)."""
    config = run.model.config
    answer = f"**Answer after {len(prediction.per_step)} steps:** `{prediction.answer}`"
    if not prediction.halt_probabilities:
        return f"{answer}\n\nThis run's LM writes the answer (output={config.output}): there is no halting readout."
    if not config.halting:
        return f"{answer}\n\nThis run was trained without halting (reasoner.halting=false): its halt probabilities are an untrained head's."
    threshold = config.halt_threshold
    halted = next((step for step, probability in enumerate(prediction.halt_probabilities, start=1) if probability > threshold), None)
    if halted is None:
        return f"{answer}\n\nThe halt probability stays at or below the threshold {threshold:g} at every step: with halting on, all steps run."
    return (f"{answer}\n\nWith halting on, refinement stops at step {halted} (halt probability "
            f"{prediction.halt_probabilities[halted - 1]:.3f} > threshold {threshold:g}), answering `{prediction.per_step[halted - 1]}`.")


def steps_table(steps: list[Step]) -> str:
    """The table of answers as HTML: one row per step (`tr.step`), cells `td.step`, `td.answer`, `td.halt`."""
    rows = "".join(
        f'<tr class="step"><td class="step">{row.step}</td><td class="answer"><code>{html.escape(row.answer)}</code></td>'
        f'<td class="halt">{"" if row.halt_probability is None else f"{row.halt_probability:.3f}"}</td></tr>'
        for row in steps
    )
    return f'<table id="steps-table"><thead><tr><th>step</th><th>answer</th><th>halt probability</th></tr></thead><tbody>{rows}</tbody></table>'


def example_inputs(run: Run, count: int = MAX_EXAMPLES) -> list[str]:
    """Up to `count` inputs of the run's own test data (else its training data); none for an adapter without its data."""
    for split in ("test", "train"):
        inputs: list[str] = []
        try:
            while len(inputs) < count:
                inputs.append(run_example(run.recipe, f"{split}:{len(inputs)}")[0])
        except (ValueError, FileNotFoundError):  # out of range, no such split, no data named, or the data is not on this machine
            pass
        if inputs:
            return inputs
    return []


def import_gradio() -> Any:
    """gradio, or an ImportError that says how to install it."""
    try:
        import gradio
    except ImportError as error:
        raise ImportError(f"The demo app needs gradio, which is not installed: {INSTALL}") from error
    return gradio


def build_app(source: str | Run, *, steps: int | None = None, title: str | None = None) -> gradio.Blocks:
    """The demo page for `source` (a run folder, a saved adapter folder, a Hub id, or a loaded `Run`).

    The slider runs from 1 to `DEPTH_FACTOR` x the run's `max_supervision_steps` (the reasoner may refine
    past its training depth; further if `steps` asks); it starts at `steps`, else the recipe's
    `eval.steps`, else N_sup. `title` names the page (default: the folder's or repo's name).

    Example:
        >>> build_app("runs/sudoku_4x4").launch()        # doctest: +SKIP
    """
    gr = import_gradio()
    run = source if isinstance(source, Run) else load_source(source)
    deepest = run.model.config.max_supervision_steps
    start = steps if steps is not None else (run.recipe.eval.steps or deepest)
    if isinstance(start, bool) or not isinstance(start, int) or start < 1:
        raise ValueError(f"steps must be a whole number >= 1 of refinement steps, got {start!r}.")
    name = title or (os.path.basename(os.path.normpath(source)) if isinstance(source, str) else "latentreason")
    grid = run.recipe.data.task in GRID_TASKS
    examples = example_inputs(run)

    def respond(text: str, steps: float) -> tuple[Any, ...]:
        try:
            refinement = refine_input(run, text, int(steps))  # a slider hands over a float
        except ValueError as error:  # a bad input (empty, too long, not a grid): said on the page
            raise gr.Error(str(error)) from error
        return (steps_table(refinement.steps), refinement.summary, *((refinement.figure,) if grid else ()))

    with gr.Blocks(title=f"latentreason: {name}", analytics_enabled=False) as app:
        gr.Markdown(f"# {name}\nType an input in the format of the run's training data and press **Refine** to see "
                    "the answer after each refinement step, with the halting head's probability that it is right.")
        text = gr.Textbox(label="input", value=examples[0] if examples else "", lines=2, elem_id="input")
        if examples:
            gr.Examples([[example] for example in examples], inputs=[text], label="inputs from the run's data")
        slider = gr.Slider(1, max(DEPTH_FACTOR * deepest, start), value=start, step=1, label="refinement steps", elem_id="steps")
        button = gr.Button("Refine", variant="primary", elem_id="refine")
        summary = gr.Markdown(elem_id="summary")
        table = gr.HTML(elem_id="table", label="answer after each refinement step")
        outputs = [table, summary]
        if grid:
            outputs.append(gr.Plot(label="the answer after each step", format="png", elem_id="picture"))
        button.click(respond, [text, slider], outputs)
        text.submit(respond, [text, slider], outputs)
    return app


def launch(source: str, *, host: str = "127.0.0.1", port: int = 7860, share: bool = False, steps: int | None = None) -> None:
    """Build the page for `source` and serve it at http://HOST:PORT until interrupted (`share`: a public gradio link too).

    Example:
        >>> launch("runs/sudoku_4x4", port=7861)          # doctest: +SKIP
    """
    build_app(source, steps=steps).launch(server_name=host, server_port=port, share=share)


SPACE_APP = '''"""A Hugging Face Space serving the latentreason adapter {repo_id!r}: `latentreason.app` builds the page."""

from latentreason.app import build_app

build_app({repo_id!r}).launch()
'''


def space_files(repo_id: str) -> dict[str, str]:
    """The files of a Hugging Face Space (gradio SDK) that serves the adapter pushed to `repo_id`: app.py, requirements.txt.

    Example:
        >>> sorted(space_files("user/sudoku-reasoner"))
        ['app.py', 'requirements.txt']
    """
    requirements = f"latentreason[app]>={__version__}\n{GRADIO_REQUIREMENT}\n"
    return {"app.py": SPACE_APP.format(repo_id=repo_id), "requirements.txt": requirements}
