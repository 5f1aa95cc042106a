"""State tracking in a permutation group (the S5 word problem): the task where fixed depth provably fails.

`k` cups (3, 4 or 5 for the groups S3, S4, S5) stand in a row; a ball starts under cup 1. Each step
rearranges the cups, and the output after each step is where the ball is now (`output: ball`) or the
whole arrangement (`output: state`). Aligned: one output cell per input step.

Layout, `group: s5`:

    input: elements   one cell per group element, in one-line notation: `31254` moves the cup at
                      position 1 to position 3, 2 to 1, 3 to 2, 4 to 5 and 5 to 4
    input: swaps      one cell per transposition: `13` swaps the cups at positions 1 and 3
    output: ball      the ball's position after each step (`1`..`k`)
    output: state     the whole arrangement after each step, in one-line notation (where the cup that
                      started at position i is now); `k!` labels

e.g. `input: swaps`, `output: ball`: input `12 23 15`, output `2 3 3` (1 -> 2 -> 3, and 15 leaves it).

Why it needs depth: composing a sequence of elements of S5 is NC1-complete (Barrington 1989), so
a transformer of constant depth cannot track it as the sequence grows (Merrill, Petty and Sabharwal
2024, "The Illusion of State in State-Space Models"; Liu et al. 2023, "Transformers Learn Shortcuts
to Automata": shortcuts of depth log(length) exist, constant-depth ones do not). S3 is solvable but
not abelian; running parity (Z2, the `parity` task) is the abelian, easy case. A recursive reasoner
can carry the state one step further per refinement, and keep going at test time.

No augmentation (identity): relabelling the cups would move the ball's start. Train and test never
share an input sequence.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Literal

from .common import Task, length_range, register_task

GROUP_SIZES = {"s3": 3, "s4": 4, "s5": 5}
MAX_LENGTH = 512


def compose(state: tuple[int, ...], element: tuple[int, ...]) -> tuple[int, ...]:
    """The arrangement after applying `element` to `state` (both in one-line notation, 1-based).

    `state[i]` is where the cup that started at position i+1 is now; `element[j]` is where the cup
    now at position j+1 goes. Example: `compose((2, 1, 3), (1, 3, 2)) == (3, 1, 2)`.
    """
    return tuple(element[position - 1] for position in state)


def transposition(a: int, b: int, size: int) -> tuple[int, ...]:
    """The element of S_size that swaps positions `a` and `b` (1-based), in one-line notation."""
    image = list(range(1, size + 1))
    image[a - 1], image[b - 1] = b, a
    return tuple(image)


def write_element(element: tuple[int, ...]) -> str:
    """One-line notation as one cell: `(3, 1, 2, 5, 4)` -> `"31254"`."""
    return "".join(map(str, element))


@dataclass
class PermutationsOptions:
    group: Literal["s3", "s4", "s5"] = field(default="s5", metadata={"help": "The group: s3, s4 or s5 (3, 4 or 5 cups)."})
    length: int = field(default=16, metadata={"help": f"Steps per sequence (at most {MAX_LENGTH}); the longest when `min_length` is set."})
    min_length: int | None = field(default=None, metadata={"help": "Fewest steps; lengths are drawn uniformly from min_length..length. Default: all have `length` steps."})
    input: Literal["elements", "swaps"] = field(default="swaps", metadata={"help": "`elements` (one cell per group element, e.g. 31254) or `swaps` (one cell per transposition, e.g. 13)."})
    output: Literal["ball", "state"] = field(default="ball", metadata={"help": "`ball` (the ball's position after each step) or `state` (the whole arrangement after each step)."})

    def __post_init__(self) -> None:
        if self.group not in GROUP_SIZES:
            raise ValueError(f"permutations `group` must be one of {sorted(GROUP_SIZES)}, got {self.group!r}.")
        self.min_length = length_range('permutations', self.length, self.min_length, MAX_LENGTH)
        if self.input not in ("elements", "swaps"):
            raise ValueError(f"permutations `input` must be 'elements' or 'swaps', got {self.input!r}.")
        if self.output not in ("ball", "state"):
            raise ValueError(f"permutations `output` must be 'ball' or 'state', got {self.output!r}.")


@register_task
class PermutationsTask(Task):
    """Track a ball (or the whole arrangement) under a sequence of permutations of 3-5 cups, per step."""

    name = "permutations"
    output_kind = "aligned"
    Options = PermutationsOptions
    default_num_train = 4000
    default_num_test = 256

    @property
    def size(self) -> int:
        """The number of cups."""
        return GROUP_SIZES[self.options.group]

    def labels(self) -> list[str]:
        if self.options.output == "ball":
            return [str(cup) for cup in range(1, self.size + 1)]
        return [write_element(p) for p in itertools.permutations(range(1, self.size + 1))]

    def steps(self) -> list[tuple[int, ...]]:
        """The elements an input cell can hold: every transposition (`swaps`) or every element of the group."""
        if self.options.input == "swaps":
            return [transposition(a, b, self.size) for a, b in itertools.combinations(range(1, self.size + 1), 2)]
        return list(itertools.permutations(range(1, self.size + 1)))

    def write_step(self, element: tuple[int, ...]) -> str:
        """An input cell: `13` for a transposition (`swaps`), one-line notation for an element (`elements`)."""
        if self.options.input == "swaps":
            moved = [position for position, image in enumerate(element, start=1) if position != image]
            if len(moved) != 2:
                raise ValueError(f"{write_element(element)} is not a transposition.")
            return f"{moved[0]}{moved[1]}"
        return write_element(element)

    def _generate(self, rng: random.Random) -> dict[str, str]:
        choices = self.steps()
        sequence = [rng.choice(choices) for _ in range(rng.randint(self.options.min_length, self.options.length))]
        state = tuple(range(1, self.size + 1))
        outputs = []
        for element in sequence:
            state = compose(state, element)
            outputs.append(str(state[0]) if self.options.output == "ball" else write_element(state))
        return {"input": " ".join(map(self.write_step, sequence)), "output": " ".join(outputs)}
