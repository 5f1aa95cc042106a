"""`LatentReasonerModel`: only the reasoner learns, A/B without it, test-time refinement and halting,
padding invariance on real backbones, and clear errors for bad input."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import padded_batch, reasoner_config, shared_backbone, token_labels

from latentreason import LatentReasonerModel, attach_reasoner
from latentreason.reasoner import Reasoner


def tiny_model(arch: str = "bert", **changes) -> LatentReasonerModel:
    torch.manual_seed(0)
    return attach_reasoner(shared_backbone(arch), reasoner_config(**changes)).eval()


# --- only the reasoner learns ----------------------------------------------------------------------


def test_print_trainable_parameters(capsys) -> None:
    model = tiny_model()
    model.print_trainable_parameters()
    printed = capsys.readouterr().out
    match = re.fullmatch(r"trainable params: ([\d,]+) \|\| all params: ([\d,]+) \|\| trainable%: ([\d.]+)\n", printed)
    assert match, printed
    trainable, total, percent = int(match[1].replace(",", "")), int(match[2].replace(",", "")), float(match[3])
    backbone = sum(p.numel() for p in model.backbone.parameters())
    adapter = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone."))
    assert trainable == adapter and total == adapter + backbone and trainable < total
    assert percent == pytest.approx(100 * trainable / total, abs=1e-4)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("backbone."))


def test_train_mode_keeps_the_backbone_in_eval_mode() -> None:
    model = tiny_model()
    model.train()
    assert model.training and model.reasoner.training and model.head.training
    assert not any(module.training for module in model.backbone.model.modules())
    # Dropout never fires in the backbone: features are the same twice in train mode.
    batch = padded_batch()
    assert torch.equal(model.encode(**batch), model.encode(**batch))
    model.eval()
    assert not any(module.training for module in model.modules())


def test_adapter_state_dict_holds_no_backbone_weight() -> None:
    model = tiny_model()
    state = model.adapter_state_dict()
    assert state and not any(name.startswith("backbone.") for name in state)
    assert "reasoner.answer_init" in state  # the fixed init vectors are part of the model


# --- disable_reasoner (A/B) ------------------------------------------------------------------------


def test_disable_reasoner_reads_projected_features() -> None:
    model = tiny_model()
    batch = padded_batch()
    with_reasoner = model(**batch).logits
    features = model.encode(**batch)
    with model.disable_reasoner():
        bare = model(**batch, labels=token_labels(batch))
    expected = model.head.classifier(model.input_norm(model.input_proj(features)))
    torch.testing.assert_close(bare.logits, expected)
    assert bare.halt_loss is None and bare.carry is None and torch.equal(bare.loss, bare.task_loss)
    assert not torch.allclose(bare.logits, with_reasoner)
    assert torch.equal(model(**batch).logits, with_reasoner)  # restored afterwards


def test_disable_reasoner_restores_after_an_exception() -> None:
    model = tiny_model()
    batch = padded_batch()
    before = model(**batch).logits
    with pytest.raises(RuntimeError, match="boom"):
        with model.disable_reasoner():
            raise RuntimeError("boom")
    assert torch.equal(model(**batch).logits, before)


# --- refinement at test time -----------------------------------------------------------------------


def test_refine_equals_repeated_forward_with_the_carry() -> None:
    model = tiny_model()
    batch = padded_batch()
    refined = model.refine(**batch, steps=3)
    assert len(refined.step_logits) == 3
    carry = None
    for step in range(3):
        out = model(**batch, carry=carry)
        assert out.loss is None and out.halt_logits.shape == (3,)
        torch.testing.assert_close(refined.step_logits[step], out.logits, rtol=0, atol=0)
        carry = out.carry
    torch.testing.assert_close(refined.logits, out.logits, rtol=0, atol=0)
    torch.testing.assert_close(refined.carry.answer, carry.answer, rtol=0, atol=0)
    assert not torch.allclose(refined.step_logits[0], refined.step_logits[1])  # the carry really moves
    assert refined.halted_at.tolist() == [3, 3, 3]


def test_refine_defaults_to_max_supervision_steps_and_rejects_zero() -> None:
    model = tiny_model(max_supervision_steps=2)
    batch = padded_batch()
    assert len(model.refine(**batch).step_logits) == 2
    with pytest.raises(ValueError, match=r"`steps` must be a whole number >= 1.*got 0"):
        model.refine(**batch, steps=0)


def test_refine_with_halting_stops_when_the_halt_logit_is_positive() -> None:
    model = tiny_model()
    batch = padded_batch()
    with torch.no_grad():
        model.reasoner.halt_head.bias.fill_(5.0)  # the head's weights start at zero: every halt logit is +5
    halted = model.refine(**batch, steps=4, halt=True)
    assert halted.halted_at.tolist() == [1, 1, 1] and len(halted.step_logits) == 1
    assert torch.equal(halted.logits, halted.step_logits[0])
    assert len(model.refine(**batch, steps=4, halt=False).step_logits) == 4  # without halt=True all steps run


def test_refine_keeps_each_sample_prediction_from_its_halting_step() -> None:
    model = tiny_model()
    batch = padded_batch()
    schedule = iter([[-1.0, -1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0]])  # sample 2 never halts

    def forced_halt(module, inputs, output):
        return torch.tensor(next(schedule))[:, None]

    handle = model.reasoner.halt_head.register_forward_hook(forced_halt)
    try:
        refined = model.refine(**batch, steps=4, halt=True)
    finally:
        handle.remove()
    assert refined.halted_at.tolist() == [2, 3, 4]
    assert len(refined.step_logits) == 4
    for sample, step in enumerate([2, 3, 4]):
        assert torch.equal(refined.logits[sample], refined.step_logits[step - 1][sample])
    assert not torch.equal(refined.logits[0], refined.step_logits[3][0])


def test_refine_halts_above_the_configured_halt_probability() -> None:
    model = tiny_model()
    batch = padded_batch()
    schedule = [[-1.0, 1.0, 3.0], [1.0, 1.0, 3.0], [3.0, 3.0, 3.0], [5.0, 5.0, 5.0]]  # halt logits per step

    def run(threshold: float) -> list[int]:
        model.config = model.config.replace(halt_threshold=threshold)
        steps = iter(schedule)
        handle = model.reasoner.halt_head.register_forward_hook(lambda module, inputs, output: torch.tensor(next(steps))[:, None])
        try:
            return model.refine(**batch, steps=4, halt=True).halted_at.tolist()
        finally:
            handle.remove()

    assert run(0.5) == [2, 1, 1]  # logit > 0
    assert run(0.9) == [3, 3, 1]  # logit > 2.197
    assert run(0.99) == [4, 4, 4]  # logit > 4.595
    with pytest.raises(ValueError, match="halt_threshold"):
        model.config.replace(halt_threshold=1.0)


def test_reset_carry_restarts_only_the_chosen_samples() -> None:
    model = tiny_model()
    batch = padded_batch()
    first = model(**batch)
    second = model(**batch, carry=first.carry)
    reset = model.reasoner.reset_carry(first.carry, torch.tensor([False, True, False]))
    mixed = model(**batch, carry=reset)
    torch.testing.assert_close(mixed.logits[1], first.logits[1])  # restarted: a first step again
    torch.testing.assert_close(mixed.logits[[0, 2]], second.logits[[0, 2]])  # the others went on
    assert not torch.allclose(mixed.logits[1], second.logits[1])


# --- padding does not change the real tokens' results ---------------------------------------------


@pytest.mark.parametrize(("arch", "output"), [("bert", "token_classification"), ("llama", "token_classification"),
                                              ("bert", "sequence_classification"), ("llama", "sequence_classification")])
def test_padding_does_not_change_real_tokens(arch: str, output: str) -> None:
    """One sequence alone vs. right-padded in a batch (attention mixer): same logits and halting on its real tokens."""
    model = tiny_model(arch, output=output, num_labels=4)
    with torch.no_grad():
        torch.nn.init.normal_(model.reasoner.halt_head.weight)  # make the halt logit depend on the answer
    batch = padded_batch(batch=3, length=9, lengths=(9, 5, 7))
    alone = {key: value[1:2, :5] for key, value in batch.items()}
    padded, single = model(**batch), model(**alone)
    if output == "token_classification":
        torch.testing.assert_close(padded.logits[1, :5], single.logits[0], rtol=1e-4, atol=1e-5)
    else:
        torch.testing.assert_close(padded.logits[1], single.logits[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(padded.halt_logits[1], single.halt_logits[0], rtol=1e-4, atol=1e-5)
    # Refining further from the carry keeps the equality.
    padded, single = model(**batch, carry=padded.carry), model(**alone, carry=single.carry)
    torch.testing.assert_close(padded.halt_logits[1], single.halt_logits[0], rtol=1e-4, atol=1e-5)


def test_left_padding_equals_right_padding_on_features() -> None:
    """With the same features, left- and right-padding give the same results (positions count real tokens)."""
    model = tiny_model("bert", output="sequence_classification", num_labels=4)
    features = torch.randn(1, 4, 64)
    right, left = torch.zeros(1, 6, 64), torch.zeros(1, 6, 64)
    right[:, :4], left[:, 2:] = features, features
    right_mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    out_right, out_left = model(features=right, attention_mask=right_mask), model(features=left, attention_mask=right_mask.flip(1))
    torch.testing.assert_close(out_right.logits, out_left.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_right.halt_logits, out_left.halt_logits, rtol=1e-4, atol=1e-5)


# --- bad input: each error names the problem and the fix ------------------------------------------


@pytest.mark.parametrize("layer", [3, 7, -4])
def test_layer_out_of_range(layer: int) -> None:
    with pytest.raises(ValueError) as error:
        attach_reasoner(shared_backbone("llama"), reasoner_config(backbone_layer=layer))
    message = str(error.value)
    assert f"`backbone_layer`={layer}" in message and "2 layers" in message and "0..2" in message


@pytest.mark.parametrize("layer", [0, 2, -1, -3])
def test_layer_in_range(layer: int) -> None:
    assert attach_reasoner(shared_backbone("llama"), reasoner_config(backbone_layer=layer)).backbone.layer == layer


def test_sequence_longer_than_the_mlp_mixer() -> None:
    model = tiny_model(mixer="mlp", max_length=5)
    batch = padded_batch(length=7)
    with pytest.raises(ValueError, match=r"7 tokens.*max_length=5.*mlp mixer.*larger max_length.*Nothing is truncated"):
        model(**batch)
    with pytest.raises(ValueError, match="max_length=5"):
        model(features=torch.randn(2, 7, 64))
    assert model(**padded_batch(length=5)).logits.shape == (3, 5, 5)  # at the limit it works
    assert model(**padded_batch(length=3)).logits.shape == (3, 3, 5)  # shorter is zero padding


def test_bare_mlp_mixer_rejects_longer_sequences() -> None:
    reasoner = Reasoner(reasoner_config(mixer="mlp", max_length=5))
    with pytest.raises(ValueError, match=r"6 positions.*fixed length 5.*raise `max_length`.*mixer='attention'"):
        reasoner(torch.randn(1, 6, 32))


def test_sequence_longer_than_max_length_with_attention() -> None:
    model = tiny_model(max_length=5)
    with pytest.raises(ValueError, match=r"7 tokens.*max_length=5.*shorten the input"):
        model(**padded_batch(length=7))


def test_sequence_longer_than_the_backbone_context() -> None:
    model = tiny_model("gpt2")
    with pytest.raises(ValueError, match=r"257 tokens.*context of 256 positions.*gpt2.*max_length <= 256"):
        model(input_ids=torch.ones(1, 257, dtype=torch.long))


def test_token_labels_of_the_wrong_shape() -> None:
    model = tiny_model()
    batch = padded_batch()
    for labels in (torch.zeros(3, dtype=torch.long), torch.zeros(3, 6, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"shape of input_ids \(3, 7\).*-100.*output='sequence_classification'"):
            model(**batch, labels=labels)


def test_sequence_labels_of_the_wrong_shape() -> None:
    model = tiny_model(output="sequence_classification", num_labels=3)
    batch = padded_batch()
    for labels in (torch.zeros(3, 7, dtype=torch.long), torch.zeros(2, dtype=torch.long)):
        with pytest.raises(ValueError, match=r"shape \(batch,\) = \(3,\).*output='token_classification'"):
            model(**batch, labels=labels)


@pytest.mark.parametrize("bad", [5, -3])
def test_labels_out_of_range(bad: int) -> None:
    model = tiny_model()
    batch = padded_batch()
    labels = token_labels(batch)
    labels[0, 0] = bad
    with pytest.raises(ValueError, match=rf"\[0, 5\) or -100.*{bad}.*`num_labels`"):
        model(**batch, labels=labels)


def test_float_labels() -> None:
    model = tiny_model()
    batch = padded_batch()
    with pytest.raises(ValueError, match=r"integer class indices.*float32"):
        model(**batch, labels=token_labels(batch).float())


def test_carry_of_the_wrong_shape() -> None:
    model = tiny_model()
    carry = model(**padded_batch(batch=3)).carry
    with pytest.raises(ValueError, match=r"carry has shape \(3, 7, 32\).*\(2, 7, 32\).*carry=None"):
        model(**padded_batch(batch=2), carry=carry)


def test_features_of_the_wrong_width() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match=r"hidden size 64.*\(3, 7, 63\)"):
        model(features=torch.randn(3, 7, 63))
    with pytest.raises(ValueError, match=r"hidden_size=32.*\(3, 7, 31\)"):
        model.reasoner(torch.randn(3, 7, 31))


def test_attention_mask_of_the_wrong_shape() -> None:
    model = tiny_model()
    batch = padded_batch()
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, length\) = \(3, 7\)"):
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"][:, :6])


def test_no_input() -> None:
    with pytest.raises(ValueError, match="input_ids.*features"):
        tiny_model()(attention_mask=torch.ones(1, 3))


def test_base_of_the_wrong_type() -> None:
    with pytest.raises(TypeError, match="model id, a local path or a PreTrainedModel.*int"):
        attach_reasoner(3, reasoner_config())  # type: ignore[arg-type]
