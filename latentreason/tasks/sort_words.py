"""Sorting lists of numbers written as words (or digits): a control task.

Layout: input `"seventeen three forty-two"`, output `"three seventeen forty-two"` (ascending, duplicates
kept), aligned per position. Every number is one cell: compound words are hyphenated
(`forty-two`, `three-hundred-five`), so whitespace splits cells exactly.

Why a control: ranking a list is one round of parallel comparisons (each item's rank is the count of
smaller items), so depth of computation does not grow with the list; a one-pass attention head
should do as well as the recursion here. If recursion helps much more on this task than on Sudoku or
addition, something other than reasoning depth is at work.

Augmentation: shuffling the input order (the sorted output stays the same). The overlap check keys
a list by its multiset, so no reordering of a test list is ever trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .common import Task, length_range, register_task

MAX_LENGTH = 64
MAX_WORD_VALUE = 999
MAX_DIGIT_VALUE = 9999  # labels() lists every value: keep the output vocabulary small
_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_to_word(value: int) -> str:
    """English words for 0..999 as one hyphenated cell. Example: `number_to_word(342) == "three-hundred-forty-two"`."""
    if not 0 <= value <= MAX_WORD_VALUE:
        raise ValueError(f"Number words cover 0..{MAX_WORD_VALUE}, got {value}.")
    hundreds, rest = divmod(value, 100)
    parts = [f"{_ONES[hundreds]}-hundred"] if hundreds else []
    if rest >= 20:
        parts.append(_TENS[rest // 10] + (f"-{_ONES[rest % 10]}" if rest % 10 else ""))
    elif rest or not hundreds:
        parts.append(_ONES[rest])
    return "-".join(parts)


@dataclass
class SortWordsOptions:
    length: int = field(default=8, metadata={"help": f"Items per list (at most {MAX_LENGTH}); the longest list when `min_length` is set."})
    min_length: int | None = field(default=None, metadata={"help": "Shortest list; lengths are drawn uniformly from min_length..length. Default: all lists have `length` items."})
    max_value: int = field(default=99, metadata={"help": f"Numbers are drawn from 0..max_value (at most {MAX_WORD_VALUE} as words, {MAX_DIGIT_VALUE} as digits)."})
    as_digits: bool = field(default=False, metadata={"help": "Write numbers as digits (`42`) instead of words (`forty-two`)."})

    def __post_init__(self) -> None:
        self.min_length = length_range('sort_words', self.length, self.min_length, MAX_LENGTH)
        limit = MAX_DIGIT_VALUE if self.as_digits else MAX_WORD_VALUE
        if not 1 <= self.max_value <= limit:
            raise ValueError(f"sort_words `max_value` must be in 1..{limit} (as_digits={self.as_digits}), got {self.max_value}.")


@register_task
class SortWordsTask(Task):
    """Sort a list of number words (a control: sorting is one round of parallel comparisons, not deep serial work)."""

    name = "sort_words"
    output_kind = "aligned"
    Options = SortWordsOptions

    def write(self, value: int) -> str:
        """One number as a cell, in this task's notation."""
        return str(value) if self.options.as_digits else number_to_word(value)

    def labels(self) -> list[str]:
        return [self.write(value) for value in range(self.options.max_value + 1)]

    def _generate(self, rng: random.Random) -> dict[str, str]:
        length = rng.randint(self.options.min_length, self.options.length)
        values = [rng.randint(0, self.options.max_value) for _ in range(length)]
        return {"input": " ".join(map(self.write, values)), "output": " ".join(map(self.write, sorted(values)))}

    def canonical_key(self, example: dict[str, str]) -> str:
        """The sorted list: every ordering of the same numbers is the same puzzle."""
        return example["output"]

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """The same numbers in a new random order (the answer does not change)."""
        items = example["input"].split()
        rng.shuffle(items)
        return {**example, "input": " ".join(items)}
