"""The training loop: deep supervision on Accelerate.

(Over 400 lines on purpose: one Trainer, both schedules sharing its fit, optimizer step, evaluation and
checkpointing; the persistent batch's bookkeeping is in persistent.py, evaluation in evaluation.py.)

Runs unchanged on CPU, one or many GPUs (DDP through `accelerate launch`), with or without mixed
precision: the loop body holds no device code. Each batch is trained as TRM trains it:

    for batch in batches:
        x = cached backbone features (or the backbone, once per batch)
        carry = fresh; active = every sample
        repeat N_sup:                                   # deep supervision
            out = model(x, carry, labels, active)          # out.carry comes back detached
            # out.loss = CE(logits, target | active) + 0.5 * BCE(halt_logits, exactly right | active)
            backward(out.loss); clip; optimizer step; scheduler step; EMA update
            active &= not (halt_logits > 0 and step >= this sample's minimum steps)
            stop when no sample is active

Two schedules (`training.schedule`). `per_batch`, the default, is the one above: a batch is a fixed
set of examples, so data order, sharding across processes and resuming are plain Accelerate
(`split_batches`, `skip_first_batches`), and checkpoints fall on batch boundaries where no carry is
alive. The price: halted samples ride along (masked out of the loss) until the whole batch halts or
reaches N_sup. `persistent` is TRM's (`persistent.py`): every optimizer step advances each of B slots
by one supervision step and a halted slot takes the next example, so no step is spent on a halted
sample; its checkpoints hold every slot's carry. Both share `fit` and `optimizer_step`, and both backpropagate
the model's own `out.loss` (`latentreason.losses.supervision_loss`, with halted samples masked out).

Training for more refinement steps at test time (`refinement.py`, all off by default): a random start
and noise on the carry (`carry_init`, `carry_noise`), a random number of steps per batch
(`random_supervision_steps`) and targets that grow step by step (`improvement_supervision`). Their draws
are seeded like exploration's, per sample, so a resumed or multi-process run draws the same.

Exploration (TRM): with probability `halt_exploration` a sample must run a random number of steps
in [2, N_sup] before it may halt. The draws come from a generator seeded by (seed, batch index), or
with the persistent batch by (seed, the example's stream position), so they are the same on 1 or N
processes and after a resume.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, skip_first_batches
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin, set_seed
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from ..adapter_state import drop_frozen_backbone
from ..hub.files import EVAL_RESULTS_NAME
from .checkpoints import latest_checkpoint, save_checkpoint
from .config import TrainingConfig
from .ema import ExponentialMovingAverage
from .evaluation import evaluate, features_of, score
from .halting import calibrate, exploration, hold_out
from .persistent import PersistentBatch, label_share, persistent_max_steps
from .refinement import (
    CARRY,
    ORDER,
    PERSISTENT_CARRY,
    SampleDraws,
    carry_shape,
    curriculum_targets,
    drawn_supervision_steps,
    improvement_order,
    improvement_targets,
    training_carry,
    uses_carry_switches,
)

logger = logging.getLogger(__name__)

# In training a sample halts where its halt logit is > 0 (probability 0.5), as TRM trains. The test-time
# `halt_threshold` (calibrated after training, or set by the user) deliberately doesn't move this: the
# halting head's target, and so the data each sample is trained on, would otherwise depend on it.
TRAINING_HALT_LOGIT = 0.0

@dataclass
class TrainState:
    """Where the run is: saved in every checkpoint (`register_for_checkpointing`)."""

    global_step: int = 0  # optimizer steps done
    epoch: int = 0  # per_batch (the persistent batch keeps its own stream position)
    batches_done: int = 0  # batches finished in the current epoch (per_batch)

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step, "epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.global_step, self.epoch, self.batches_done = state["global_step"], state["epoch"], state["batches_done"]


@dataclass
class TrainResult:
    """What `train` returns: the weights to save (EMA when on), the final evaluation, and the step count."""

    adapter_state_dict: dict[str, torch.Tensor]
    eval_results: dict[str, Any] | None
    global_step: int
    finished: bool  # False when stopped early by `stop_after_steps` (resume it to finish)
    history: list[dict[str, float]] = field(default_factory=list)  # logged training metrics


def train(model: Any, train_dataset: Any, config: TrainingConfig, *, resume: bool = False, stop_after_steps: int | None = None,
          **options: Any) -> TrainResult:
    """Train `model`'s reasoner on encoded examples with deep supervision; evaluate the EMA weights.

    `Trainer(model, train_dataset, config, **options).fit(resume=..., stop_after_steps=...)` in one call:
    `options` are the Trainer's (`collate_fn`, `eval_dataset`, `eval_steps`, `eval_halt`, `eval_batch_size`).

    Args:
        model: a `LatentReasonerModel` (from `attach_reasoner`).
        train_dataset: encoded examples (dicts with input_ids, attention_mask, labels and, when the
            feature cache is used, "features"): anything a `DataLoader` takes with `collate_fn`.
        config: the `TrainingConfig`.
        resume: continue from the newest complete checkpoint in `config.output_dir`.
        stop_after_steps: stop as if the process crashed after this many optimizer steps (nothing more is
            saved; the schedule is that of the full run); used to test resuming.

    Example:
        >>> from functools import partial                                          # doctest: +SKIP
        >>> result = train(model, encoded, TrainingConfig(max_steps=300),          # doctest: +SKIP
        ...                collate_fn=partial(collate, pad_token_id=0), eval_dataset=encoded_test)
        >>> result.eval_results["per_step"][-1]["exact_match"]                      # doctest: +SKIP
    """
    return Trainer(model, train_dataset, config, **options).fit(resume=resume, stop_after_steps=stop_after_steps)


class Trainer:
    """One training run: everything is set up and `prepare`d once in `__init__`; `fit()` trains.

    Args (besides model, train_dataset and config, as in `train`):
        collate_fn: batches a list of examples (e.g. `functools.partial(latentreason.data.collate, pad_token_id=...)`).
        eval_dataset: examples for the final evaluation (and `eval_every`); None skips evaluation.
        eval_steps: refinement steps at evaluation (default: the reasoner's `max_supervision_steps`).
        eval_halt: report the halting numbers as the headline accuracy and exact match.
        eval_batch_size: batch size of the evaluation.
    """

    def __init__(
        self,
        model: Any,
        train_dataset: Any,
        config: TrainingConfig,
        *,
        collate_fn: Any,
        eval_dataset: Any | None = None,
        eval_steps: int | None = None,
        eval_halt: bool = True,
        eval_batch_size: int = 64,
    ) -> None:
        self.config = config
        self.supervision_steps = config.supervision_steps or model.config.max_supervision_steps
        if config.improvement_supervision and model.config.output != "token_classification":
            raise ValueError(
                f"`training.improvement_supervision` needs one label per input position (`reasoner.output: token_classification`), "
                f"got output={model.config.output!r}: its intermediate targets reveal the answer position by position. "
                "Set `training.improvement_supervision=false` for this output."
            )
        if config.length_curriculum and model.config.output != "token_classification":
            raise ValueError(
                f"`training.length_curriculum` needs one label per input position (`reasoner.output: token_classification`), "
                f"got output={model.config.output!r}: it supervises the first positions of each sequence first. "
                "Set `training.length_curriculum=0` for this output."
            )
        self.eval_steps = eval_steps or model.config.max_supervision_steps
        self.eval_halt = eval_halt
        self.accelerator = accelerator = Accelerator(
            mixed_precision=config.mixed_precision,
            gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=config.gradient_accumulation_steps, sync_with_dataloader=False),
            # split_batches: `batch_size` is global, so 1 or N processes train on exactly the same batches.
            dataloader_config=DataLoaderConfiguration(split_batches=True, use_seedable_sampler=True, data_seed=config.seed),
            log_with=_trackers(config.report_to),
            project_dir=config.output_dir,
        )
        if config.batch_size % (accelerator.num_processes * config.gradient_accumulation_steps):
            raise ValueError(
                f"`training.batch_size` ({config.batch_size}) must be divisible by processes x gradient_accumulation_steps "
                f"({accelerator.num_processes} x {config.gradient_accumulation_steps}): every process trains on an equal slice of each batch."
            )
        set_seed(config.seed)
        train_dataset, calibration_set = hold_out(train_dataset, config.calibrate_halting, config.seed)

        # A stream (an IterableDataset: data.streaming) orders itself (a shuffle buffer); a map-style set is permuted whole.
        shuffle = not isinstance(train_dataset, IterableDataset)
        train_loader = DataLoader(train_dataset, batch_size=config.batch_size, shuffle=shuffle, drop_last=True, collate_fn=collate_fn)
        if len(train_loader) == 0:
            raise ValueError(
                f"The training set has {len(train_dataset)} examples, fewer than one batch of {config.batch_size}: "
                "lower `training.batch_size` or add examples."
            )
        eval_loader = DataLoader(eval_dataset, batch_size=eval_batch_size, collate_fn=collate_fn) if eval_dataset is not None else None
        calibration_loader = DataLoader(calibration_set, batch_size=eval_batch_size, collate_fn=collate_fn) if calibration_set is not None else None
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimizer = adamw(trainable, lr=config.learning_rate, betas=tuple(config.betas), weight_decay=config.weight_decay)
        if config.schedule == "persistent":
            self.max_steps = config.max_steps or persistent_max_steps(config.epochs, len(train_dataset), self.supervision_steps, config.batch_size)
        elif config.random_supervision_steps:  # every batch's draw is known up front: the schedule ends where the data does
            self.max_steps = config.max_steps or sum(drawn_supervision_steps(config.seed, index, self.supervision_steps)
                                                     for index in range(config.epochs * len(train_loader)))
        else:
            self.max_steps = config.max_steps or config.epochs * len(train_loader) * self.supervision_steps
        scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup_steps, num_training_steps=self.max_steps)
        self.ema = ExponentialMovingAverage(model, config.ema_decay, config.ema_warmup) if config.ema else None

        loaders = [loader for loader in (eval_loader, calibration_loader) if loader is not None]
        # A backbone spread by a device_map stays where it was put (its reasoner sits on the map's first device).
        placement = [not getattr(model, "device_mapped", False)] + [True] * (3 + len(loaders))
        prepared = accelerator.prepare(model, optimizer, scheduler, train_loader, *loaders, device_placement=placement)
        self.wrapped, self.optimizer, self.scheduler, self.train_loader = prepared[:4]
        rest = iter(prepared[4:])
        self.eval_loader = next(rest) if eval_loader is not None else None
        self.calibration_loader = next(rest) if calibration_loader is not None else None
        self.calibration: dict[str, Any] | None = None
        self.model = accelerator.unwrap_model(self.wrapped)
        self.state = TrainState()
        if self.ema is not None:
            self.ema.to(accelerator.device)
            accelerator.register_for_checkpointing(self.ema)
        accelerator.register_for_checkpointing(self.state)
        accelerator.register_save_state_pre_hook(_drop_frozen_backbone)
        self.slots = self.persistent_batch(train_dataset, collate_fn) if config.schedule == "persistent" else None
        if self.slots is not None:
            accelerator.register_for_checkpointing(self.slots)
        self.history: list[dict[str, float]] = []

    def persistent_batch(self, train_dataset: Any, collate_fn: Any) -> PersistentBatch:
        """The slots of `training.schedule: persistent`; each example draws its exploration minimum by its stream position."""
        config, model = self.config, self.model

        def minimum_steps(position: int) -> int:
            return int(exploration(position, config.seed, 1, self.supervision_steps, config.halt_exploration)[0])

        # A training input side (LoRA) reads input_ids at every step; a frozen one runs once per example.
        encode = None if model.backbone_trains else functools.partial(features_of, model)
        return PersistentBatch(
            train_dataset, collate_fn, batch_size=config.batch_size, supervision_steps=self.supervision_steps, seed=config.seed,
            minimum_steps=minimum_steps, encode=encode, process_index=self.accelerator.process_index,
            num_processes=self.accelerator.num_processes, device=self.accelerator.device,
        )

    # --- the run ------------------------------------------------------------------------------
    def fit(self, *, resume: bool = False, stop_after_steps: int | None = None) -> TrainResult:
        """Train until `max_steps` (or `epochs`), checkpointing on the way; then evaluate and return the weights."""
        config, state, accelerator = self.config, self.state, self.accelerator
        if resume:
            self.resume()
        accelerator.init_trackers("latentreason", config={k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, bool))})
        # A bar only where someone watches it: redirected to a file, carriage-return updates are noise,
        # so there (and with the bar off) a plain line goes out every `log_every` steps instead.
        interactive = config.progress_bar and sys.stderr.isatty()
        progress = tqdm(
            total=self.max_steps, initial=state.global_step, desc="Training",
            disable=not (interactive and accelerator.is_local_main_process),
        )
        stop_at = min(self.max_steps, stop_after_steps or self.max_steps)
        last_checkpoint = state.global_step
        trained = self.persistent_steps(stop_at) if self.slots is not None else self.batches(stop_at)
        for metrics in trained:  # one batch (per_batch) or one optimizer step (persistent)
            progress.update(metrics["steps"])
            progress.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.3f}", exact=f"{metrics['exact_match']:.2f}")
            if _crossed(state.global_step, metrics["steps"], config.log_every):
                self.log_training(metrics)
                if not interactive and accelerator.is_main_process:
                    print(log_line(state.global_step, self.max_steps, metrics, self.scheduler.get_last_lr()[0]), flush=True)
            if config.eval_every and self.eval_loader is not None and _crossed(state.global_step, metrics["steps"], config.eval_every):
                results = self.evaluate()
                progress.write(f"step {state.global_step}: accuracy {results['accuracy']:.3f}, exact match {results['exact_match']:.3f}")
            # At each multiple of checkpoint_every, rounded up to the end of its batch (a batch's supervision steps
            # are never split): step-203, step-401, ... for checkpoint_every=200 and 6 steps a batch, without drift.
            if config.checkpoint_every and _crossed(state.global_step, metrics["steps"], config.checkpoint_every):
                self.checkpoint()
                last_checkpoint = state.global_step
        progress.close()

        if not self.finished:  # stopped by `stop_after_steps`: like a crash, nothing more is written
            self.close()
            return TrainResult({}, None, state.global_step, False, self.history)
        if config.checkpoint_every and state.global_step > last_checkpoint:
            self.checkpoint()
        if self.calibration_loader is not None:
            self.calibrate_halting()
        eval_results = self.evaluate(write=True) if self.eval_loader is not None else None
        weights = self.final_weights()
        accelerator.wait_for_everyone()
        self.close()
        return TrainResult(weights, eval_results, state.global_step, True, self.history)

    def close(self) -> None:
        """End the trackers and forget this run's Accelerate settings, so that a later run in the same
        process may pick another mixed precision (the process group, if any, stays)."""
        self.accelerator.end_training()
        AcceleratorState._reset_state(reset_partial_state=False)

    def batches(self, stop_at: int) -> Iterator[dict[str, float]]:
        """per_batch: train batch after batch (each up to N_sup optimizer steps); yield each batch's metrics."""
        state = self.state
        while state.global_step < stop_at and not self.finished:
            self.train_loader.set_epoch(state.epoch)
            batches = skip_first_batches(self.train_loader, state.batches_done) if state.batches_done else self.train_loader
            for batch in batches:
                metrics = self.train_on_batch(batch, stop_at)
                state.batches_done += 1
                if state.batches_done == len(self.train_loader):
                    state.epoch, state.batches_done = state.epoch + 1, 0
                yield metrics
                if state.global_step >= stop_at or self.finished:
                    break

    def persistent_steps(self, stop_at: int) -> Iterator[dict[str, float]]:
        """persistent: one optimizer step after another; yield each step's metrics."""
        while self.state.global_step < stop_at and not self.finished:
            yield self.train_persistent_step()

    def checkpoint(self) -> None:
        """Save a resumable checkpoint (every process takes part)."""
        if self.slots is not None:
            self.slots.gather_carry(self.accelerator.gather)  # the main process writes every slot's carry
        save_checkpoint(self.accelerator, self.config.output_dir, self.state.global_step, self.config.keep_checkpoints)

    @property
    def finished(self) -> bool:
        if self.state.global_step >= self.max_steps:
            return True
        if self.config.max_steps is not None:
            return False
        if self.slots is not None:  # `epochs` passes of the data stream
            return self.slots.exhausted(self.config.epochs)
        return self.state.epoch >= self.config.epochs

    def resume(self) -> None:
        checkpoint = latest_checkpoint(self.config.output_dir)
        if checkpoint is None:
            logger.warning("--resume: no checkpoint in %s/checkpoints yet; starting from scratch.", self.config.output_dir)
            return
        # strict=False: checkpoints leave out the frozen backbone (it is reloaded from the base model).
        self.accelerator.load_state(checkpoint, strict=False)
        self.accelerator.print(f"Resumed from {checkpoint} (optimizer step {self.state.global_step}).")

    # --- deep supervision on one batch -----------------------------------------------------------
    def train_on_batch(self, batch: dict[str, torch.Tensor], stop_at: int) -> dict[str, float]:
        """Up to N_sup supervision steps on one batch, each its own optimizer step. Returns the batch's metrics."""
        accelerator, config, state = self.accelerator, self.config, self.state
        # The frozen backbone runs at most once per batch. A training backbone (LoRA) runs inside every
        # supervision step instead: features computed once would be backpropagated through twice.
        backbone_per_step = "features" not in batch and self.model.backbone_trains
        features = batch["input_ids"] if backbone_per_step else features_of(self.model, batch)
        minimum_steps = self.minimum_steps(batch["labels"].device)
        chunks = config.gradient_accumulation_steps  # micro-batches, each with its own carry
        rows = self.global_rows(batch["labels"].shape[0])  # each sample's row in the global batch: what its draws are seeded by
        parts = list(zip(
            features.chunk(chunks), batch["attention_mask"].chunk(chunks), batch["labels"].chunk(chunks), minimum_steps.chunk(chunks),
            batch["input_ids"].chunk(chunks), rows.chunk(chunks),
        ))
        carries: list[Any] = [None] * chunks
        active = [torch.ones_like(part[3], dtype=torch.bool) for part in parts]
        batch_index, device = self.batch_index(), batch["labels"].device
        steps = drawn_supervision_steps(config.seed, batch_index, self.supervision_steps) if config.random_supervision_steps else self.supervision_steps
        draws = [SampleDraws(config.seed, CARRY, batch_index, part[5].tolist(), device) for part in parts] if uses_carry_switches(config) else None
        orders = [improvement_order(SampleDraws(config.seed, ORDER, batch_index, part[5].tolist(), device), part[2])
                  for part in parts] if config.improvement_supervision else None
        progress = state.global_step / self.max_steps  # the curriculum's horizon is set once per batch
        steps_done, loss_sum = 0, 0.0
        for step in range(1, steps + 1):
            for index, (x, mask, labels, minimum, ids, _) in enumerate(parts):
                carry = carries[index]
                if draws is not None:
                    carry = training_carry(self.model, carry, None, carry_shape(self.model, *mask.shape), draws[index], config)
                task_labels = improvement_targets(labels, orders[index], step, steps) if orders is not None else None
                if config.length_curriculum:
                    task_labels = curriculum_targets(labels if task_labels is None else task_labels, progress, config.length_curriculum)
                with accelerator.accumulate(self.wrapped):
                    out = self.wrapped(input_ids=ids, features=None if backbone_per_step else x, attention_mask=mask, labels=labels,
                                       carry=carry, active=active[index], loss_kind=config.loss, task_labels=task_labels)
                    self.optimizer_step(out.loss)
                carries[index] = out.carry  # detached: the next step starts here but never backpropagates into this one
                halted = self.halted(out)
                if halted is not None:
                    active[index] &= ~(halted & (step >= minimum))
                loss_sum += out.loss.detach().float()
            if self.ema is not None:
                self.ema.update()
            steps_done += 1
            state.global_step += 1
            still_active = accelerator.reduce(sum(a.sum() for a in active).reshape(1), reduction="sum")
            if int(still_active) == 0 or state.global_step >= stop_at:
                break

        right, scored = score(out.logits.detach(), parts[-1][2])[:2]
        totals = accelerator.reduce(torch.stack([loss_sum / (steps_done * chunks), right.sum(), scored.sum(), out.exact.float().mean()]).float(), "mean")
        return {
            "loss": float(totals[0]),
            "accuracy": float(totals[1] / totals[2].clamp(min=1)),
            "exact_match": float(totals[3]),
            "steps": steps_done,
            "active_fraction": float(still_active) / self.config.batch_size,
        }

    # --- the persistent batch: one supervision step of every slot ---------------------------------
    def train_persistent_step(self) -> dict[str, float]:
        """One optimizer step of `training.schedule: persistent` (see `persistent.py`). Returns the step's metrics."""
        accelerator, config, slots = self.accelerator, self.config, self.slots
        batch, fresh = slots.refill()
        carry = None if slots.carry is None else self.model.reasoner.reset_carry(slots.carry, fresh)
        labels = batch["labels"]
        if uses_carry_switches(config):  # drawn per (step, slot): the same after a resume and on 1 or N processes
            rows = self.global_rows(labels.shape[0])
            draws = SampleDraws(config.seed, PERSISTENT_CARRY, self.state.global_step, rows.tolist(), labels.device)
            shape = carry_shape(self.model, *batch["attention_mask"].shape)
            carry = training_carry(self.model, carry, None if carry is None else fresh, shape, draws, config)
        with accelerator.accumulate(self.wrapped):
            out = self.wrapped(
                input_ids=batch["input_ids"], features=batch.get("features"), attention_mask=batch["attention_mask"], labels=labels,
                carry=carry, active=torch.ones_like(fresh), loss_kind=config.loss, task_weight=label_share(labels, accelerator.reduce),
            )
            self.optimizer_step(out.loss)
        if self.ema is not None:
            self.ema.update()
        self.state.global_step += 1
        slots.set_halted(accelerator.gather(slots.advance(out.carry, self.halted(out)).long()))

        right, scored = score(out.logits.detach(), labels)[:2]
        totals = accelerator.reduce(torch.stack([out.loss.detach().float(), right.sum(), scored.sum(), out.exact.float().mean()]).float(), "mean")
        return {
            "loss": float(totals[0]),
            "accuracy": float(totals[1] / totals[2].clamp(min=1)),
            "exact_match": float(totals[3]),
            "steps": 1,
            "examples_finished": int(slots.halted.sum()),  # examples that ran their last step now
        }

    def optimizer_step(self, loss: torch.Tensor) -> None:
        """Backward, clip (when the gradients are synced), optimizer and scheduler step."""
        accelerator, config = self.accelerator, self.config
        accelerator.backward(loss)
        if accelerator.sync_gradients and config.max_grad_norm is not None:
            accelerator.clip_grad_norm_(self.wrapped.parameters(), config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()

    def halted(self, out: Any) -> torch.Tensor | None:
        """(B,) bool: the samples whose halting head says stop at this step; None when samples never stop early in training."""
        if not (self.config.halting and self.model.config.halting):
            return None
        return out.halt_logits.detach() > TRAINING_HALT_LOGIT

    def minimum_steps(self, device: torch.device) -> torch.Tensor:
        """This process's slice of the batch's exploration draws (see `exploration`)."""
        drawn = exploration(self.batch_index(), self.config.seed, self.config.batch_size, self.supervision_steps, self.config.halt_exploration)
        return drawn.chunk(self.accelerator.num_processes)[self.accelerator.process_index].to(device)

    def batch_index(self) -> int:
        """The current batch's index in the whole run (per_batch): what its draws are seeded by."""
        return self.state.epoch * len(self.train_loader) + self.state.batches_done

    def global_rows(self, local_rows: int) -> torch.Tensor:
        """This process's rows of the global batch (or of the persistent slots): (local_rows,) indices."""
        return torch.arange(local_rows) + self.accelerator.process_index * local_rows

    # --- evaluation, logging, weights ------------------------------------------------------------
    def evaluate(self, write: bool = False) -> dict[str, Any]:
        """Evaluate the EMA weights (the live ones without EMA); log them; with `write`, save eval_results.json."""
        with self.ema.swapped_into() if self.ema is not None else contextlib.nullcontext():
            results = evaluate(self.model, self.eval_loader, self.accelerator, self.eval_steps, halt=self.eval_halt)
        if self.calibration is not None:
            results["halting_calibration"] = self.calibration
        logged = {"eval/accuracy": results["accuracy"], "eval/exact_match": results["exact_match"], "eval/mean_steps": results["mean_steps"]}
        logged |= {f"eval/accuracy_step_{row['step']}": row["accuracy"] for row in results["per_step"]}
        self.accelerator.log(logged, step=self.state.global_step)
        if write and self.accelerator.is_main_process:
            os.makedirs(self.config.output_dir, exist_ok=True)
            with open(os.path.join(self.config.output_dir, EVAL_RESULTS_NAME), "w", encoding="utf-8") as handle:
                json.dump(results, handle, indent=2, sort_keys=True)
        return results

    def calibrate_halting(self) -> None:
        """Pick `halt_threshold` on the held-out slice of the training data and set it on the model (saved with it)."""
        with self.ema.swapped_into() if self.ema is not None else contextlib.nullcontext():
            self.calibration = calibrate(self.model, self.calibration_loader, self.accelerator, self.eval_steps)

    def log_training(self, metrics: dict[str, float]) -> None:
        logged = {f"train/{key}": value for key, value in metrics.items()} | {"train/lr": self.scheduler.get_last_lr()[0]}
        self.accelerator.log(logged, step=self.state.global_step)
        self.history.append({"step": self.state.global_step, **logged})

    def final_weights(self) -> dict[str, torch.Tensor]:
        """The adapter's weights to save: the EMA's where there is one."""
        weights = self.model.adapter_state_dict()
        if self.ema is not None:
            weights.update(self.ema.named_averages())
        return {name: tensor.detach().cpu().clone() for name, tensor in weights.items()}


def adamw(params: list[torch.nn.Parameter], **settings: Any) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter allows it (floating point, on a device it supports).

    The fused kernel updates all parameters in one pass: on a CPU it measured 5x faster than the
    default per-parameter loop for a 6.3M-parameter reasoner (11 ms vs 55 ms per step) and 12x for a
    0.1M one, the same update up to rounding. Anything else (e.g. integer buffers made trainable, an
    unsupported device) falls back to the default implementation.
    """
    if all(p.is_floating_point() for p in params):
        with contextlib.suppress(RuntimeError, ValueError):
            return torch.optim.AdamW(params, fused=True, **settings)
    return torch.optim.AdamW(params, **settings)


def _drop_frozen_backbone(models: list[Any], weights: list[dict[str, torch.Tensor]], output_dir: str) -> None:
    """Checkpoints hold the trainable adapter (and LoRA), never the frozen backbone (it comes back from the base model)."""
    for state in weights:
        drop_frozen_backbone(state)


def log_line(step: int, max_steps: int, metrics: dict[str, float], lr: float) -> str:
    """The plain progress line printed every `log_every` steps when there is no progress bar."""
    return (f"step {step}/{max_steps}: loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.3f}, "
            f"exact match {metrics['exact_match']:.3f}, lr {lr:.2e}")


def _crossed(step: int, advanced: int, every: int) -> bool:
    return step // every > (step - advanced) // every


def _trackers(report_to: str) -> list[str] | None:
    if report_to == "none":
        return None
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        if report_to == "tensorboard":
            raise ImportError("training.report_to='tensorboard' needs the tensorboard package: pip install tensorboard") from None
        return None
    return ["tensorboard"]
