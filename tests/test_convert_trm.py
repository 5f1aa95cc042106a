"""`convert-trm`: a checkpoint of the TRM reference becomes an adapter with the reference's outputs.

The round trip needs a checkout of the reference (benchmarks.trm_reference finds it; skipped
without one): the reference's own model class is built from a tiny config, its own
`save_train_state` (pulled out of its pretrain.py, whose other imports are a GPU training stack)
writes the checkpoint, and the converted adapter, saved and reloaded, must give the logits and
halting logits of the reference's ACT model at every supervision step. The other tests need no
checkout: they build state dicts with the reference's key layout by hand.
"""

from __future__ import annotations

import ast
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import trm_reference
from latentreason import LatentReasonerModel
from latentreason.convert_trm import convert, convert_trm, read_checkpoint

needs_reference = pytest.mark.skipif(not trm_reference.available(), reason=trm_reference.unavailable_reason())

ARCH = dict(
    name="recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1", H_cycles=2, L_cycles=3, H_layers=0, L_layers=2,
    hidden_size=16, expansion=4, num_heads=2, halt_max_steps=4, halt_exploration_prob=0.1, rms_norm_eps=1e-5,
    rope_theta=10000.0, no_ACT_continue=True,
)


def _reference_save_train_state():
    """The reference's `save_train_state`, compiled from its pretrain.py alone (the module's imports need CUDA packages)."""
    source = (trm_reference.reference_path() / "pretrain.py").read_text(encoding="utf-8")
    tree = ast.parse(source)
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "save_train_state")
    function.args.args[0].annotation = function.args.args[1].annotation = None
    namespace = {"os": os, "torch": torch}
    exec(compile(ast.Module(body=[function], type_ignores=[]), "pretrain.py", "exec"), namespace)
    return namespace["save_train_state"]


def _reference_model(arch: dict, seq_len: int, vocab: int, puzzles: int):
    trm_reference._reference_model_class()  # puts the checkout on sys.path
    from models.losses import ACTLossHead
    from models.recursive_reasoning.trm import TinyRecursiveReasoningModel_ACTV1

    config = dict(arch, batch_size=3, seq_len=seq_len, vocab_size=vocab, num_puzzle_identifiers=puzzles, forward_dtype="float32")
    model = TinyRecursiveReasoningModel_ACTV1(config)
    with torch.no_grad():  # its q_head starts at zero and its puzzle embeddings at zero: give both something to carry
        model.inner.q_head.weight.normal_(0.0, 0.3)
        model.inner.q_head.bias.normal_(0.0, 0.3)
        if hasattr(model.inner, "puzzle_emb"):
            model.inner.puzzle_emb.weights.normal_(0.0, 1.0)
    return ACTLossHead(model, loss_type="stablemax_cross_entropy").eval()


