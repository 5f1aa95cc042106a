"""Convert a checkpoint of the TRM reference code into a latentreason adapter (`latentreason convert-trm`).

The reference (SamsungSAILMontreal/TinyRecursiveModels) saves `model.state_dict()` with `torch.save`
and its settings in `all_config.yaml` beside it. This module reads both without running any of the
checkpoint's code (`torch.load(weights_only=True)`: tensors only, never unpickled objects), maps
every tensor onto a `LatentReasonerModel` on learned token embeddings (`input="token_embeddings"`)
and saves it like any adapter (config, safetensors, model card), so it loads, runs, refines and
publishes without the reference's training stack.

The network is the reference's exactly: post-norm blocks without norm scales, the mlp mixer's norm
over the sequence axis, SwiGLU widths rounded up to 256, the halting head on the first position
(its `q_head` halt row), tokens scaled by sqrt(hidden), `H_init`/`L_init` as the initial carry.
Puzzle-identifier embeddings become fixed prefix positions: with one identifier (Sudoku, mazes)
that is exact; with several (ARC), one identifier's embedding is kept (`puzzle_id`) and the
conversion says so, since latentreason's inputs carry no puzzle identifier.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .config import ReasonerConfig
from .model import LatentReasonerModel

CONFIG_FILE = "all_config.yaml"  # what the reference's pretrain.py writes next to its checkpoints
_SWIGLU_MULTIPLE = 256  # the reference rounds every SwiGLU width up to a multiple of this
_BLOCK_WEIGHTS = {  # reference name under L_level.layers.{i}. -> ours under reasoner.net.blocks.{i}.
    "self_attn.qkv_proj.weight": "mix.qkv.weight",
    "self_attn.o_proj.weight": "mix.out.weight",
    "mlp_t.gate_up_proj.weight": "mix.mlp.gate_up.weight",
    "mlp_t.down_proj.weight": "mix.mlp.down.weight",
    "mlp.gate_up_proj.weight": "mlp.gate_up.weight",
    "mlp.down_proj.weight": "mlp.down.weight",
}


@dataclass
class Conversion:
    """A converted checkpoint: the config, the weights by latentreason's names, the model they load into
    (in eval mode), and what was reported."""

    config: ReasonerConfig
    weights: dict[str, torch.Tensor]
    model: LatentReasonerModel
    notes: list[str] = field(default_factory=list)


def read_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The reference's state dict with its wrapper prefixes (`_orig_mod.`, `model.`) removed: keys start at `inner.`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the file the TRM reference saved (e.g. checkpoints/.../step_12345).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path} holds Python objects besides tensors, which could run code when unpickled, so it is not opened "
            f"({str(error).splitlines()[0]}). Save only the model's state_dict with the reference code and convert that."
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise ValueError(f"{path} is not a readable torch checkpoint ({error}): it may be truncated; copy it again.") from error
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # a training state that nests the model's weights
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(state).__name__}): it is not a TRM model checkpoint.")
    inner = {}
    for key, tensor in state.items():
        position = key.find("inner.")
        if position < 0:
            raise ValueError(f"{path}: tensor {key!r} is not part of a TRM model (expected keys like 'model.inner.lm_head.weight').")
        inner[key[position:]] = tensor
    return inner


def read_arch(path: str | os.PathLike) -> dict[str, Any]:
    """The `arch` section of the reference's `all_config.yaml` (or a YAML file holding the arch settings themselves)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the TRM settings (cycles, heads, ...) are not in the checkpoint's tensors. Pass the "
            f"{CONFIG_FILE} that the reference wrote beside the checkpoint (--config)."
        )
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML ({error}).") from error
    arch = values.get("arch", values) if isinstance(values, dict) else None
    if not isinstance(arch, dict):
        raise ValueError(f"{path} must hold a mapping with an `arch` section (the reference's {CONFIG_FILE}).")
    return arch


