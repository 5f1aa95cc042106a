"""The persistent batch (`training.schedule: persistent`): TRM's training schedule.

B slots, each holding one example and its carry. Every optimizer step advances every slot by one
supervision step; a slot whose example halted at the previous step takes the next example of the
data stream and a fresh carry:

    slots = PersistentBatch(dataset, collate_fn, batch_size=B, ...)
    every optimizer step:
        batch, fresh = slots.refill()                 # halted slots take the next examples of the stream
        carry = reset(slots.carry, fresh)             # ... and start from a fresh carry
        out = model(batch, carry); loss over all slots; backward; optimizer step
        slots.set_halted(gather(slots.advance(out.carry, out.halt_logits > 0)))

The Trainer (`loop.py`) runs that step; this module holds the slots.

- Data stream: a seeded permutation of the training set per pass, examples taken in order, pass
  after pass (`ExampleStream`).
- Fixed length: carries keep their shape from step to step, so every refill is padded to the
  longest training example. `collate_fn` pads to the longest example it is given, so the longest
  examples (by input_ids, and by labels where labels are sequences) are collated along with every
  refill and dropped again: the padding values stay those of `collate_fn`.
- Features: cached ones come with the examples; otherwise `encode` (the frozen backbone) runs once
  per example, when it enters its slot, and its features stay in the slot. When the input side
  trains (LoRA) there are none: the slots' input_ids go through the backbone at every step.
- Loss: every slot is on some step, so all are active. `label_share` weighs each process's task loss
  by its share of the scored labels, so DDP's gradient average counts every label alike.
- Processes: the bookkeeping (stream position, the example in each slot, its steps, its minimum
  steps, who halted) is global and the same in every process; process p holds the data and carries
  of slots [p B/P, (p+1) B/P) only. The halted flags are gathered after every step, so refilling
  (the next examples to the halted slots, in global slot order) is the same for 1 or P processes.
- Checkpoints: registered with `accelerator.register_for_checkpointing`, which saves from the main
  process only, so `gather_carry` collects the carries of all slots first (every process calls it);
  on load each process takes its own slice, and its slots' examples are read (and encoded) again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from ..losses import IGNORE_INDEX
from ..reasoner import Carry

# What one supervision step reads from an example; other columns (cell_positions, ...) stay out of the slots.
STEP_KEYS = ("input_ids", "attention_mask", "labels", "features")


class ExampleStream:
    """The training set in a seeded random order per pass, taken one example after another, pass after pass.

    Example:
        >>> stream = ExampleStream(size=4, seed=0)
        >>> [index for _, index in stream.take(6)] == stream.order(0).tolist() + stream.order(1).tolist()[:2]
        True
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = size, seed
        self.epoch, self.position = 0, 0  # the next example is order(epoch)[position]
        self._orders: dict[int, torch.Tensor] = {}

    def order(self, epoch: int) -> torch.Tensor:
        """The permutation of pass `epoch`: dataset indices (size,)."""
        if epoch not in self._orders:  # only the current pass is kept
            generator = torch.Generator().manual_seed(2**32 * (epoch + 1) + self.seed)  # (seed, pass), apart from the exploration seeds
            self._orders = {epoch: torch.randperm(self.size, generator=generator)}
        return self._orders[epoch]

    @property
    def taken(self) -> int:
        """Examples handed out so far, over all passes."""
        return self.epoch * self.size + self.position

    def take(self, count: int) -> list[tuple[int, int]]:
        """The next `count` examples as (stream position, dataset index); a pass starts once the last one is used up."""
        taken = []
        for _ in range(count):
            if self.position == self.size:
                self.epoch, self.position = self.epoch + 1, 0
            taken.append((self.taken, int(self.order(self.epoch)[self.position])))
            self.position += 1
        return taken


