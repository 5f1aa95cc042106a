"""The shell game in words: follow a ball under cups swapped in pairs, for the frozen LLM.

Layout (aligned, one output cell per whitespace-separated word):

    input:  The ball is under cup two. Swap cups one and three. Swap the second and the fifth cup. ...
    output: _   _    _  _     _   2    _    _    _   _   1      _    _   _      _   _   _     _   2   ...

Each sentence's last word carries the ball's position after that sentence (`1`..`cups`, the first
sentence's the starting position); every other word carries `_`. The last labelled cell is the
final position: with 5 cups, chance is 1/5.

The same game as `permutations` with `input: swaps, output: ball` (NC1-complete for 5 cups, by
Barrington's theorem), written as a person would tell it, so the test is whether a frozen language
model's features let a small reasoner follow it. Three test sets: `phrasing: train` (the training
phrasings); `phrasing: held_out` (phrasings never in training: other verbs such as exchange, switch
and trade places; digits instead of number words and ordinals; boxes and shells instead of cups);
and longer games than any in training (the `length` option). Every word of a held-out phrasing is a
plain English word or a digit, so a tokenizer splits it as it would any sentence.

No augmentation (identity). Train and test never share an input text.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from .common import Task, length_range, register_task

NOT_ANSWER = "_"
MAX_CUPS = 9
MAX_LENGTH = 256
NUMBER_WORDS = "zero one two three four five six seven eight nine".split()
ORDINALS = "zeroth first second third fourth fifth sixth seventh eighth ninth".split()

# Each phrasing is (start sentence, swap sentences). Placeholders: {noun} and {nouns} (singular and plural),
# {a}, {b} (the two positions, written by the phrasing set's number style), {a_th}, {b_th} (ordinals), {start}.
_TRAIN_START = ("The ball is under {noun} {start}.",)
_TRAIN_SWAPS = (
    "Swap {nouns} {a} and {b}.",
    "Swap the {a_th} and the {b_th} {noun}.",
    "Swap {noun} {a} with {noun} {b}.",
)
_HELD_OUT_START = ("A ball sits beneath {noun} {start}.", "The ball starts in {noun} {start}.")
_HELD_OUT_SWAPS = (
    "Exchange {nouns} {a} and {b}.",
    "{Nouns} {a} and {b} trade places.",
    "Switch the {a_th} and {b_th} {nouns}.",
    "Now {noun} {b} and {noun} {a} change places.",
)
PHRASINGS = {
    "train": {"nouns": (("cup", "cups"),), "numbers": "words", "start": _TRAIN_START, "swaps": _TRAIN_SWAPS},
    "held_out": {"nouns": (("box", "boxes"), ("shell", "shells")), "numbers": "digits", "start": _HELD_OUT_START, "swaps": _HELD_OUT_SWAPS},
}


@dataclass
class ShellGameOptions:
    cups: int = field(default=5, metadata={"help": f"Cups in the row (3..{MAX_CUPS}); 5 or more makes the game NC1-complete."})
    length: int = field(default=8, metadata={"help": f"Swaps per game (at most {MAX_LENGTH}); the most when `min_length` is set."})
    min_length: int | None = field(default=None, metadata={"help": "Fewest swaps; each game's count is drawn from min_length..length. Default: all have `length` swaps."})
    phrasing: Literal["train", "held_out"] = field(default="train", metadata={"help": "`train` (the training phrasings) or `held_out` (other verbs, digits, boxes and shells: never in training)."})

    def __post_init__(self) -> None:
        if not 3 <= self.cups <= MAX_CUPS:
            raise ValueError(f"shell_game `cups` must be in 3..{MAX_CUPS}, got {self.cups}.")
        self.min_length = length_range('shell_game', self.length, self.min_length, MAX_LENGTH)
        if self.phrasing not in PHRASINGS:
            raise ValueError(f"shell_game `phrasing` must be one of {sorted(PHRASINGS)}, got {self.phrasing!r}.")


@register_task
class ShellGameTask(Task):
    """Follow a ball under cups swapped in pairs, told in English; the ball's cup after every sentence."""

    name = "shell_game"
    output_kind = "aligned"
    Options = ShellGameOptions
    default_num_train = 4000
    default_num_test = 256

    def labels(self) -> list[str]:
        return [str(cup) for cup in range(1, self.options.cups + 1)] + [NOT_ANSWER]

    def _generate(self, rng: random.Random) -> dict[str, str]:
        style = PHRASINGS[self.options.phrasing]
        noun, nouns = rng.choice(style["nouns"])
        number = (lambda v: str(v)) if style["numbers"] == "digits" else (lambda v: NUMBER_WORDS[v])
        ball = rng.randint(1, self.options.cups)
        sentences = [rng.choice(style["start"]).format(noun=noun, start=number(ball))]
        answers = [ball]
        for _ in range(rng.randint(self.options.min_length, self.options.length)):
            a, b = rng.sample(range(1, self.options.cups + 1), 2)
            template = rng.choice(style["swaps"])
            sentences.append(template.format(noun=noun, nouns=nouns, Nouns=nouns.capitalize(), a=number(a), b=number(b),
                                             a_th=ORDINALS[a], b_th=ORDINALS[b]))
            ball = b if ball == a else a if ball == b else ball
            answers.append(ball)
        cells: list[str] = []
        for sentence, answer in zip(sentences, answers):
            words = sentence.split()
            cells += [NOT_ANSWER] * (len(words) - 1) + [str(answer)]
        return {"input": " ".join(sentences), "output": " ".join(cells)}

    def final_answer(self, output: str) -> str:
        """The ball's last position in an output string (its last labelled cell)."""
        return [cell for cell in output.split() if cell != NOT_ANSWER][-1]