def convert(state: dict[str, torch.Tensor], arch: dict[str, Any], *, puzzle_id: int = 0, source: str = "the checkpoint") -> Conversion:
    """Map a reference state dict (keys from `inner.`) and its arch settings onto a latentreason reasoner."""
    notes: list[str] = []
    state = {key: tensor.float() for key, tensor in state.items()}

    def need(key: str) -> torch.Tensor:
        if key not in state:
            raise ValueError(f"{source} has no tensor {key!r}: it is not a checkpoint of TRM's TinyRecursiveReasoningModel_ACTV1.")
        return state[key]

    def setting(name: str, default: Any = None) -> Any:
        if name in arch and arch[name] is not None:
            return arch[name]
        if default is None:
            raise ValueError(f"The TRM settings have no `{name}`: pass the {CONFIG_FILE} written with the checkpoint (--config).")
        return default

    embed = need("inner.embed_tokens.embedding_weight")
    vocab_size, hidden = embed.shape
    layer_ids = sorted({int(key.split(".")[3]) for key in state if key.startswith("inner.L_level.layers.")})
    if not layer_ids:
        raise ValueError(f"{source} has no blocks under inner.L_level.layers: it is not a TRM checkpoint.")
    mixer = "mlp" if f"inner.L_level.layers.{layer_ids[0]}.mlp_t.gate_up_proj.weight" in state else "attention"
    encodings = str(setting("pos_encodings", "rope"))
    positions = {"rope": "rotary", "learned": "learned"}.get(encodings, "none")
    if mixer == "mlp" and positions == "rotary":
        positions = "none"  # the reference computes rotary tables but its mlp mixer never reads them

    puzzle = state.get("inner.puzzle_emb.weights")
    prefix = 0
    if puzzle is not None:
        prefix = int(setting("puzzle_emb_len", 16)) or -(-puzzle.shape[1] // hidden)
    if mixer == "mlp":
        length = need(f"inner.L_level.layers.{layer_ids[0]}.mlp_t.gate_up_proj.weight").shape[1] - prefix
    elif positions == "learned":
        length = need("inner.embed_pos.embedding_weight").shape[0] - prefix
    else:
        length = arch.get("seq_len")  # attention reads any length; only a learned table or the mlp fixes it

    config = ReasonerConfig(
        input="token_embeddings", vocab_size=int(vocab_size), hidden_size=int(hidden), num_layers=len(layer_ids),
        num_heads=int(setting("num_heads")) if mixer == "attention" else int(arch.get("num_heads") or 1),
        expansion=float(setting("expansion")), mixer=mixer, max_length=int(length) if length else None,
        mlp_norm="sequence", norm_eps=float(setting("rms_norm_eps", 1e-5)), norm_scale=False,
        rope_theta=float(setting("rope_theta", 10000.0)), swiglu_multiple=_SWIGLU_MULTIPLE, positions=positions,
        latent_steps=int(setting("L_cycles")), cycles=int(setting("H_cycles")),
        max_supervision_steps=int(setting("halt_max_steps", 16)),  # halt_exploration_prob is training's (TrainingConfig)
        halt_read="first", output="token_classification", num_labels=int(need("inner.lm_head.weight").shape[0]),
        prefix_slots=prefix, feature_norm=False,
    )

    weights: dict[str, torch.Tensor] = {
        "token_embeddings.embed.weight": embed,
        "head.classifier.weight": need("inner.lm_head.weight"),
        "reasoner.answer_init": need("inner.H_init"),
        "reasoner.latent_init": need("inner.L_init"),
        "reasoner.halt_head.weight": need("inner.q_head.weight")[:1],
        "reasoner.halt_head.bias": need("inner.q_head.bias")[:1],
    }
    if not arch.get("no_ACT_continue", True):
        notes.append("The checkpoint was trained with a Q-learning 'continue' logit (no_ACT_continue: false); latentreason halts on the halt logit alone, the continue row is dropped.")
    used = {"inner.embed_tokens.embedding_weight", "inner.lm_head.weight", "inner.H_init", "inner.L_init", "inner.q_head.weight", "inner.q_head.bias"}
    for index in layer_ids:
        for theirs, ours in _BLOCK_WEIGHTS.items():
            key = f"inner.L_level.layers.{index}.{theirs}"
            if key in state:
                weights[f"reasoner.net.blocks.{index}.{ours}"] = state[key]
                used.add(key)

    if positions == "learned":
        weights["token_embeddings.positions"] = need("inner.embed_pos.embedding_weight")
        used.add("inner.embed_pos.embedding_weight")
    if puzzle is not None:
        used.add("inner.puzzle_emb.weights")
        count = puzzle.shape[0]
        if not 0 <= puzzle_id < count:
            raise ValueError(f"puzzle_id={puzzle_id} is out of range: the checkpoint has {count} puzzle identifiers (0..{count - 1}).")
        if count > 1:
            notes.append(
                f"The checkpoint has puzzle embeddings for {count} puzzle identifiers; latentreason's inputs carry no identifier, so "
                f"identifier {puzzle_id}'s embedding is kept as {prefix} fixed prefix positions: the converted model equals the "
                "reference on puzzles of that identifier only (choose another with --puzzle-id)."
            )
        # Padded to whole positions, as the reference pads it; embedded with the tokens (positions, scale).
        weights["prefix_slots"] = torch.nn.functional.pad(puzzle[puzzle_id], (0, prefix * hidden - puzzle.shape[1])).view(prefix, hidden)
    unknown = sorted(set(state) - used)
    if unknown:
        raise ValueError(
            f"{source} has tensors this converter does not know: {unknown[:6]}{'...' if len(unknown) > 6 else ''}. "
            "It may come from another variant of the reference (e.g. trm_hier6 or HRM), which latentreason does not run."
        )
    return Conversion(config, weights, _load(config, weights), notes)


def _load(config: ReasonerConfig, weights: dict[str, torch.Tensor]) -> LatentReasonerModel:
    """The converted model; a SwiGLU width other than the config implies means `expansion` was misread."""
    model = LatentReasonerModel.from_config(config)
    expected = model.adapter_state_dict()
    for name, tensor in weights.items():
        if name in expected and tuple(expected[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"The checkpoint's {name} has shape {tuple(tensor.shape)}, but its settings (expansion "
                f"{config.expansion}, hidden {config.hidden_size}) give {tuple(expected[name].shape)}: "
                f"is the {CONFIG_FILE} the one written with this checkpoint?"
            )
    model.load_adapter_state_dict(weights, source="the converted TRM checkpoint")
    return model.eval()


def convert_trm(
    checkpoint: str | os.PathLike, output_dir: str | os.PathLike, *, config_path: str | os.PathLike | None = None, puzzle_id: int = 0,
) -> Conversion:
    """Convert a TRM reference checkpoint and save it as a latentreason adapter in `output_dir`.

    Example:
        >>> conversion = convert_trm("checkpoints/sudoku/step_50000", "trm-sudoku")    # doctest: +SKIP
        >>> model = LatentReasonerModel.from_pretrained("trm-sudoku")                  # doctest: +SKIP
    """
    checkpoint = Path(checkpoint)
    config_path = Path(config_path) if config_path is not None else checkpoint.parent / CONFIG_FILE
    conversion = convert(read_checkpoint(checkpoint), read_arch(config_path), puzzle_id=puzzle_id, source=str(checkpoint))
    conversion.model.save_pretrained(output_dir)
    return conversion