class PersistentBatch:
    """B slots of examples with their carries, refilled from an `ExampleStream` as examples halt.

    Args:
        dataset: map-style training set of encoded examples (dicts with input_ids, attention_mask,
            labels and, when cached, "features").
        collate_fn: batches a list of examples (`latentreason.data.collate` with the pad id).
        batch_size: B, the number of slots over all processes.
        supervision_steps: N_sup: an example halts after this many steps at the latest.
        seed: seeds the stream's order.
        minimum_steps: steps the example at a stream position must run before it may halt (exploration).
        encode: features of a collated batch (the frozen backbone), for examples without cached
            features; None when the input side trains (its input_ids go to the model at every step).
        process_index, num_processes: this process owns slots [p B/P, (p+1) B/P).
        device: where this process's slots live.

    Example:
        >>> examples = [{"input_ids": torch.tensor([i, i]), "attention_mask": torch.ones(2, dtype=torch.long),
        ...              "labels": torch.tensor([0, 1]), "features": torch.zeros(2, 3)} for i in range(6)]
        >>> stack = lambda rows: {key: torch.stack([row[key] for row in rows]) for key in rows[0]}
        >>> slots = PersistentBatch(examples, stack, batch_size=2, supervision_steps=2, seed=0, minimum_steps=lambda position: 1)
        >>> batch, fresh = slots.refill()                            # every slot starts with an example
        >>> slots.set_halted(slots.advance(None, halts=torch.tensor([True, False])))   # slot 0 halts now
        >>> slots.refill()[1].tolist()                               # so it takes the next example
        [True, False]
    """

    def __init__(
        self,
        dataset: Any,
        collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
        *,
        batch_size: int,
        supervision_steps: int,
        seed: int,
        minimum_steps: Callable[[int], int],
        encode: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
        process_index: int = 0,
        num_processes: int = 1,
        device: torch.device | str = "cpu",
    ) -> None:
        if batch_size % num_processes:
            raise ValueError(f"{batch_size} slots cannot be split evenly over {num_processes} processes.")
        self.dataset, self.collate_fn, self.encode = dataset, collate_fn, encode
        self.batch_size, self.supervision_steps, self.minimum_steps = batch_size, supervision_steps, minimum_steps
        self.stream = ExampleStream(len(dataset), seed)
        per_process = batch_size // num_processes
        self.rows = slice(process_index * per_process, (process_index + 1) * per_process)  # this process's slots
        self.num_processes, self.device = num_processes, torch.device(device)
        self.templates = [_step_columns(dataset[index]) for index in longest_examples(dataset)]

        # Global bookkeeping, the same in every process.
        self.example = torch.full((batch_size,), -1, dtype=torch.long)  # dataset index in each slot
        self.steps = torch.zeros(batch_size, dtype=torch.long)  # supervision steps done on it
        self.minimum = torch.ones(batch_size, dtype=torch.long)  # steps before it may halt
        self.halted = torch.ones(batch_size, dtype=torch.bool)  # to be refilled before the next step
        # This process's slots.
        self.batch: dict[str, torch.Tensor] | None = None  # (B/P, L_max, ...) collated examples
        self.carry: Carry | None = None  # (B/P, L_max + slots, d), None before the first step
        self._gathered: Carry | None = None  # every slot's carry, for a checkpoint (`gather_carry`)

    # --- one step ---------------------------------------------------------------------------------
    def refill(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Give every halted slot the next example of the stream (in global slot order).

        Returns this process's batch and which of its rows are fresh (B/P,) bool: their carry must be reset.
        """
        slots = self.halted.nonzero().flatten().tolist()
        for slot, (position, index) in zip(slots, self.stream.take(len(slots))):
            self.example[slot], self.steps[slot], self.minimum[slot] = index, 0, self.minimum_steps(position)
        fresh = self.halted[self.rows].clone()
        self.halted[:] = False
        # After a resume nothing is loaded yet: read every slot of this process.
        self.load_rows(torch.arange(len(fresh)) if self.batch is None else fresh.nonzero().flatten())
        return self.batch, fresh.to(self.device)

    def advance(self, carry: Carry | None, halts: torch.Tensor | None) -> torch.Tensor:
        """Every slot ran one more step: keep its carry; return which of this process's slots are done (B/P,).

        A slot is done at N_sup steps, or when `halts` (its halt logit > 0; None: halting off) after its minimum steps.
        """
        self.carry, self._gathered = carry, None
        self.steps += 1
        steps, minimum = self.steps[self.rows], self.minimum[self.rows]
        done = steps >= self.supervision_steps
        if halts is not None:
            done |= halts.detach().cpu() & (steps >= minimum)
        return done.to(self.device)

    def set_halted(self, halted: torch.Tensor) -> None:
        """The done flags of all B slots (gathered over processes, in process order): the next `refill` takes them."""
        self.halted = halted.detach().cpu().bool().reshape(self.batch_size).clone()  # refill clears it in place

    def exhausted(self, passes: int) -> bool:
        """True when the next refill would need an example beyond `passes` passes over the training set."""
        return self.stream.taken + int(self.halted.sum()) > passes * self.stream.size

    def load_rows(self, rows: torch.Tensor) -> None:
        """Read (and encode) the examples of this process's slots `rows`, padded to the fixed length."""
        if len(rows) == 0:
            return
        indices = self.example[self.rows][rows].tolist()
        examples = [_step_columns(self.dataset[index]) for index in indices]
        collated = self.collate_fn(examples + self.templates)
        new = {key: value[: len(indices)].to(self.device) for key, value in collated.items() if key in STEP_KEYS}
        if "features" not in new and self.encode is not None:
            new["features"] = self.encode(new)
        if self.batch is None:
            self.batch = new
            return
        rows = rows.to(self.device)
        for key, value in new.items():
            self.batch[key][rows] = value

    # --- checkpoints ------------------------------------------------------------------------------
    def gather_carry(self, gather: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Collect every slot's carry (all processes call this, e.g. with `accelerator.gather`) for `state_dict`."""
        if self.carry is not None:
            self._gathered = Carry(gather(self.carry.answer).cpu(), gather(self.carry.latent).cpu())

    def state_dict(self) -> dict[str, Any]:
        if self.num_processes > 1 and self.carry is not None and self._gathered is None:
            raise RuntimeError("PersistentBatch.gather_carry must run on every process before the state is saved.")
        carry = self._gathered if self._gathered is not None else self.carry
        return {
            "epoch": self.stream.epoch,
            "position": self.stream.position,
            "example": self.example.clone(),
            "steps": self.steps.clone(),
            "minimum": self.minimum.clone(),
            "halted": self.halted.clone(),
            "answer": None if carry is None else carry.answer.cpu(),
            "latent": None if carry is None else carry.latent.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["example"].shape[0] != self.batch_size:
            raise ValueError(
                f"The checkpoint's persistent batch has {state['example'].shape[0]} slots, this run has "
                f"training.batch_size={self.batch_size}: resume with the batch size it was saved with."
            )
        self.stream.epoch, self.stream.position = state["epoch"], state["position"]
        self.example, self.steps, self.minimum, self.halted = (state[key].clone() for key in ("example", "steps", "minimum", "halted"))
        # Saved from every slot: this process takes its own.
        answer, latent = state["answer"], state["latent"]
        self.carry = None if answer is None else Carry(answer[self.rows].to(self.device), latent[self.rows].to(self.device))
        # The slots' examples are read again at the next refill; uncached features are then computed for all
        # of this process's slots at once, not in the groups they entered in (equal here, but BLAS may differ in the last bit).
        self.batch, self._gathered = None, None


def longest_examples(dataset: Any) -> list[int]:
    """Indices of the longest examples: by input_ids and, where labels are sequences, by labels (one index when the same)."""
    first = dataset[0]
    keys = ["input_ids"] + (["labels"] if "labels" in first and torch.as_tensor(first["labels"]).dim() > 0 else [])
    found: list[int] = []
    for key in keys:
        lengths = [len(value) for value in _column(dataset, key)]
        longest = max(range(len(lengths)), key=lengths.__getitem__)
        if longest not in found:
            found.append(longest)
    return found


def label_share(labels: torch.Tensor, reduce: Callable[[torch.Tensor, str], torch.Tensor]) -> torch.Tensor:
    """This process's scored labels over the mean per process (`reduce`: `accelerator.reduce`): exactly 1 on one process.

    The task loss is a mean over this process's labels and DDP averages the gradients over processes;
    weighing the task loss by this share counts every label of the global batch alike, however the
    slots' examples differ in length, so 1 or P processes make the same update.
    """
    scored = (labels != IGNORE_INDEX).sum().float()
    return scored / reduce(scored.reshape(1), "mean")[0].clamp(min=1)


def persistent_max_steps(epochs: int, num_examples: int, supervision_steps: int, batch_size: int) -> int:
    """Optimizer steps for `epochs` passes when every example runs all N_sup steps (halting ends them sooner)."""
    return math.ceil(epochs * num_examples * supervision_steps / batch_size)


def _column(dataset: Any, key: str) -> Any:
    if hasattr(dataset, "with_format"):  # a datasets.Dataset: read the one column, not every example's features
        return dataset.with_format(None)[key]
    return [dataset[index][key] for index in range(len(dataset))]


def _step_columns(example: dict[str, Any]) -> dict[str, Any]:
    return {key: example[key] for key in STEP_KEYS if key in example}
