"""Long addition, written out so that each answer digit has its own cell: serial depth grows with size.

Layout, for `digits = N` (every number zero-padded to N + 1 digits, most significant first):

    input:  a_N a_(N-1) ... a_0  +  b_N b_(N-1) ... b_0        (2N + 3 cells; a_N = b_N = 0)
    output: s_N s_(N-1) ... s_0  _  _ _ ... _                  (the sum under a's cells, `_` elsewhere)

e.g. N = 3, 58 + 67: input `0 0 5 8 + 0 0 6 7`, output `0 1 2 5 _ _ _ _ _`. Each sum digit `s_i`
depends on every lower digit through the carry, so the chain of dependencies is as long as the
numbers: a fixed-depth network must run out of depth, a recursive one can keep going.

Random digits rarely carry more than a few places, so a fraction `carry_chains` of the examples is
built with a long carry chain: one digit pair that overflows, followed by pairs summing to 9 up to the
top digit. Augmentation swaps the two numbers (the sum does not change).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .common import Task, register_task

NOT_ANSWER = "_"
PLUS = "+"


@dataclass
class AdditionOptions:
    digits: int = field(default=20, metadata={"help": "Most digits per number (N); the sequence has 2N + 3 cells."})
    min_digits: int = field(default=1, metadata={"help": "Fewest digits per number; each number's length is drawn from min_digits..digits."})
    carry_chains: float = field(default=0.25, metadata={"help": "Fraction of examples built with a carry chain running to the top digit (random digits rarely carry far)."})

    def __post_init__(self) -> None:
        if self.digits < 1:
            raise ValueError(f"addition `digits` must be >= 1, got {self.digits}.")
        if not 1 <= self.min_digits <= self.digits:
            raise ValueError(f"addition `min_digits` must be in 1..digits ({self.digits}), got {self.min_digits}.")
        if not 0.0 <= self.carry_chains <= 1.0:
            raise ValueError(f"addition `carry_chains` must be a fraction in [0, 1], got {self.carry_chains}.")


@register_task
class AdditionTask(Task):
    """Add two numbers of up to `digits` digits; the answer is written digit by digit under the first number."""

    name = "addition"
    output_kind = "aligned"
    Options = AdditionOptions

    def labels(self) -> list[str]:
        return [str(digit) for digit in range(10)] + [NOT_ANSWER]

    def write(self, a: int, b: int) -> dict[str, str]:
        """The example for `a + b` in this task's layout."""
        width = self.options.digits + 1
        if not (0 <= a < 10**self.options.digits and 0 <= b < 10**self.options.digits):
            raise ValueError(f"Both numbers must have at most {self.options.digits} digits, got {a} and {b}.")
        a_cells, b_cells, sum_cells = (list(str(value).zfill(width)) for value in (a, b, a + b))
        return {"input": " ".join(a_cells + [PLUS] + b_cells), "output": " ".join(sum_cells + [NOT_ANSWER] * (width + 1))}

    @staticmethod
    def read(text: str) -> tuple[int, int]:
        """The two numbers of an input text. Example: `AdditionTask.read("0 5 8 + 0 6 7") == (58, 67)`."""
        a_text, b_text = text.split(PLUS)
        return int("".join(a_text.split())), int("".join(b_text.split()))

    def _generate(self, rng: random.Random) -> dict[str, str]:
        low, high = self.options.min_digits, self.options.digits
        if rng.random() < self.options.carry_chains:
            length = rng.randint(low, high)
            a_digits = [rng.randint(0, 9) for _ in range(length)]  # least significant first
            b_digits = [rng.randint(0, 9) for _ in range(length)]
            chain_start = rng.randrange(length)
            a_digits[chain_start] = rng.randint(1, 9)
            b_digits[chain_start] = rng.randint(10 - a_digits[chain_start], 9)  # overflows: starts the carry
            for i in range(chain_start + 1, length):
                b_digits[i] = 9 - a_digits[i]  # sums to 9: passes the carry on
            a, b = (int("".join(map(str, reversed(d)))) for d in (a_digits, b_digits))
        else:
            a, b = (rng.randrange(10 ** (n - 1) if n > 1 else 0, 10**n) for n in (rng.randint(low, high), rng.randint(low, high)))
        return self.write(a, b)

    def augment(self, example: dict[str, str], rng: random.Random) -> dict[str, str]:
        """Swap the two numbers with probability 1/2 (addition commutes, the answer stays)."""
        if rng.random() < 0.5:
            return dict(example)
        a, b = self.read(example["input"])
        return {**example, **self.write(b, a)}
