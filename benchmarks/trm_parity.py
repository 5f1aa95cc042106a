"""Parity with the TRM reference: the same weights, inputs and carry give the same numbers.

For each mixer (attention, mlp) the reference's `TinyRecursiveReasoningModel_ACTV1_Inner` (imported
from a checkout outside the repository, see `benchmarks.trm_reference`) and latentreason's
`Reasoner` + `TokenClassificationHead` get the same weights, in float64:
- the reference's blocks -> our blocks (qkv/o projections, both SwiGLUs); its RMSNorms have no
  scale, ours have one initialised to 1 and left at 1;
- its `q_head` row 0 (the halt logit) -> our halting head, with `halt_read="first"` (it reads the
  first position; no puzzle embedding here);
- its `lm_head` -> our token classifier; its `H_init`/`L_init` -> our initial carry.
The reference's input embedding is bypassed: both read the same input latents `x`. Both run one
supervision step from the same random carry; the loss (token cross-entropy + 0.5 x halting BCE
against a fixed target) is written here once and applied to both outputs, then both backpropagate.
The largest absolute difference is reported for z_H, z_L, the logits, the halting logits and the
gradient of every weight both have.

The reference computes its RMSNorm in float32 even for float64 inputs, so a run "as is" agrees to
float32 rounding. The same run with the reference's norm patched to keep its input dtype shows the
rest of the computation agrees to float64 rounding. Only `grad_mode="last_cycle"` exists in the
reference; the other modes are latentreason's own (tested against loops written in the tests).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from latentreason import ReasonerConfig
from latentreason.heads.classification import TokenClassificationHead
from latentreason.reasoner import Carry, Reasoner

from . import trm_reference
from .harness import machine_info
from .markdown import Images, provenance, table, verdict


@dataclass(frozen=True)
class Settings:
    batch: int = 2
    hidden: int = 96  # with expansion 4, both SwiGLU widths equal the reference's multiple-of-256 rounding
    length: int = 96  # the mlp mixer's sequence SwiGLU: round(4 * 96 * 2/3) = 256, the reference's width too
    attention_length: int = 16
    num_heads: int = 4
    latent_steps: int = 3
    cycles: int = 3
    num_layers: int = 2
    num_labels: int = 10
    seed: int = 0


PRESETS = {"full": Settings(), "quick": Settings(), "tiny": Settings(batch=1, latent_steps=2, cycles=2)}
QUANTITIES = ("z_H", "z_L", "logits", "halt_logits", "gradients")


def _reference_inner(config: ReasonerConfig, length: int, num_labels: int) -> torch.nn.Module:
    model_class = trm_reference._reference_model_class()
    model = model_class(dict(
        batch_size=1, seq_len=length, puzzle_emb_ndim=0, puzzle_emb_len=0, num_puzzle_identifiers=1,
        vocab_size=num_labels, H_cycles=config.cycles, L_cycles=config.latent_steps, H_layers=0,
        L_layers=config.num_layers, hidden_size=config.hidden_size, expansion=config.expansion,
        num_heads=config.num_heads, pos_encodings="rope", rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta,
        halt_max_steps=16, halt_exploration_prob=0.0, forward_dtype="float64", mlp_t=config.mixer == "mlp",
    ))
    return model.inner.double()


def _copy_weights(reference: torch.nn.Module, ours: Reasoner, head: TokenClassificationHead) -> list[tuple[str, torch.nn.Parameter, torch.nn.Parameter]]:
    """Copy the reference's weights into ours; return the (name, reference, ours) pairs of shared weights."""
    pairs = []
    for index, (theirs, mine) in enumerate(zip(reference.L_level.layers, ours.net.blocks)):
        if hasattr(theirs, "self_attn"):
            pairs += [(f"block{index}.qkv", theirs.self_attn.qkv_proj.weight, mine.mix.qkv.weight),
                      (f"block{index}.attn_out", theirs.self_attn.o_proj.weight, mine.mix.out.weight)]
        else:
            pairs += [(f"block{index}.seq_gate_up", theirs.mlp_t.gate_up_proj.weight, mine.mix.mlp.gate_up.weight),
                      (f"block{index}.seq_down", theirs.mlp_t.down_proj.weight, mine.mix.mlp.down.weight)]
        pairs += [(f"block{index}.gate_up", theirs.mlp.gate_up_proj.weight, mine.mlp.gate_up.weight),
                  (f"block{index}.down", theirs.mlp.down_proj.weight, mine.mlp.down.weight)]
    pairs.append(("lm_head", reference.lm_head.weight, head.classifier.weight))
    with torch.no_grad():
        for name, theirs, mine in pairs:
            if theirs.shape != mine.shape:
                raise ValueError(f"{name}: the reference has shape {tuple(theirs.shape)}, ours {tuple(mine.shape)}.")
            mine.copy_(theirs)
        # The halt logit is the reference's q_head output 0; it reads z_H[:, 0].
        reference.q_head.weight.normal_(0.0, 0.1)  # its init is zero: give the halting gradient something to carry
        ours.halt_head.weight.copy_(reference.q_head.weight[:1])
        ours.halt_head.bias.copy_(reference.q_head.bias[:1])
        ours.answer_init.copy_(reference.H_init)
        ours.latent_init.copy_(reference.L_init)
    pairs.append(("halt_head", reference.q_head.weight, ours.halt_head.weight))
    return pairs