def _reference_steps(wrapped, inputs: torch.Tensor, puzzle_ids: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Logits and halting logits of the reference's ACT model after each of its halt_max_steps steps (eval mode)."""
    model = wrapped.model
    batch = {"inputs": inputs, "labels": inputs, "puzzle_identifiers": puzzle_ids}
    carry = model.initial_carry(batch)
    logits, halts = [], []
    with torch.no_grad():
        for _ in range(model.config.halt_max_steps):
            carry, outputs = model(carry, batch)
            logits.append(outputs["logits"])
            halts.append(outputs["q_halt_logits"])
    return logits, halts


VARIANTS = {
    "attention_rope_puzzle": dict(pos_encodings="rope", mlp_t=False, puzzle_emb_ndim=16, puzzle_emb_len=2),
    "mlp_learned_puzzle": dict(pos_encodings="learned", mlp_t=True, puzzle_emb_ndim=24, puzzle_emb_len=0),
    "mlp_none_no_puzzle": dict(pos_encodings="none", mlp_t=True, puzzle_emb_ndim=0, puzzle_emb_len=0),
}


def _in_float64(wrapped, monkeypatch: pytest.MonkeyPatch):
    """The reference model computing in float64 throughout (its RMSNorm otherwise rounds to float32)."""
    import models.recursive_reasoning.trm as reference_module

    wrapped.double()
    for module in wrapped.modules():
        if hasattr(module, "cast_to"):
            module.cast_to = torch.float64
    wrapped.model.inner.forward_dtype = torch.float64
    monkeypatch.setattr(reference_module, "rms_norm", lambda h, variance_epsilon: h * torch.rsqrt(h.square().mean(-1, keepdim=True) + variance_epsilon))
    return wrapped


def _our_steps(model: LatentReasonerModel, inputs: torch.Tensor, steps: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    carry, logits, halts = None, [], []
    with torch.no_grad():
        for _ in range(steps):
            out = model(inputs, carry=carry)
            carry = out.carry
            logits.append(out.logits)
            halts.append(out.halt_logits)
    return logits, halts


@needs_reference
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_converted_reference_checkpoint_gives_the_reference_logits(variant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    arch = dict(ARCH, **VARIANTS[variant])
    seq_len, vocab, steps = 9, 11, ARCH["halt_max_steps"]
    wrapped = _reference_model(arch, seq_len, vocab, puzzles=1)
    checkpoint_dir = tmp_path / "checkpoints"
    _reference_save_train_state()(type("Config", (), {"checkpoint_path": str(checkpoint_dir)})(), type("State", (), {"model": wrapped, "step": 7})())
    (checkpoint_dir / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch, "global_batch_size": 3}), encoding="utf-8")

    conversion = convert_trm(checkpoint_dir / "step_7", tmp_path / "adapter")
    assert conversion.notes == []
    model = LatentReasonerModel.from_pretrained(tmp_path / "adapter")
    inputs = torch.randint(0, vocab, (3, seq_len), generator=torch.Generator().manual_seed(1))
    puzzle_ids = torch.zeros(3, dtype=torch.long)

    # float32, as both ship: the first step equal up to float32 rounding (later steps of an untrained net
    # amplify that rounding, the sums running in another order, up to ~1e-2 by step 4 with the mlp mixer).
    theirs_logits, theirs_halts = _reference_steps(wrapped, inputs, puzzle_ids)
    ours_logits = model.refine(inputs, steps=1).step_logits
    assert float((theirs_logits[0] - ours_logits[0]).abs().max()) < 1e-4 * float(theirs_logits[0].abs().max())
    # float64: the same computation, to float64 rounding, at every step, logits and halting logits.
    theirs_logits, theirs_halts = _reference_steps(_in_float64(wrapped, monkeypatch), inputs, puzzle_ids)
    ours_logits, ours_halts = _our_steps(model.double(), inputs, steps)
    for step, (theirs, mine) in enumerate(zip(theirs_logits, ours_logits), start=1):
        assert float((theirs - mine).abs().max()) < 1e-10, (step, float((theirs - mine).abs().max()))
    for theirs, mine in zip(theirs_halts, ours_halts):  # the reference returns its q-head logits cast to float32
        assert float((theirs.double() - mine).abs().max()) < 1e-6
    assert not torch.allclose(theirs_logits[0], theirs_logits[-1])  # the steps differ: each one is checked
    assert (tmp_path / "adapter" / "reasoner.safetensors").is_file() and not list((tmp_path / "adapter").glob("*.bin"))


@needs_reference
def test_several_puzzle_identifiers_are_reported_and_one_is_kept(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arch = dict(ARCH, **VARIANTS["attention_rope_puzzle"])
    wrapped = _reference_model(arch, 9, 11, puzzles=3)
    torch.save(wrapped.state_dict(), tmp_path / "step_1")
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch}), encoding="utf-8")
    conversion = convert_trm(tmp_path / "step_1", tmp_path / "adapter", puzzle_id=2)
    assert len(conversion.notes) == 1 and "3 puzzle identifiers" in conversion.notes[0] and "identifier 2" in conversion.notes[0]
    inputs = torch.randint(0, 11, (3, 9), generator=torch.Generator().manual_seed(2))
    theirs, _ = _reference_steps(wrapped, inputs, torch.full((3,), 2, dtype=torch.long))
    other, _ = _reference_steps(wrapped, inputs, torch.zeros(3, dtype=torch.long))
    ours = conversion.model.refine(inputs, steps=arch["halt_max_steps"]).step_logits[-1]
    assert torch.allclose(theirs[-1], ours, atol=2e-5)  # equal on the kept identifier's puzzles
    assert not torch.allclose(other[-1], ours, atol=1e-3)  # and not on another's
    with pytest.raises(ValueError, match="puzzle_id=5 is out of range"):
        convert_trm(tmp_path / "step_1", tmp_path / "adapter2", puzzle_id=5)


class Payload:
    """An object that unpickling would have to import and build: `weights_only` refuses it."""


