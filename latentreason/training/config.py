"""`TrainingConfig`: how a reasoner is trained (optimiser, schedule, EMA, checkpoints, logging).

The architecture lives in `ReasonerConfig`; everything here is about one training run, so the same
reasoner can be trained in many ways. Defaults are sized for a CPU budget of minutes, not for the
TRM paper's GPU budget of days (see the comments on `learning_rate` and `ema_warmup`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

MixedPrecision = Literal["no", "bf16", "fp16"]
ReportTo = Literal["auto", "tensorboard", "none"]
Loss = Literal["softmax", "stablemax"]
Schedule = Literal["per_batch", "persistent"]
CarryStart = Literal["model", "random"]


@dataclass
class TrainingConfig:
    """Knobs of one training run. Every field has a default and a help text; bad values raise `ValueError`.

    Example:
        >>> from latentreason.training import TrainingConfig
        >>> TrainingConfig(max_steps=200, batch_size=32).learning_rate
        0.001
    """

    output_dir: str = field(default="runs/latentreason", metadata={"help": "Where checkpoints, eval_results.json, the trained adapter and recipe.yaml go."})
    seed: int = field(default=0, metadata={"help": "Seed for weights, data order and halting exploration: same seed, same run."})

    # --- optimisation ----------------------------------------------------------------------------
    # TRM used lr 1e-4 at batch 768 for 50k+ steps. On a CPU budget of a few hundred steps 1e-4
    # learns almost nothing; 1e-3 with EMA warm-up was best in an 8-minute check (DESIGN.md).
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate (after warm-up, then cosine decay to 0)."})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95], metadata={"help": "AdamW betas (TRM: 0.9, 0.95)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay (TRM: 0.1; 1.0 for Sudoku with heavy augmentation)."})
    warmup_steps: int = field(default=50, metadata={"help": "Optimizer steps of linear learning-rate warm-up."})
    max_steps: int | None = field(default=None, metadata={"help": "Optimizer steps to train for (one per supervision step). Overrides `epochs` when set."})
    epochs: int = field(default=1, metadata={"help": "Passes over the training set (used when `max_steps` is not set)."})
    batch_size: int = field(default=64, metadata={"help": "Global batch size: split across processes, so 1 or N processes see the same batches."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Split each batch into this many micro-batches whose gradients are summed before each optimizer step (less memory)."})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Clip the gradient norm to this value before each optimizer step (None: no clipping)."})
    loss: Loss = field(default="softmax", metadata={"help": "Task loss: `softmax` cross-entropy, or `stablemax` cross-entropy (TRM's reference for Sudoku and ARC: s(x) = x+1 for x >= 0, 1/(1-x) below, in float64; logits cannot run away once the training set is fit)."})
    mixed_precision: MixedPrecision = field(default="no", metadata={"help": "`no`, `bf16` or `fp16` autocast. bf16 works on CPU but is ~100x slower there than fp32: use it on GPUs."})

    # --- deep supervision ------------------------------------------------------------------------
    supervision_steps: int | None = field(default=None, metadata={"help": "N_sup used in training: supervision steps (each its own optimizer step) per batch. Default: the reasoner's `max_supervision_steps`. Training with more steps than you test makes the refinement curve keep rising to its last step."})
    halting: bool = field(default=True, metadata={"help": "Let samples stop early in training once their halt logit is > 0 (after their `halt_exploration` minimum); halted samples stop contributing to the loss."})
    halt_exploration: float = field(default=0.1, metadata={"help": "Probability that a sample is forced to run a random minimum number of steps in [2, N_sup] before it may halt (TRM's exploration). Recipes that still set it as `reasoner.halt_exploration` (where it lived before) are read as setting this."})
    # per_batch checkpoints fall on batch boundaries, where no carry is alive, and resume with plain Accelerate;
    # persistent never trains a halted sample (TRM's schedule) but must save every slot's carry.
    schedule: Schedule = field(default="per_batch", metadata={"help": "`per_batch`: each batch runs up to N_sup optimizer steps, halted samples ride along masked out until the whole batch halts. `persistent` (TRM): every optimizer step advances each of `batch_size` slots by one supervision step and a halted slot takes the next example (see docs/training.md)."})

    # --- training for more refinement steps at test time (training/refinement.py; docs/concepts.md) -----
    # All off by default: each is a switch to measure against the plain recipe (benchmarks/test_time_scaling.py).
    carry_init: CarryStart = field(default="model", metadata={"help": "Where a training sample's carry starts: `model` (the reasoner's init vectors, fixed or learned as `reasoner.carry_init` says: TRM) or `random` (its own draw per position and channel, normal with std `carry_init_std` truncated at 2 std, as EqR trains: the answer must be reached from anywhere near, so it becomes an attractor). Evaluation and `refine` always start from the init vectors."})
    carry_init_std: float = field(default=1.0, metadata={"help": "Standard deviation of the `carry_init: random` starts (1: the scale of the reasoner's init vectors and of EqR's starts)."})
    carry_noise: float = field(default=0.0, metadata={"help": "Standard deviation of Gaussian noise added to the carry (z_H and z_L) before every supervision step in training, never at evaluation (EqR's noise on the latent); the carry's entries are about unit size (post-norm). 0: off."})
    random_supervision_steps: bool = field(default=False, metadata={"help": "Train each batch for a number of supervision steps drawn uniformly from 1..N_sup (seeded by `seed` and the batch: a resumed run draws the same), not always N_sup. `schedule: per_batch` only."})
    improvement_supervision: bool = field(default=False, metadata={"help": "Deep Improvement Supervision (DIS, arXiv 2511.16886): step s of a batch's N steps is trained on the answer at the first floor(s n / N) of its n labelled positions, in a random order per example (the rest are left out of that step's task loss), so every step must get more right than the one before and step N all of it. Per-position outputs only (`reasoner.output: token_classification`); `schedule: per_batch` only."})

    length_curriculum: float = field(default=0.0, metadata={"help": "A curriculum over length, for per-position outputs of a sequential task (e.g. state tracking): over the first this fraction of the run's optimizer steps, each sample's task loss covers only its first ceil(L x done / (fraction x total)) labelled positions (L: the padded length), growing from one to all; the whole answer after that. Short prefixes are learnt first, as a curriculum from short to long sequences would, with no change to the data order. 0: off (e.g. 0.5). `schedule: per_batch` only."})

    # --- EMA -------------------------------------------------------------------------------------
    ema: bool = field(default=True, metadata={"help": "Keep an exponential moving average of the trainable weights; it is what gets evaluated and saved (TRM)."})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay (TRM: 0.999)."})
    # A plain 0.999 EMA after a few hundred steps is still mostly the random init; the warm-up
    # decay min(decay, (1 + s) / (10 + s)) follows the weights closely early on and slows down later.
    ema_warmup: bool = field(default=True, metadata={"help": "Use decay min(ema_decay, (1 + s) / (10 + s)) at EMA update s, so short runs get a useful average."})

    # --- features ----------------------------------------------------------------------------
    use_feature_cache: bool = field(default=True, metadata={"help": "Compute the frozen backbone's features once per example and reuse them (the backbone never runs in the loop). Off: the backbone runs once per batch."})
    cache_dir: str | None = field(default=None, metadata={"help": "Where the feature cache lives (default: latentreason's cache folder)."})
    cache_dtype: Literal["float16", "bfloat16", "float32", "int8"] = field(default="float16", metadata={"help": "How cached features are stored: float16 (2 bytes a value), bfloat16 (2 bytes, float32's range, fewer digits), float32 (4 bytes, exact) or int8 (1 byte a value + one scale per token; each value within its token's largest |value| / 254). Training reads them back as float32. For a narrower cache see `reasoner.feature_projection`."})

    # --- checkpoints, logging, evaluation --------------------------------------------------------
    checkpoint_every: int | None = field(default=200, metadata={"help": "Save a resumable checkpoint `checkpoints/step-N` at the end of the batch in which the optimizer step count passes each multiple of this (N can be a few steps past the multiple: a batch's supervision steps are never split); None: only at the end."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Keep only the newest N checkpoints in OUTPUT_DIR/checkpoints."})
    log_every: int = field(default=10, metadata={"help": "Log loss and accuracy to the trackers every N optimizer steps."})
    eval_every: int | None = field(default=None, metadata={"help": "Evaluate (EMA weights) every N optimizer steps during training, besides the final evaluation (None: only at the end)."})
    report_to: ReportTo = field(default="auto", metadata={"help": "Trackers: `auto` (TensorBoard when installed), `tensorboard` or `none`."})
    calibrate_halting: float = field(default=0.0, metadata={"help": "Hold out this fraction of the training data (e.g. 0.1; never the test set) and, after training, set `reasoner.halt_threshold` to the threshold of the halting curve on it that uses the fewest steps while keeping exact match within 1 point of running all steps; saved with the adapter. 0: off."})
    progress_bar: bool = field(default=True, metadata={"help": "Show a tqdm progress bar with loss and accuracy (main process only)."})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the field, the value and what is allowed."""
        for name in ("batch_size", "gradient_accumulation_steps", "epochs", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`training.{name}` must be an integer >= 1, got {value!r}.")
        for name in ("max_steps", "supervision_steps", "checkpoint_every", "eval_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`training.{name}` must be an integer >= 1 or None, got {value!r}.")
        if self.warmup_steps < 0:
            raise ValueError(f"`training.warmup_steps` must be >= 0, got {self.warmup_steps!r}.")
        if self.cache_dtype not in ("float16", "bfloat16", "float32", "int8"):
            raise ValueError(f"`training.cache_dtype` must be float16, bfloat16, float32 or int8, got {self.cache_dtype!r}.")
        if self.learning_rate <= 0:
            raise ValueError(f"`training.learning_rate` must be > 0, got {self.learning_rate!r}.")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"`training.betas` must be two numbers in [0, 1), got {list(self.betas)!r}.")
        if self.weight_decay < 0:
            raise ValueError(f"`training.weight_decay` must be >= 0, got {self.weight_decay!r}.")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"`training.max_grad_norm` must be > 0 or None, got {self.max_grad_norm!r}.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"`training.ema_decay` must be in [0, 1), got {self.ema_decay!r}.")
        if not 0.0 <= self.halt_exploration <= 1.0:
            raise ValueError(f"`training.halt_exploration` must be a probability in [0, 1], got {self.halt_exploration!r}.")
        if not 0.0 <= self.calibrate_halting < 1.0:
            raise ValueError(f"`training.calibrate_halting` must be a fraction in [0, 1) of the training data (0 = off), got {self.calibrate_halting!r}.")
        if self.loss not in ("softmax", "stablemax"):
            raise ValueError(f"`training.loss` must be 'softmax' or 'stablemax', got {self.loss!r}.")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"`training.mixed_precision` must be 'no', 'bf16' or 'fp16', got {self.mixed_precision!r}.")
        if self.schedule not in ("per_batch", "persistent"):
            raise ValueError(f"`training.schedule` must be 'per_batch' or 'persistent', got {self.schedule!r}.")
        if self.schedule == "persistent" and self.gradient_accumulation_steps > 1:
            raise ValueError(
                f"`training.schedule='persistent'` does not support `training.gradient_accumulation_steps` > 1 "
                f"(got {self.gradient_accumulation_steps}): every optimizer step is one supervision step of every slot. Lower `training.batch_size` to fit "
                "in memory, or use `training.schedule=per_batch`."
            )
        self.validate_refinement_switches()
        if self.batch_size % self.gradient_accumulation_steps:
            raise ValueError(
                f"`training.batch_size` ({self.batch_size}) must be divisible by `training.gradient_accumulation_steps` "
                f"({self.gradient_accumulation_steps}): each batch is split into that many equal micro-batches."
            )

    def validate_refinement_switches(self) -> None:
        """The switches of training/refinement.py: values, and the schedule each one works with."""
        if self.carry_init not in ("model", "random"):
            raise ValueError(f"`training.carry_init` must be 'model' (the reasoner's init vectors) or 'random' (a draw per sample), got {self.carry_init!r}.")
        if not (isinstance(self.carry_init_std, (int, float)) and not isinstance(self.carry_init_std, bool) and math.isfinite(self.carry_init_std) and self.carry_init_std > 0):
            raise ValueError(f"`training.carry_init_std` must be a finite number > 0 (the std of the random starts; 1 is the init vectors' scale), "
                             f"got {self.carry_init_std!r}.")
        if not (isinstance(self.carry_noise, (int, float)) and not isinstance(self.carry_noise, bool) and math.isfinite(self.carry_noise) and self.carry_noise >= 0):
            raise ValueError(f"`training.carry_noise` must be a finite number >= 0 (the std of the noise added to the carry in training; "
                             f"0 = off, e.g. 0.1), got {self.carry_noise!r}.")
        if not (isinstance(self.length_curriculum, (int, float)) and not isinstance(self.length_curriculum, bool)
                and 0.0 <= self.length_curriculum <= 1.0):
            raise ValueError(f"`training.length_curriculum` must be a fraction of the run in [0, 1] (0 = off, e.g. 0.5), "
                             f"got {self.length_curriculum!r}.")
        if self.length_curriculum and self.schedule == "persistent":
            raise ValueError(
                "`training.length_curriculum` works with `training.schedule=per_batch` only: its horizon is set per batch. "
                "Use `training.schedule=per_batch` or set `training.length_curriculum=0`."
            )
        for name in ("random_supervision_steps", "improvement_supervision"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ValueError(f"`training.{name}` must be true or false, got {value!r}.")
            if value and self.schedule == "persistent":
                raise ValueError(
                    f"`training.{name}` works with `training.schedule=per_batch` only: the persistent batch runs each example "
                    f"up to N_sup steps in its own slot. Use `training.schedule=per_batch` or set `training.{name}=false`."
                )