def _loss(logits: torch.Tensor, halt_logits: torch.Tensor, labels: torch.Tensor, halt_target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten()) + 0.5 * F.binary_cross_entropy_with_logits(halt_logits, halt_target)


def _input_dtype_rms_norm(hidden_states: torch.Tensor, variance_epsilon: float) -> torch.Tensor:
    """The reference's RMSNorm without its cast to float32."""
    return hidden_states * torch.rsqrt(hidden_states.square().mean(-1, keepdim=True) + variance_epsilon)


def compare(mixer: str, settings: Settings, norm_in_input_dtype: bool, mlp_norm: str = "sequence") -> dict[str, Any]:
    """Largest absolute difference per quantity between the reference and ours, one supervision step in float64.

    `mlp_norm="channel"` runs our older mlp mixer instead (the check must see it differ).
    """
    length = settings.length if mixer == "mlp" else settings.attention_length
    config = ReasonerConfig(
        hidden_size=settings.hidden, num_layers=settings.num_layers, num_heads=settings.num_heads, expansion=4.0,
        mixer=mixer, max_length=length if mixer == "mlp" else None, latent_steps=settings.latent_steps,
        cycles=settings.cycles, halt_read="first", mlp_norm=mlp_norm, output="token_classification", num_labels=settings.num_labels,
    )
    torch.manual_seed(settings.seed)
    reference = _reference_inner(config, length, settings.num_labels)
    ours, head = Reasoner(config).double(), TokenClassificationHead(config).double()
    pairs = _copy_weights(reference, ours, head)

    generator = torch.Generator().manual_seed(settings.seed + 1)
    shape = (settings.batch, length, settings.hidden)
    x, z_H, z_L = (torch.randn(shape, generator=generator, dtype=torch.float64) for _ in range(3))
    labels = torch.randint(0, settings.num_labels, (settings.batch, length), generator=generator)
    halt_target = torch.randint(0, 2, (settings.batch,), generator=generator).double()

    module = importlib.import_module("models.recursive_reasoning.trm")
    original_norm = module.rms_norm
    reference._input_embeddings = lambda inputs, puzzle_identifiers: x  # both read the same input latents
    carry_class = module.TinyRecursiveReasoningModel_ACTV1InnerCarry
    try:
        if norm_in_input_dtype:
            module.rms_norm = _input_dtype_rms_norm
        theirs_carry, theirs_logits, (theirs_halt, _) = reference(
            carry_class(z_H=z_H.clone(), z_L=z_L.clone()),
            {"inputs": labels, "puzzle_identifiers": torch.zeros(settings.batch, dtype=torch.long)},
        )
        _loss(theirs_logits, theirs_halt.double(), labels, halt_target).backward()
    finally:
        module.rms_norm = original_norm

    step = ours(x, Carry(answer=z_H.clone(), latent=z_L.clone()))
    logits = head(step.answer, torch.ones(settings.batch, length), length)
    _loss(logits, step.halt_logits, labels, halt_target).backward()

    def largest(a: torch.Tensor, b: torch.Tensor) -> float:
        return float((a.detach().double() - b.detach().double()).abs().max())

    gradients = {}
    for name, theirs, mine in pairs:
        theirs_grad = theirs.grad[:1] if name == "halt_head" else theirs.grad
        gradients[name] = largest(theirs_grad, mine.grad)
    return {
        "z_H": largest(theirs_carry.z_H, step.carry.answer),
        "z_L": largest(theirs_carry.z_L, step.carry.latent),
        "logits": largest(theirs_logits, logits),
        "halt_logits": largest(theirs_halt, step.halt_logits),
        "gradients": max(gradients.values()),
        "gradients_by_weight": gradients,
        "largest_value": float(max(theirs_carry.z_H.abs().max(), theirs_logits.abs().max())),
    }


