"""LoRA on the backbone: the LoRA weights train with the reasoner, the base weights never change, the adapter reloads."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.lora import lora_config, lora_parameters
from latentreason.testing import save_tiny_backbone, tiny_backbone

LORA = {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)


def make_model(output: str = "sequence_classification", base=None, lora=LORA):
    torch.manual_seed(0)
    config = ReasonerConfig(
        hidden_size=32, num_heads=2, num_layers=1, latent_steps=1, cycles=1, max_supervision_steps=1, halting=False,
        output=output, num_labels=3 if output == "sequence_classification" else None,
        num_answer_slots=None if output == "sequence_classification" else 4,
    )
    base = base if base is not None else tiny_backbone("llama", causal_lm=output != "sequence_classification")
    return attach_reasoner(base, config, lora=lora)


def batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 120, (6, 7), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.arange(6) % 3}


def base_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.backbone.named_parameters() if "lora_" not in name}


def test_lora_wraps_the_backbone_and_trains_with_the_reasoner():
    model = make_model()
    assert isinstance(model.backbone.model, PeftModel)
    assert model.backbone_trains
    lora = lora_parameters(model)
    assert lora and all(name.endswith("weight") for name in lora)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in lora.values()} <= trainable  # the optimizer sees them with the reasoner
    base_before = base_weights(model)
    lora_before = {name: p.detach().clone() for name, p in lora.items()}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    data, losses = batch(), []
    for _ in range(10):
        loss = model(**data).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, base_before[name]) for name, p in base_weights(model).items())
    changed = [name for name, p in lora_parameters(model).items() if not torch.equal(p, lora_before[name])]
    assert set(changed) == set(lora)  # every LoRA matrix moved (B starts at zero, A follows once B is nonzero)


def test_features_need_gradients_with_lora():
    model = make_model()
    features = model.encode(batch()["input_ids"])
    assert features.requires_grad  # the feature cache can't hold them: they change with every step
    without = make_model(lora=None)
    assert not without.backbone_trains and not without.encode(batch()["input_ids"]).requires_grad


def test_lora_weights_are_not_in_the_adapter_state_dict():
    model = make_model()
    assert not [name for name in model.adapter_state_dict() if "lora_" in name]
    assert set(make_model(lora=None).adapter_state_dict()) == set(model.adapter_state_dict())


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_lora_with_the_lm_output_paths(output):
    model = make_model(output)
    labels = torch.tensor([[7, 2, -100, -100]] * 6) if output == "lm_head" else torch.tensor([[7, 2]] * 6)
    data = {**batch(), "labels": labels}
    model(**data).loss.backward()
    grads = [p.grad for p in lora_parameters(model).values()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)  # the LM that decodes carries the LoRA too
    tokens = model.generate(data["input_ids"][:2], **({"max_new_tokens": 2} if output == "latent_prefix" else {}))
    assert tokens.shape[0] == 2


def test_peft_config_and_dict_give_the_same_adapter():
    assert lora_config(LORA).r == 4 and lora_config(LORA).lora_alpha == 8
    assert lora_config({"rank": 2}).lora_alpha == 4  # alpha defaults to 2 x rank
    given = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"])
    model = make_model(lora=given)
    assert model.backbone.model.peft_config["default"].r == 2


def test_bad_lora_settings_raise():
    with pytest.raises(ValueError, match=r"Unknown LoRA settings \['r'\]"):
        make_model(lora={"r": 4})
    with pytest.raises(ValueError, match="rank` must be an integer >= 1"):
        make_model(lora={"rank": 0})
    with pytest.raises(ValueError, match="dropout` must be in"):
        make_model(lora={"dropout": 1.5})
    with pytest.raises(TypeError, match="peft.LoraConfig or a dict"):
        make_model(lora=4)
    with pytest.raises(ValueError, match="target_modules"):
        make_model(lora={"target_modules": ["no_such_layer"]})


def test_saved_adapter_reloads_to_identical_outputs(tmp_path):
    pytest.importorskip("latentreason.hub", reason="latentreason.hub (save/load with lora/) is not there yet")
    base = save_tiny_backbone("llama", tmp_path / "base")
    model = make_model(base=base)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):  # move the LoRA weights away from their init (B = 0 would make LoRA a no-op)
        model(**batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    model.save_pretrained(tmp_path / "reasoner")
    assert (tmp_path / "reasoner" / "lora" / "adapter_config.json").is_file()
    reloaded = LatentReasonerModel.from_pretrained(str(tmp_path / "reasoner"))
    assert isinstance(reloaded.backbone.model, PeftModel)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch()).logits, model(**batch()).logits, rtol=0, atol=0)
        with model.backbone.model.disable_adapter():  # and the LoRA really matters
            assert not torch.equal(model(**batch()).logits, reloaded(**batch()).logits)
