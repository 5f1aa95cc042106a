"""Running parity of a bit string: a small, cheap task whose serial depth grows with its length.

Layout: input `"1 0 1 1"`, output the parity of each prefix, aligned per bit: `"1 1 0 1"`. Output
cell `i` is the XOR of input bits 0..i, so the last cell depends on every bit; one layer of
attention can count, but the prefix structure rewards a model that carries a state along.
No augmentation (identity): flipping or reordering bits changes the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .common import Task, length_range, register_task


@dataclass
class ParityOptions:
    length: int = field(default=16, metadata={"help": "Bits per string (the longest when `min_length` is set)."})
    min_length: int | None = field(default=None, metadata={"help": "Shortest string; lengths are drawn from min_length..length. Default: all have `length` bits."})

    def __post_init__(self) -> None:
        self.min_length = length_range('parity', self.length, self.min_length)


@register_task
class ParityTask(Task):
    """Running parity (prefix XOR) of a bit string, per bit."""

    name = "parity"
    output_kind = "aligned"
    Options = ParityOptions

    def labels(self) -> list[str]:
        return ["0", "1"]

    def _generate(self, rng: random.Random) -> dict[str, str]:
        bits = [rng.randint(0, 1) for _ in range(rng.randint(self.options.min_length, self.options.length))]
        running, parity = [], 0
        for bit in bits:
            parity ^= bit
            running.append(parity)
        return {"input": " ".join(map(str, bits)), "output": " ".join(map(str, running))}