def run(settings: Settings) -> dict[str, Any]:
    result: dict[str, Any] = {"settings": asdict(settings), "machine": machine_info(), "available": trm_reference.available()}
    if not result["available"]:
        result["note"] = f"TRM reference not available: {trm_reference.unavailable_reason()}"
        return result
    result["rows"] = [
        {"mixer": mixer, "grad_mode": "last_cycle", "reference_norm": "float64" if patched else "float32 (as is)",
         **compare(mixer, settings, patched)}
        for mixer in ("attention", "mlp") for patched in (False, True)
    ]
    result["tolerance"] = 1e-5
    result["met"] = all(row[name] <= result["tolerance"] for row in result["rows"] for name in QUANTITIES)
    return result


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The section of docs/benchmarks.md: the largest differences from the TRM reference, per mixer and quantity."""
    heading = "## Parity with the TRM reference\n\n"
    if not result.get("available"):
        return heading + f"{result.get('note', 'Not available.')} Command: `{result['command']}`.\n"
    settings = result["settings"]
    rows = [[row["mixer"], row["reference_norm"]] + [f"{row[name]:.1e}" for name in QUANTITIES] for row in result["rows"]]
    return (
        heading
        + "latentreason's `Reasoner` and token head against the reference's `TinyRecursiveReasoningModel_ACTV1_Inner` "
        "(SamsungSAILMontreal/TinyRecursiveModels, imported from a checkout outside the repository): the same weights, input "
        "latents and carry, float64, one supervision step, then one backward of the same loss (token cross-entropy + 0.5 x "
        f"halting BCE). Batch {settings['batch']}, hidden {settings['hidden']}, n={settings['latent_steps']}, T={settings['cycles']}, "
        f"{settings['num_layers']} layers, length {settings['attention_length']} (attention) and {settings['length']} (mlp), "
        "`grad_mode=last_cycle` (the only mode the reference has). Each cell is the largest absolute difference "
        f"(values are up to {max(row['largest_value'] for row in result['rows']):.1f}); gradients: the largest over every weight both have.\n\n"
        + table(["mixer", "reference RMSNorm", "z_H", "z_L", "logits", "halting logits", "gradients"], rows)
        + f"\nGoal: every quantity within {result['tolerance']:.0e} of the reference: {verdict(result['met'])}. "
        "The reference casts its RMSNorm input to float32 and its halting logits to float32 even in float64; with its norm "
        "patched to keep the input dtype (second row of each mixer) the states of the mlp mixer agree to float64 rounding, and "
        "what is left is the float32 halting cast and, for attention, the rotary angles, which both sides compute in float32 "
        "with different formulas.\n\n"
        + provenance(result)
    )
