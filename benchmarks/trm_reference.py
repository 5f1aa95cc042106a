"""The TRM reference implementation (SamsungSAILMontreal/TinyRecursiveModels), timed on our configuration.

Its code is never part of this repository: it is imported from a checkout outside the tree, by
default `/work/scratch/trm` (override with the `LATENTREASON_TRM_PATH` environment variable).
When no checkout is there, `available()` is False and the speed benchmark reports "not available".
The reference needs `pydantic` and `einops`.

Mapping of a `ReasonerConfig` onto the reference's config: `cycles` -> `H_cycles`,
`latent_steps` -> `L_cycles`, `num_layers` -> `L_layers`, `mixer="mlp"` -> `mlp_t=True`, no
puzzle embedding, float32 (bfloat16 is 100x slower on a CPU without bf16 units). The reference
rounds every SwiGLU width up to a multiple of 256; ours does the same with `swiglu_multiple=256`
(`SWIGLU_MULTIPLE`), so both do the same matmuls, in the channel SwiGLU and in the mlp mixer's.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from latentreason import ReasonerConfig
from latentreason.training import adamw

DEFAULT_PATH = "/work/scratch/trm"
SWIGLU_MULTIPLE = 256  # the reference rounds every SwiGLU inner width up to this


def reference_path() -> Path:
    return Path(os.environ.get("LATENTREASON_TRM_PATH", DEFAULT_PATH))


def available() -> bool:
    """True when a TRM checkout and its dependencies can be imported."""
    if not (reference_path() / "models" / "recursive_reasoning" / "trm.py").is_file():
        return False
    return all(importlib.util.find_spec(name) is not None for name in ("pydantic", "einops"))


def unavailable_reason() -> str:
    if not (reference_path() / "models" / "recursive_reasoning" / "trm.py").is_file():
        return f"no TRM checkout at {reference_path()} (set LATENTREASON_TRM_PATH)"
    return "the TRM reference needs `pydantic` and `einops` (pip install pydantic einops)"


def reference_width(size: int, expansion: float) -> int:
    """The reference's SwiGLU inner width: round(expansion * size * 2/3) rounded up to a multiple of 256."""
    return -(round(expansion * size * 2 / 3) // -256) * 256


def _reference_model_class():
    path = str(reference_path())
    if path not in sys.path:
        sys.path.insert(0, path)
    module = importlib.import_module("models.recursive_reasoning.trm")
    return module.TinyRecursiveReasoningModel_ACTV1


def reference_step(config: ReasonerConfig, batch: int, length: int,
                   num_labels: int = 10, seed: int = 0) -> Callable[[], None]:
    """One supervision step (forward, loss, backward, AdamW step) of the reference model, as a callable."""
    model_class = _reference_model_class()
    torch.manual_seed(seed)
    model = model_class(dict(
        batch_size=batch, seq_len=length, puzzle_emb_ndim=0, puzzle_emb_len=0, num_puzzle_identifiers=1,
        vocab_size=num_labels, H_cycles=config.cycles, L_cycles=config.latent_steps, H_layers=0,
        L_layers=config.num_layers, hidden_size=config.hidden_size, expansion=config.expansion,
        num_heads=config.num_heads, pos_encodings="rope", rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta,
        halt_max_steps=config.max_supervision_steps, halt_exploration_prob=0.0, forward_dtype="float32",
        mlp_t=config.mixer == "mlp",
    ))
    model.train()
    optimizer = adamw(list(model.parameters()), lr=1e-4)  # the same optimizer as latentreason's step: compare the models only
    data = {
        "inputs": torch.randint(0, num_labels, (batch, length)),
        "labels": torch.randint(0, num_labels, (batch, length)),
        "puzzle_identifiers": torch.zeros(batch, dtype=torch.long),
    }

    def step() -> None:
        carry = model.initial_carry(data)
        _, outputs = model(carry, data)
        logits = outputs["logits"]
        exact = (logits.argmax(-1) == data["labels"]).all(dim=1).float()
        loss = F.cross_entropy(logits.flatten(0, 1), data["labels"].flatten())
        loss = loss + 0.5 * F.binary_cross_entropy_with_logits(outputs["q_halt_logits"], exact)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step
