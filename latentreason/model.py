"""`LatentReasonerModel`: a frozen backbone, an input projection, the recursive reasoner, an output path.

(About 600 lines on purpose: this is the one public class and its whole API, forward, refine, generate and
save/load, mostly docstrings; the work lives elsewhere: reasoner.py (the recursion), heads/, losses.py,
trajectories.py (the test-time refinement loop), backbone.py (loading the base model), hub/ (the files).)

    input_ids -> frozen backbone (one hidden layer)        (B, L, D)   computed once, cacheable
              -> input projection + RMSNorm = x            (B, L, d)
              -> learned prefix + x + learned answer slots (B, P + L + K, d)   (P = 0 unless prefix_slots)
              -> Reasoner: one supervision step from carry (B, P + L + K, d) answer latent
              -> output head (reads positions P onwards)   logits
    loss = task loss + halt_loss_weight * BCE(halt logit, "prediction exactly right")

`forward` is one supervision (refinement) step: pass the returned `carry` back in to refine further,
which is what the trainer does N_sup times per batch. `refine` runs several steps at test time and
returns the logits after each. `features=` skips the backbone (precomputed or cached hidden states).

With `ReasonerConfig(input="token_embeddings")` there is no backbone: learned token embeddings
(`latentreason.embeddings`) take its place (TRM as published; `LatentReasonerModel.from_config`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from . import hub
from . import trajectories as trajectories_lib
from .adapter_state import check_adapter_state_dict, without_backbone
from .backbone import FrozenBackbone, load_backbone, unwrap_peft
from .config import ReasonerConfig
from .embeddings import TokenEmbeddings
from .heads import OutputHead, build_output_head
from .heads.lm import move_padding
from .hub.load import base_commit, base_to_load, warn_if_other_revision
from .lora import apply_lora
from .losses import LossKind, supervision_loss
from .reasoner import Carry, Reasoner, RMSNorm
from .trajectories import RefineOutput


@dataclass
class ReasonerModelOutput(ModelOutput):
    """One supervision step of a `LatentReasonerModel`."""

    loss: torch.Tensor | None = None  # task loss + halt_loss_weight * halting loss (when labels are given)
    logits: torch.Tensor | None = None  # token classification (B, L, C); sequence (B, C); LM paths (B, K, V)
    halt_logits: torch.Tensor | None = None  # (B,) > 0 means "halt"
    carry: Carry | None = None  # detached; pass it back in to refine further
    task_loss: torch.Tensor | None = None
    halt_loss: torch.Tensor | None = None
    exact: torch.Tensor | None = None  # (B,) bool: the whole prediction is right (when labels are given)


def fixed_projection(width_in: int, width_out: int, seed: int) -> torch.Tensor:
    """The fixed random projection (width_in, width_out) of `feature_projection`: Gaussian, variance 1 / width_out
    (lengths kept on average, Johnson-Lindenstrauss), the same matrix for the same seed on any machine (CPU generator)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(width_in, width_out, generator=generator) / width_out**0.5


