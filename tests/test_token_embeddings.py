"""A reasoner on learned token embeddings (`input="token_embeddings"`): no backbone, TRM as published."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
import torch

from latentreason import LatentReasonerModel, ReasonerConfig
from latentreason.data import collate
from latentreason.hub import validate_folder
from latentreason.training import TrainingConfig, train


def _config(**changes) -> ReasonerConfig:
    values = dict(input="token_embeddings", vocab_size=7, hidden_size=16, num_heads=2, latent_steps=2, cycles=2,
                  max_supervision_steps=3, num_labels=7)
    return ReasonerConfig(**(values | changes))


def test_token_ids_are_embedded_scaled_with_positions_and_prefix() -> None:
    torch.manual_seed(0)
    model = LatentReasonerModel.from_config(_config(positions="learned", max_length=5, prefix_slots=2, feature_norm=False))
    ids = torch.tensor([[0, 3, 6, 1, 2]])
    table, positions = model.token_embeddings.embed.weight, model.token_embeddings.positions
    expected_tokens = 4.0 * 0.707106781 * (table[ids[0]] + positions[2:7])
    with torch.no_grad():
        model.prefix_slots.normal_()
        x, mask = model.embed_inputs(model.encode(ids), None)
    assert torch.allclose(x[0, 2:], expected_tokens)
    assert torch.allclose(x[0, :2], 4.0 * 0.707106781 * (model.prefix_slots + positions[:2]))
    assert mask.tolist() == [[1] * 7]
    # The head reads the input positions, not the prefix: one prediction per token.
    assert model(ids).logits.shape == (1, 5, 7)


def test_bad_token_inputs_and_configs_name_the_fix() -> None:
    model = LatentReasonerModel.from_config(_config())
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, vocab_size=7\)"):
        model(torch.tensor([[1, 7]]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="needs `vocab_size`"):
        ReasonerConfig(input="token_embeddings", num_labels=3)
    with pytest.raises(ValueError, match="`vocab_size` .* is for `input='token_embeddings'`"):
        ReasonerConfig(vocab_size=5, num_labels=3)
    with pytest.raises(ValueError, match="positions='learned'"):
        ReasonerConfig(positions="learned", num_labels=3)
    with pytest.raises(ValueError, match="attach_reasoner"):
        LatentReasonerModel.from_config(ReasonerConfig(num_labels=3))


def test_swiglu_multiple_rounds_the_widths_up() -> None:
    model = LatentReasonerModel.from_config(_config(mixer="mlp", max_length=6, swiglu_multiple=256))
    block = model.reasoner.net.blocks[0]
    assert block.mlp.gate_up.weight.shape == (512, 16) and block.mix.mlp.down.weight.shape == (6, 256)
    plain = LatentReasonerModel.from_config(_config(mixer="mlp", max_length=6)).reasoner.net.blocks[0]
    assert plain.mlp.gate_up.weight.shape == (2 * round(4 * 16 * 2 / 3), 16)


def test_attention_without_positions_is_permutation_equivariant() -> None:
    torch.manual_seed(0)
    model = LatentReasonerModel.from_config(_config(positions="none", halt_read="mean")).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    order = torch.tensor([4, 2, 0, 1, 3])
    logits = model(ids).logits
    assert torch.allclose(model(ids[:, order]).logits, logits[:, order], atol=1e-5)
    rotary = LatentReasonerModel.from_config(_config()).eval()
    assert not torch.allclose(rotary(ids[:, order]).logits, rotary(ids).logits[:, order], atol=1e-3)


def _copy_task(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Each token's label is the token before it (a task that needs the positions to talk)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        ids = torch.randint(0, 7, (6,), generator=generator)
        labels = torch.cat([torch.tensor([0]), ids[:-1]])
        rows.append({"input_ids": ids, "attention_mask": torch.ones(6, dtype=torch.long), "labels": labels})
    return rows


def test_it_trains_with_deep_supervision_and_round_trips(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = LatentReasonerModel.from_config(_config(hidden_size=32, max_length=6))
    data, test = _copy_task(256, 0), _copy_task(64, 1)
    before = model(torch.stack([r["input_ids"] for r in test]), labels=torch.stack([r["labels"] for r in test])).task_loss.item()
    config = TrainingConfig(output_dir=str(tmp_path / "run"), max_steps=120, batch_size=32, learning_rate=3e-3, warmup_steps=5,
                            checkpoint_every=None, progress_bar=False, report_to="none", ema=False)
    result = train(model, data, config, collate_fn=functools.partial(collate, pad_token_id=0), eval_dataset=test, eval_halt=False)
    assert result.eval_results["accuracy"] > 0.6 and before > math.log(7) * 0.8  # from chance (1/7) to most cells right
    embeddings = result.adapter_state_dict["token_embeddings.embed.weight"]
    assert not torch.equal(embeddings, LatentReasonerModel.from_config(_config(hidden_size=32, max_length=6)).token_embeddings.embed.weight)
    model.load_adapter_state_dict(result.adapter_state_dict)
    model.save_pretrained(tmp_path / "adapter")
    assert validate_folder(tmp_path / "adapter").input == "token_embeddings"
    loaded = LatentReasonerModel.from_pretrained(tmp_path / "adapter")
    ids = torch.stack([r["input_ids"] for r in test[:4]])
    assert torch.equal(loaded.refine(ids).logits, model.eval().refine(ids).logits)
    with pytest.raises(ValueError, match="reads no base model"):
        LatentReasonerModel.from_pretrained(tmp_path / "adapter", base_model="some/model")
