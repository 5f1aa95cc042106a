"""The `Task` interface and the task registry.

A task is a small class (as in nanochat's `tasks/common.py`) that knows four things: how its
examples are made (generated from a seed, or read from a packaged data set), how an example is
written as text for a backbone's tokenizer (`{"input": str, "output": str}`, cells separated by
whitespace), how an answer is scored (per cell and exact), and which augmentations keep an example
valid. Tasks register by name, so recipes say `data.task: sudoku` and Python says
`get_task("sudoku", size=6)`.

Generated examples are deterministic: example `i` of a split is drawn from a random generator seeded
by (task, seed, split, i). Train and test never overlap: the test split is drawn first, and a train
draw whose `canonical_key` is in the test split is rejected and redrawn.

Augmentation is materialised: with `augment=True` the train dataset holds every example plus
`augment_copies` augmented copies of it. Fixed rows (rather than a fresh random transform on every
read) keep the dataset fingerprint stable, which the frozen-feature cache relies on.

Example:
    >>> from latentreason.tasks import get_task
    >>> task = get_task("parity", length=4, num_train=8, num_test=4)
    >>> example = task.get_example("train", 0)
    >>> len(example["input"].split()) == len(example["output"].split()) == 4
    True
    >>> task.score("0 1 1 0", "0 1 0 0")
    {'cell_accuracy': 0.75, 'exact': 0.0}
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ..config import OutputKind

if TYPE_CHECKING:
    import datasets

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

# A train draw that collides with the test split is redrawn; a task whose space of examples is too
# small for the requested test split would loop forever without this bound.
MAX_DRAWS_PER_EXAMPLE = 1000

TASKS: dict[str, type[Task]] = {}


@dataclasses.dataclass
class NoOptions:
    """A task without options of its own."""


class Task:
    """Base class of a task: subclasses set `name`, `output_kind`, `Options` and implement `_generate`.

    Subclasses with generated examples implement `_generate(rng) -> {"input", "output"}`; subclasses
    with stored examples (ARC) override `num_examples` and `get_example` instead.

    Args:
        seed: seeds every generated example (same seed, same examples, on any machine).
        num_train, num_test: examples per split (None: the task's default; for ARC, all there are).
        augment: whether the train dataset (`to_dataset`, `export_jsonl`) adds augmented copies.
            Stored as `augment_enabled`, since `augment(example, rng)` is the method that transforms.
        augment_copies: augmented copies added per train example when `augment` is on.
        **options: the task's own options, the fields of its `Options` dataclass (see `option_help()`).

    `output_kind` says how the output relates to the input: `"aligned"` (one output cell per input
    cell), `"label"` (one label per example) or `"text"` (free text, such as an ARC answer grid).
    """

    name: ClassVar[str]
    output_kind: ClassVar[OutputKind]
    Options: ClassVar[type] = NoOptions  # a dataclass whose fields are the task's own options, with help texts
    default_num_train: ClassVar[int | None] = 1000
    default_num_test: ClassVar[int | None] = 200

    def __init__(
        self,
        *,
        seed: int = 0,
        num_train: int | None = None,
        num_test: int | None = None,
        augment: bool = False,
        augment_copies: int = 1,
        **options: Any,
    ) -> None:
        known = {field.name for field in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(known | {"seed", "num_train", "num_test", "augment", "augment_copies"}))
            raise ValueError(f"Task {self.name!r} has no option {', '.join(map(repr, unknown))}; its options are: {valid}.")
        self.options = self.Options(**options)
        self.seed = seed
        self.num_train = self.default_num_train if num_train is None else num_train
        self.num_test = self.default_num_test if num_test is None else num_test
        self.augment_enabled = augment
        self.augment_copies = augment_copies
        for label, value in (("num_train", self.num_train), ("num_test", self.num_test)):
            if value is not None and value < 0:
                raise ValueError(f"`{label}` must be >= 0, got {value}.")
        if augment_copies < 1:
            raise ValueError(f"`augment_copies` must be >= 1 (copies per train example when augment=True), got {augment_copies}.")
        self._examples: dict[tuple[str, int], dict[str, str]] = {}
        self._test_keys: set[str] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, num_train={self.num_train}, num_test={self.num_test}, {self.options})"

    @classmethod
    def option_help(cls) -> dict[str, str]:
        """Each task-specific option and its help text."""
        return {field.name: field.metadata.get("help", "") for field in dataclasses.fields(cls.Options)}

    # --- what subclasses provide -----------------------------------------------------------------
    def labels(self) -> list[str] | None:
        """The fixed output vocabulary (cells an answer may contain), or None for free text."""
        return None

    def _generate(self, rng: random.Random) -> dict[str, str]:
        raise NotImplementedError(f"Task {self.name!r} must implement `_generate` or override `get_example`.")

    def canonical_key(self, example: dict[str, str]) -> str:
        """What identifies a puzzle for the train/test overlap check (default: its input text).

        Tasks whose augmentations map a puzzle onto another override this with a form shared by all
        variants, so a test puzzle never appears in training in disguise.
        """
        return example["input"]

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """A randomly transformed copy of `example` that is still a valid example (identity here)."""
        return dict(example)

    # --- examples --------------------------------------------------------------------------------
    def num_examples(self, split: Split) -> int:
        """Number of (unaugmented) examples in `split`."""
        _check_split(split)
        return self.num_train if split == "train" else self.num_test

    def get_example(self, split: Split, index: int) -> dict[str, str]:
        """Example `index` of `split` as `{"input": str, "output": str}` (deterministic, cached)."""
        _check_split(split)
        if not 0 <= index < self.num_examples(split):
            raise IndexError(f"Example {index} is out of range: split {split!r} of task {self.name!r} has {self.num_examples(split)}.")
        if (split, index) not in self._examples:
            self._examples[split, index] = self._draw(split, index)
        return dict(self._examples[split, index])

    def _draw(self, split: Split, index: int) -> dict[str, str]:
        forbidden = self._test_split_keys() if split == "train" else set()
        for attempt in range(MAX_DRAWS_PER_EXAMPLE):
            example = self._generate(seeded_rng(self.name, self.seed, self._generation_options(), split, index, attempt))
            if self.canonical_key(example) not in forbidden:
                return example
        raise RuntimeError(
            f"Task {self.name!r}: {MAX_DRAWS_PER_EXAMPLE} draws for train example {index} all collided with the test split; "
            f"the space of puzzles is too small for num_test={self.num_test}. Lower `num_test` or make puzzles larger."
        )

    def _generation_options(self) -> str:
        """The options that shape generated puzzles (fields marked `{"augmentation": True}` do not)."""
        fields = dataclasses.fields(self.options)
        return repr([(f.name, getattr(self.options, f.name)) for f in fields if not f.metadata.get("augmentation")])

    def _test_split_keys(self) -> set[str]:
        if self._test_keys is None:
            self._test_keys = {self.canonical_key(self.get_example("test", i)) for i in range(self.num_examples("test"))}
        return self._test_keys

    def examples(self, split: Split) -> list[dict[str, str]]:
        """All rows of `split` as the dataset holds them (train rows augmented when `augment=True`)."""
        rows = [self.get_example(split, index) for index in range(self.num_examples(split))]
        if split == "train" and self.augment_enabled:
            rows = [
                variant
                for index, row in enumerate(rows)
                for variant in [row]
                + [self.augment(row, seeded_rng(self.name, self.seed, "augment", index, copy)) for copy in range(self.augment_copies)]
            ]
        return [{"input": row["input"], "output": row["output"]} for row in rows]

    def to_dataset(self, split: Split) -> datasets.Dataset:
        """The split as a `datasets.Dataset` with exactly the columns `input` and `output`."""
        import datasets  # imported here: generating examples should not pay for loading `datasets`

        rows = self.examples(split)
        return datasets.Dataset.from_dict({"input": [r["input"] for r in rows], "output": [r["output"] for r in rows]})

    def export_jsonl(self, path: str, split: Split) -> None:
        """Write the split as JSON Lines, one `{"input": ..., "output": ...}` object per line."""
        self.to_dataset(split).to_json(path, lines=True, force_ascii=False)

    # --- scoring ---------------------------------------------------------------------------------
    def score(self, prediction: str, target: str) -> dict[str, float]:
        """Per-cell accuracy (cells compared by position; missing or extra cells count as wrong) and exact match."""
        return score_cells(prediction, target)


def score_cells(prediction: str, target: str) -> dict[str, float]:
    """Compare whitespace-separated cells by position. Example: `score_cells("1 2", "1 3")["cell_accuracy"] == 0.5`."""
    predicted, wanted = prediction.split(), target.split()
    length = max(len(predicted), len(wanted))
    if length == 0:
        return {"cell_accuracy": 1.0, "exact": 1.0}
    right = sum(p == t for p, t in zip(predicted, wanted))
    return {"cell_accuracy": right / length, "exact": float(predicted == wanted)}


def length_range(task: str, length: int, min_length: int | None, maximum: int | None = None) -> int:
    """Check a task's `length` (1..maximum) and `min_length` (1..length); returns `min_length`, `length` when unset."""
    if length < 1 or (maximum is not None and length > maximum):
        raise ValueError(f"{task} `length` must be " + (f"in 1..{maximum}" if maximum is not None else ">= 1") + f", got {length}.")
    min_length = length if min_length is None else min_length
    if not 1 <= min_length <= length:
        raise ValueError(f"{task} `min_length` must be in 1..length ({length}), got {min_length}.")
    return min_length


def seeded_rng(*parts: object) -> random.Random:
    """A random generator seeded by a stable digest of `parts` (the same on every run and platform)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {SPLITS}.")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task available by its `name` to `get_task` and recipes."""
    if not getattr(cls, "name", None):
        raise ValueError(f"{cls.__name__} needs a class attribute `name` to be registered.")
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"A task named {cls.name!r} is already registered ({TASKS[cls.name].__name__}).")
    TASKS[cls.name] = cls
    return cls


def list_tasks() -> list[str]:
    """Names of the registered tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str, **options: Any) -> Task:
    """Build a registered task by name. Example: `get_task("sudoku", size=6, givens=14, seed=1)`."""
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; registered tasks: {', '.join(list_tasks())}.")
    return TASKS[name](**options)