class LatentReasonerModel(nn.Module):
    """A frozen Hugging Face backbone with a TRM-style recursive reasoner on top.

    Build one with `attach_reasoner`; reload a saved one with `LatentReasonerModel.from_pretrained`.
    Only the reasoner, the input projection, the answer slots and the output head train.
    `backbone` is None for `input="token_embeddings"` (see `from_config`).
    """

    def __init__(self, backbone: FrozenBackbone | None, config: ReasonerConfig) -> None:
        super().__init__()
        if (backbone is None) != (config.input == "token_embeddings"):
            raise ValueError(
                "A reasoner with input='token_embeddings' reads no backbone (build it with LatentReasonerModel.from_config); "
                "one with input='backbone' needs one (build it with attach_reasoner)."
            )
        if backbone is not None:
            _check_backbone(backbone, config)
        self.config = config
        self.backbone = backbone
        self.token_embeddings = TokenEmbeddings(config) if backbone is None else None
        self.feature_size = config.hidden_size if backbone is None else backbone.hidden_size
        if backbone is not None and config.feature_projection is not None:
            # Fixed, seeded and rebuilt on load (a buffer outside the state dict): cached features and raw text
            # both pass through it, so the cache can store the narrow features and predict sees the same input.
            self.register_buffer("feature_projector", fixed_projection(backbone.hidden_size, config.feature_projection,
                                                                       config.feature_projection_seed), persistent=False)
            self.feature_size = config.feature_projection
        else:
            self.feature_projector = None
        # Token embeddings have the reasoner's width already: no projection.
        self.input_proj = nn.Linear(self.feature_size, config.hidden_size, bias=False) if backbone is not None else nn.Identity()
        self.input_norm = RMSNorm(config.hidden_size, config.norm_eps) if config.feature_norm else nn.Identity()
        slots = config.answer_slots
        # Unit scale, like the RMS-normalised features beside them: tiny slots (e.g. std 0.02) start out all
        # alike, and the K slots of the LM paths then take long to tell their answer tokens apart.
        self.answer_slots = nn.Parameter(torch.randn(slots, config.hidden_size)) if slots else None
        # Before the input: TRM's puzzle-embedding positions (convert-trm fills them from a checkpoint). On token
        # embeddings they are embedded like the tokens (scaled by sqrt(d)) and start at zero, as TRM's do.
        self.prefix_slots = None
        if config.prefix_slots:
            prefix = torch.zeros if self.token_embeddings is not None else torch.randn
            self.prefix_slots = nn.Parameter(prefix(config.prefix_slots, config.hidden_size))
        self.reasoner = Reasoner(config)
        self.head: OutputHead = build_output_head(config, backbone)
        self._reasoner_enabled = True

    # --- the frozen part ---------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: ReasonerConfig) -> LatentReasonerModel:
        """A fresh reasoner on learned token embeddings (`input="token_embeddings"`): no base model at all.

        Example:
            >>> from latentreason import LatentReasonerModel, ReasonerConfig
            >>> config = ReasonerConfig(input="token_embeddings", vocab_size=11, hidden_size=32, num_heads=2, num_labels=11)
            >>> model = LatentReasonerModel.from_config(config)
            >>> model.refine(torch.randint(0, 11, (2, 9)), steps=2).logits.shape
            torch.Size([2, 9, 11])
        """
        if config.input != "token_embeddings":
            raise ValueError(
                "LatentReasonerModel.from_config builds a reasoner on learned token embeddings (input='token_embeddings'); "
                "to read a Hugging Face model use attach_reasoner(base, config)."
            )
        return cls(None, config)

    @property
    def backbone_trains(self) -> bool:
        """True when the input side trains (LoRA on the backbone, or token embeddings): then features need
        gradients, run at every supervision step, and can't be cached."""
        if self.backbone is None:
            return True
        return any(p.requires_grad for p in self.backbone.parameters())

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
               token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Backbone hidden states of the chosen layer (B, L, D), as float32 (or the token embeddings (B, L, d)).

        With `feature_projection: k` they come out projected by the fixed random matrix: (B, L, k).
        """
        if self.token_embeddings is not None:
            return self.token_embeddings(input_ids)
        features = self.backbone(input_ids=input_ids, attention_mask=attention_mask, with_grad=self.backbone_trains,
                                 token_type_ids=token_type_ids)
        features = features.float()
        return features if self.feature_projector is None else features @ self.feature_projector.to(features.device, features.dtype)

    def embed_inputs(self, features: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Project features, put the prefix before and the answer slots after: x (B, P + L + K, d), mask (B, P + L + K)."""
        B, L, _ = features.shape
        if features.shape[-1] != self.feature_size:
            source = "the backbone's hidden size" if self.backbone is not None else "the token embeddings' width"
            raise ValueError(
                f"features must have {source} {self.feature_size} in the last dimension, got shape {tuple(features.shape)}."
            )
        # A backbone spread over devices (device_map) returns its features where its last layer ran: the reasoner's device.
        x = self.input_norm(self.input_proj(features.to(device=self.reasoner_device, dtype=self.answer_dtype)))  # (B, L, d)
        mask = torch.ones(B, L, dtype=torch.long, device=x.device) if attention_mask is None else attention_mask.to(x.device).long()
        if self.answer_slots is not None:
            slots = self.answer_slots.to(x.dtype).expand(B, -1, -1)
            x = torch.cat([x, slots], dim=1)
            mask = torch.cat([mask, mask.new_ones(B, slots.shape[1])], dim=1)
        if self.prefix_slots is not None:
            prefix = self.prefix_slots.to(x.dtype).expand(B, -1, -1)
            if self.token_embeddings is not None:
                prefix = self.input_norm(self.token_embeddings.embed_prefix(prefix))
            x = torch.cat([prefix, x], dim=1)
            mask = torch.cat([mask.new_ones(B, prefix.shape[1]), mask], dim=1)
        return x, mask

    @property
    def _input_weight(self) -> torch.Tensor:
        """The first weight of the input side: the input projection, or the token embeddings when there is no backbone."""
        source = self.input_proj if isinstance(self.input_proj, nn.Linear) else self.token_embeddings.embed
        return source.weight

    @property
    def answer_dtype(self) -> torch.dtype:
        """The dtype the input side computes in (float32 unless converted): features are cast to it."""
        return self._input_weight.dtype

    @property
    def device_mapped(self) -> bool:
        """True when the backbone was loaded with a `device_map`: it stays where the map put it (never `.to()` it whole)."""
        return self.backbone is not None and bool(getattr(unwrap_peft(self.backbone.model), "hf_device_map", None))

    @property
    def reasoner_device(self) -> torch.device:
        """The device the trainable part computes on (with a `device_map`, the map's first device).

        Read off the input side's weight, as `answer_dtype` is: a module put in the reasoner's place (the
        benchmarks' linear, depth-stack and slots controls) may have no `answer_init`, or no parameters at all.
        """
        return self._input_weight.device

    def check_length(self, length: int) -> None:
        limit = self.config.max_length
        if limit is not None and length > limit:
            raise ValueError(
                f"Input of {length} tokens is longer than the reasoner's max_length={limit}"
                + (" (the mlp mixer's weights span a fixed length)" if self.config.mixer == "mlp" else "")
                + ": shorten the input, or build the reasoner with a larger max_length. Nothing is truncated silently."
            )

    # --- one supervision step ------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        carry: Carry | None = None,
        features: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        *,
        active: torch.Tensor | None = None,
        loss_kind: LossKind = "softmax",
        task_weight: torch.Tensor | None = None,
        task_labels: torch.Tensor | None = None,
    ) -> ReasonerModelOutput:
        """One supervision step. Give `input_ids` (the backbone runs) or `features` (it does not).

        `token_type_ids` (from BERT-style tokenizers) reach the backbone, so `model(**tokenizer(...))` works.
        With `labels`, `loss` is the supervision loss (`latentreason.losses.supervision_loss`): the task loss
        (`loss_kind`: softmax or stablemax cross-entropy; x `task_weight` when given) + `halt_loss_weight` x the
        halting BCE. `active` (B,) bool leaves halted samples out of it (what the trainer passes). `task_labels`
        replace `labels` as the task loss's targets for this step (Deep Improvement Supervision); "exactly
        right" and the halting target still read `labels`.

        Example:
            >>> out = model(input_ids, attention_mask, labels=labels)        # doctest: +SKIP
            >>> out = model(input_ids, attention_mask, carry=out.carry)      # refine once more  # doctest: +SKIP
        """
        if features is None and input_ids is None:
            raise ValueError("Pass `input_ids` (the backbone encodes them) or precomputed `features`.")
        # Check the inputs before the backbone runs: its own errors would not name the fix.
        given = input_ids if features is None else features
        num_inputs = given.shape[1]
        shape = (given.shape[0], num_inputs)
        self.check_length(num_inputs)
        if attention_mask is not None and tuple(attention_mask.shape) != shape:
            raise ValueError(f"attention_mask must have shape (batch, length) = {shape}, got {tuple(attention_mask.shape)}.")
        if labels is not None:
            self.head.check_labels(labels, shape)
        if token_type_ids is not None and tuple(token_type_ids.shape) != shape:
            raise ValueError(f"token_type_ids must have shape (batch, length) = {shape}, got {tuple(token_type_ids.shape)}.")
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids)

        x, mask = self.embed_inputs(features, attention_mask)
        if self._reasoner_enabled:
            step = self.reasoner(x, carry, mask)
            answer, halt_logits, carry = step.answer, step.halt_logits, step.carry
        else:  # the bare backbone through the same head, for A/B comparisons
            answer, halt_logits, carry = x, x.new_full((x.shape[0],), -torch.inf), None
        answer, mask = answer[:, self.config.prefix_slots:], mask[:, self.config.prefix_slots:]  # the heads read inputs and slots
        # The latent_prefix path runs the frozen LM over the prompt (and the answer, with teacher forcing).
        prompt = dict(input_ids=input_ids, attention_mask=attention_mask, labels=labels) if self.head.reads_prompt else {}
        logits = self.head(answer, mask, num_inputs, **prompt)

        output = ReasonerModelOutput(logits=logits, halt_logits=halt_logits, carry=carry)
        if labels is not None:
            losses = supervision_loss(
                self.head, logits, halt_logits, labels, halting=self.config.halting and self._reasoner_enabled,
                halt_loss_weight=self.config.halt_loss_weight, kind=loss_kind, active=active, task_weight=task_weight,
                task_labels=task_labels,
            )
            output.loss, output.task_loss, output.halt_loss, output.exact = losses.loss, losses.task_loss, losses.halt_loss, losses.exact
        return output

    @torch.no_grad()
    def refine(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        steps: int | None = None,
        halt: bool = False,
        token_type_ids: torch.Tensor | None = None,
        *,
        trajectories: int = 1,
        noise: float = 0.0,
        select: trajectories_lib.Select = "halt",
        seed: int = 0,
        every_step: bool = True,
    ) -> RefineOutput:
        """Test-time refinement: run up to `steps` (default N_sup) supervision steps and keep each step's logits.

        With `halt=True` a sample stops at the first step whose halt probability is above
        `config.halt_threshold` (0.5 by default) and keeps that
        step's prediction (the others go on; the batch stops when all have halted).

        Depth: any `steps`, also far past the trained N_sup; under no_grad nothing is kept for backward,
        and with `every_step=False` only the final logits are kept, so memory stays flat in `steps`.
        Breadth: `trajectories=M` runs M copies of each example in one batch (the backbone reads it once),
        all but the first with Gaussian `noise` (std) added to the carry after every step (drawn from `seed`),
        and keeps one per example: `select="halt"` the most confident halting head, `"vote"` the most
        frequent final answer (see `latentreason.trajectories`). `step_logits` (and `step_halt_logits`) are the kept trajectory's.
        """
        if steps is None:
            steps = self.config.max_supervision_steps
        elif isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"`steps` must be a whole number >= 1 of refinement steps, got {steps!r} (None runs max_supervision_steps).")
        trajectories_lib.check(trajectories, noise, select)
        if features is None:
            features = self.encode(input_ids, attention_mask, token_type_ids)
        return trajectories_lib.refine(self, features, input_ids, attention_mask, steps=steps, halt=halt and self._reasoner_enabled,
                                       trajectories=trajectories, noise=noise, select=select, seed=seed, every_step=every_step)

    # --- text answers (the LM output paths) ------------------------------------------------------
    @torch.no_grad()
    def answer_latents(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, steps: int | None = None
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The answer latent after each refinement step 1..`steps` (default N_sup): a list of (B, L + K, d), and the mask.

        The backbone reads the prompt once; no halting. With the reasoner disabled, one entry: the projected features.
        """
        steps = steps or self.config.max_supervision_steps
        self.check_length(input_ids.shape[1])
        x, mask = self.embed_inputs(self.encode(input_ids, attention_mask), attention_mask)
        if not self._reasoner_enabled:
            return [x[:, self.config.prefix_slots:]], mask[:, self.config.prefix_slots:]
        carry, answers = None, []
        for _ in range(steps):
            carry = self.reasoner(x, carry, mask).carry
            answers.append(carry.answer[:, self.config.prefix_slots:])
        return answers, mask[:, self.config.prefix_slots:]

    @torch.no_grad()
    def answer_latent(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer latent after `steps` (default N_sup) refinement steps: (B, L + K, d) and its mask (no halting)."""
        answers, mask = self.answer_latents(input_ids, attention_mask, steps)
        return answers[-1], mask

    @torch.no_grad()
    def generate(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *, steps: int | None = None, **generate_kwargs: Any
    ) -> torch.Tensor:
        """Text answers, for the LM output paths: token ids (B, new_tokens), like transformers' `generate`.

        The reasoner runs `steps` refinement steps (default `max_supervision_steps`) once per prompt;
        then `latent_prefix` hands [prompt | thoughts] to the LM's own `generate` (greedy or sampling,
        `max_new_tokens`, ... as given), and `lm_head` returns each slot's argmax token up to the end
        token. Prompts may be padded on either side (left padding is what transformers expects).

        Example:
            >>> prompts = encoder.prompts(["two plus three"])          # doctest: +SKIP
            >>> encoder.decode(model.generate(**prompts, max_new_tokens=4))  # doctest: +SKIP
            ['five']
        """
        return self.generate_steps(input_ids, attention_mask, steps=steps, every_step=False, **generate_kwargs)[-1]

    @torch.no_grad()
    def generate_steps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        steps: int | None = None,
        every_step: bool = True,
        **generate_kwargs: Any,
    ) -> list[torch.Tensor]:
        """The text answer after each refinement step 1..`steps`: a list of token-id tensors, one per step.

        The prompt is encoded once and the refinement runs once (the answer after step k is the one
        that `generate(steps=k)` gives, since refinement from a fresh carry is deterministic). Cheap
        for `lm_head` (one read of the slots per step); `latent_prefix` runs the LM's `generate` per step.
        With `every_step=False`, only the last step's answer (a list of one): what `generate` returns.
        """
        if not hasattr(self.head, "generate"):
            raise ValueError(
                f"output={self.config.output!r} predicts labels, not text: use model.refine(...) and its logits. "
                "generate() is for output='lm_head' or 'latent_prefix'."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        # The backbone is a causal LM: right padding gives every prompt the positions it has alone.
        input_ids, attention_mask = move_padding(input_ids, attention_mask, "right")
        answers, mask = self.answer_latents(input_ids, attention_mask, steps)
        if not every_step:
            answers = answers[-1:]
        return [
            self.head.generate(answer, mask, input_ids.shape[1], input_ids, attention_mask, **generate_kwargs) for answer in answers
        ]

    # --- PEFT-style conveniences ---------------------------------------------------------------
    @contextlib.contextmanager
    def disable_reasoner(self) -> Iterator[None]:
        """Inside this block the recursion is skipped: the projected backbone features go straight to the head.

        Example:
            >>> with model.disable_reasoner():           # doctest: +SKIP
            ...     baseline = model(input_ids, attention_mask).logits
        """
        previous, self._reasoner_enabled = self._reasoner_enabled, False
        try:
            yield
        finally:
            self._reasoner_enabled = previous

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The reasoner adapter's weights (everything but the backbone), detached, for saving.

        LoRA weights on the backbone, when used, are saved apart in PEFT's own format (see `latentreason.hub`).
        """
        return {name: tensor.detach() for name, tensor in without_backbone(self.state_dict()).items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor], source: str = "state dict") -> None:
        """Load weights saved by `adapter_state_dict`; missing, unexpected or misshapen tensors are named."""
        check_adapter_state_dict(state, self.adapter_state_dict(), source, "Was it saved with a different ReasonerConfig?")
        self.load_state_dict(state, strict=False)

    def train(self, mode: bool = True) -> LatentReasonerModel:
        super().train(mode)
        if self.backbone is not None:
            self.backbone.train(mode)  # stays in eval mode itself; see FrozenBackbone.train
        return self

    # --- save / load / publish (the files: latentreason.hub) ------------------------------------
    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> Path:
        """Write the adapter into a folder: see `latentreason.hub.save_pretrained` for the options."""
        return hub.save_pretrained(self, save_directory, **kwargs)

    def read_backbone_layer(self, layer: int) -> None:
        """Read another hidden layer of the backbone from now on (before training: `model.layer: auto` picks one)."""
        self.backbone.read_layer(layer)
        self.config = self.config.replace(backbone_layer=layer)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> Any:
        """Save into a temporary folder and upload it: see `latentreason.hub.push_to_hub` for the options."""
        return hub.push_to_hub(self, repo_id, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        base_model: str | PreTrainedModel | None = None,
        trust_remote_code: bool = False,
        dtype: torch.dtype | str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool | None = None,
        device_map: str | dict[str, Any] | None = None,
        offload_folder: str | os.PathLike | None = None,
        max_memory: dict[Any, Any] | None = None,
    ) -> LatentReasonerModel:
        """Load a saved reasoner from a local folder or a Hub repo, on its base model, ready for inference.

        Args:
            name_or_path: a folder written by `save_pretrained`, or a Hub repo id.
            revision: the reasoner repo's branch, tag or commit (Hub only).
            base_model: attach to this base instead of the one in the config: a local folder, a Hub id,
                or a loaded `PreTrainedModel` (used as is; LoRA layers, if any, are injected into it).
                A base whose commit differs from the pinned one is used with a warning.
            trust_remote_code: let the base model's checkpoint run its own Python code. Only if you trust it.
            dtype: dtype of the backbone when it is loaded here (the reasoner stays in float32); default: the dtype
                it was trained with (`backbone_dtype` in the adapter's config), else the checkpoint's.
            device_map, offload_folder, max_memory: spread a backbone larger than one device (see `attach_reasoner`).
            cache_dir, token, local_files_only: as in `huggingface_hub`; `HF_HUB_OFFLINE=1` reads only the cache.

        Example:
            >>> from latentreason import LatentReasonerModel                             # doctest: +SKIP
            >>> model = LatentReasonerModel.from_pretrained("user/sudoku-reasoner")     # doctest: +SKIP
            >>> model = LatentReasonerModel.from_pretrained("user/sudoku-reasoner", base_model="/models/Qwen2.5-0.5B")  # doctest: +SKIP
        """
        folder = hub.resolve_folder(name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
        config, weights, lora = hub.read_folder(folder)  # before the base model loads: a broken file fails fast
        if config.input == "token_embeddings":  # no base model to fetch
            if base_model is not None:
                raise ValueError(f"{name_or_path} is a reasoner on learned token embeddings: it reads no base model, so base_model= has no use. Leave it out.")
            model = cls.from_config(config)
            model.load_adapter_state_dict(weights, source=str(folder / hub.WEIGHTS_NAME))
            return model.eval()

        base, base_revision = base_to_load(config, base_model)
        hub_options = {key: value for key, value in dict(cache_dir=cache_dir, token=token, local_files_only=local_files_only).items() if value is not None}
        try:
            model = attach_reasoner(
                base,
                config,
                revision=base_revision,
                trust_remote_code=trust_remote_code,
                dtype=dtype if dtype is not None else config.backbone_dtype,
                device_map=device_map,
                offload_folder=offload_folder,
                max_memory=max_memory,
                **hub_options,
            )
        except ValueError as error:
            described = base if isinstance(base, str) else type(base).__name__
            raise ValueError(f"Cannot attach the reasoner from {name_or_path} to {described}: {error}") from error
        warn_if_other_revision(config, base_commit(base, base_revision, hub_options))
        if base_model is not None:
            # The adapter still describes the base it was trained on, whatever copy it runs on here.
            model.config = model.config.replace(
                base_model_name_or_path=config.base_model_name_or_path, base_model_revision=config.base_model_revision
            )
        if lora is not None:
            from peft import PeftModel

            model.backbone.model = PeftModel.from_pretrained(model.backbone.model, str(lora), is_trainable=False)
        model.load_adapter_state_dict(weights, source=str(folder / hub.WEIGHTS_NAME))
        return model.eval()


def _check_backbone(backbone: FrozenBackbone, config: ReasonerConfig) -> None:
    """The backbone is the kind the config was built for (hidden size, model type)."""
    if config.backbone_hidden_size is not None and config.backbone_hidden_size != backbone.hidden_size:
        raise ValueError(
            f"This reasoner was built for a backbone with hidden size {config.backbone_hidden_size} "
            f"({config.backbone_model_type}), but the given backbone {backbone.model_type} has hidden size "
            f"{backbone.hidden_size}. Attach it to the base model it was trained on ({config.base_model_name_or_path})."
        )
    if config.backbone_model_type is not None and config.backbone_model_type != backbone.model_type:
        raise ValueError(
            f"This reasoner was built for a {config.backbone_model_type} backbone "
            f"({config.base_model_name_or_path}), but the given backbone is a {backbone.model_type}. "
            "Attach it to the base model it was trained on, or pass base_model= pointing at a copy of it."
        )


def attach_reasoner(
    base: str | PreTrainedModel,
    config: ReasonerConfig,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    lora: Any = None,
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict[Any, Any] | None = None,
    torch_dtype: torch.dtype | str | None = None,
    **load_kwargs: Any,
) -> LatentReasonerModel:
    """Attach a fresh recursive reasoner to a frozen Hugging Face model.

    Args:
        base: a Hub id, a local folder, or an already-loaded `PreTrainedModel`.
        config: the reasoner's `ReasonerConfig`; the backbone fields are filled in here.
        revision: the base model's revision (branch, tag or commit hash) when `base` is a name.
        trust_remote_code: run the checkpoint's own modelling code (only if you trust it).
        dtype: dtype to load the backbone in (the reasoner itself always trains in float32): a `torch.dtype` or its
            name ("bfloat16", "float16", "float32", "auto"); recorded in the adapter (`backbone_dtype`) so that
            `from_pretrained` loads the backbone the same way. `torch_dtype` is the same (transformers 4's name).
        device_map: a backbone larger than one device: "auto" (or "balanced", "sequential": Accelerate places its
            modules within `max_memory`), or a mapping module name -> device (0, "cuda:1", "cpu", "disk"); None loads
            it whole, as usual. The reasoner sits on the map's first device; features are moved there.
        offload_folder: where "disk" modules keep their weights (when they are not read from the checkpoint itself).
        max_memory: the memory each device may hold, e.g. {0: "20GiB", "cpu": "60GiB"} (with a strategy map).
        lora: optional LoRA on the backbone, trained with the reasoner: a `peft.LoraConfig` or a dict with
            `rank`, `alpha`, `target_modules`, `dropout` (see `latentreason.lora`). The backbone's own weights
            stay frozen; `model.backbone.model` becomes a `peft.PeftModel` and the feature cache can't be used.

    Example:
        >>> from latentreason import ReasonerConfig, attach_reasoner          # doctest: +SKIP
        >>> model = attach_reasoner("Qwen/Qwen2.5-0.5B", ReasonerConfig(num_labels=10))  # doctest: +SKIP
        >>> model.print_trainable_parameters()                                # doctest: +SKIP
    """
    backbone, config = load_backbone(base, config, revision=revision, trust_remote_code=trust_remote_code, dtype=dtype,
                                     device_map=device_map, offload_folder=offload_folder, max_memory=max_memory,
                                     torch_dtype=torch_dtype, **load_kwargs)
    if lora is not None:
        apply_lora(backbone, lora)
    model = LatentReasonerModel(backbone, config)
    if model.device_mapped:
        place_trainable(model, backbone.device)
    return model


def place_trainable(model: LatentReasonerModel, device: torch.device) -> None:
    """Move everything but the backbone to `device`, leaving the backbone where its device map put it (a plain
    `model.to` would pull offloaded and spread weights onto one device). Modules the head shares with the
    backbone (the LM's norm and lm_head) stay where they are."""
    frozen = {id(module) for module in model.backbone.modules()}
    for module in model.modules():
        if id(module) in frozen:
            continue
        for parameter in module.parameters(recurse=False):
            parameter.data = parameter.data.to(device)
        for name, buffer in module.named_buffers(recurse=False):
            module._buffers[name] = buffer.to(device)