def _layout_state(hidden: int = 8, vocab: int = 5, length: int = 4) -> dict[str, torch.Tensor]:
    """A state dict with the reference's key layout (mlp mixer, no puzzle embedding), random values."""
    inner = 256  # the reference rounds both SwiGLU widths up to 256 at these sizes
    state = {
        "_orig_mod.model.inner.embed_tokens.embedding_weight": torch.randn(vocab, hidden),
        "_orig_mod.model.inner.lm_head.weight": torch.randn(vocab, hidden),
        "_orig_mod.model.inner.q_head.weight": torch.randn(2, hidden),
        "_orig_mod.model.inner.q_head.bias": torch.randn(2),
        "_orig_mod.model.inner.H_init": torch.randn(hidden).bfloat16(),
        "_orig_mod.model.inner.L_init": torch.randn(hidden).bfloat16(),
    }
    for index in range(2):
        prefix = f"_orig_mod.model.inner.L_level.layers.{index}."
        state |= {
            prefix + "mlp_t.gate_up_proj.weight": torch.randn(2 * inner, length),
            prefix + "mlp_t.down_proj.weight": torch.randn(length, inner),
            prefix + "mlp.gate_up_proj.weight": torch.randn(2 * inner, hidden),
            prefix + "mlp.down_proj.weight": torch.randn(hidden, inner),
        }
    return state


def test_config_is_read_from_the_tensors_and_the_arch_settings(tmp_path: Path) -> None:
    torch.save(_layout_state(), tmp_path / "step_3")  # keys of a torch.compile'd run (_orig_mod.)
    arch = dict(ARCH, mlp_t=True, pos_encodings="none", puzzle_emb_ndim=0, hidden_size=8)
    conversion = convert(read_checkpoint(tmp_path / "step_3"), arch)
    config = conversion.config
    assert (config.input, config.vocab_size, config.hidden_size, config.num_layers, config.mixer) == ("token_embeddings", 5, 8, 2, "mlp")
    assert (config.max_length, config.cycles, config.latent_steps, config.max_supervision_steps) == (4, 2, 3, 4)
    assert (config.norm_scale, config.mlp_norm, config.halt_read, config.feature_norm, config.prefix_slots) == (False, "sequence", "first", False, 0)
    model = conversion.model
    state = read_checkpoint(tmp_path / "step_3")
    assert torch.equal(model.reasoner.halt_head.weight, state["inner.q_head.weight"][:1])
    assert torch.equal(model.reasoner.answer_init, state["inner.H_init"].float())
    ids = torch.tensor([[0, 1, 2, 4]])
    expected = math.sqrt(8) * state["inner.embed_tokens.embedding_weight"][ids]
    assert torch.equal(model.encode(ids), expected)


def test_bad_checkpoints_are_refused_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        read_checkpoint(tmp_path / "missing")
    torch.save({"model": Payload()}, tmp_path / "objects")
    with pytest.raises(ValueError, match="Python objects besides tensors"):
        read_checkpoint(tmp_path / "objects")
    (tmp_path / "truncated").write_bytes((tmp_path / "objects").read_bytes()[:10])
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        read_checkpoint(tmp_path / "truncated")
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other")
    with pytest.raises(ValueError, match="not part of a TRM model"):
        read_checkpoint(tmp_path / "other")
    state = {key[len("_orig_mod.model."):]: value for key, value in _layout_state().items()}
    arch = dict(ARCH, mlp_t=True, pos_encodings="none", puzzle_emb_ndim=0)
    with pytest.raises(ValueError, match="does not know"):
        convert(state | {"inner.H_level.layers.0.mlp.down_proj.weight": torch.zeros(1)}, arch)
    with pytest.raises(ValueError, match="expansion"):
        convert(state, dict(arch, expansion=100))
    with pytest.raises(ValueError, match="no `L_cycles`"):
        convert(state, {key: value for key, value in arch.items() if key != "L_cycles"})


def test_cli_converts_and_names_a_missing_config(tmp_path: Path) -> None:
    torch.save(_layout_state(), tmp_path / "step_3")
    command = [sys.executable, "-m", "latentreason.cli", "convert-trm", str(tmp_path / "step_3"), str(tmp_path / "out")]
    missing = subprocess.run(command, capture_output=True, text=True)
    assert missing.returncode == 2 and "all_config.yaml" in missing.stderr and "Traceback" not in missing.stderr
    arch = dict(ARCH, mlp_t=True, pos_encodings="none", puzzle_emb_ndim=0, hidden_size=8)
    (tmp_path / "all_config.yaml").write_text(yaml.safe_dump({"arch": arch}), encoding="utf-8")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    reloaded = LatentReasonerModel.from_pretrained(tmp_path / "out")
    assert reloaded.config.vocab_size == 5 and reloaded.config.mixer == "mlp"
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")
    assert "learned token embeddings (5 token ids)" in card
