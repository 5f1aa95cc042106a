"""`ReasonerConfig`: validation with messages that name the field, the value and the fix; JSON round trip."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
from conftest import reasoner_config

from latentreason import ReasonerConfig


def test_defaults_are_valid_for_a_classifier() -> None:
    config = ReasonerConfig(num_labels=10)
    assert (config.mixer, config.grad_mode, config.output) == ("attention", "last_cycle", "token_classification")
    assert config.backbone_layer == -1


# --- wrong values: (changes, fragments the message must contain) -------------------------------
BAD_VALUES = [
    # wrong types
    ({"hidden_size": "32"}, ["`hidden_size`", "'32'", "integer"]),
    ({"hidden_size": 32.0}, ["`hidden_size`", "32.0", "integer"]),
    ({"latent_steps": True}, ["`latent_steps`", "True", "integer"]),
    ({"expansion": "wide"}, ["`expansion`", "'wide'", "number"]),
    ({"halting": "yes"}, ["`halting`", "'yes'", "bool"]),
    ({"label_names": "a,b"}, ["`label_names`", "'a,b'", "list of strings"]),
    ({"label_names": [1, 2, 3, 4, 5]}, ["`label_names`", "list of strings"]),
    ({"max_length": "64"}, ["`max_length`", "'64'", "integer or None"]),
    ({"base_model_name_or_path": 3}, ["`base_model_name_or_path`", "3"]),
    # out of range
    ({"hidden_size": 0}, ["`hidden_size`", ">= 1", "0"]),
    ({"num_layers": -1}, ["`num_layers`", ">= 1", "-1"]),
    ({"num_heads": 0}, ["`num_heads`", ">= 1", "0"]),
    ({"latent_steps": 0}, ["`latent_steps`", ">= 1", "0"]),
    ({"cycles": 0}, ["`cycles`", ">= 1", "0"]),
    ({"max_supervision_steps": 0}, ["`max_supervision_steps`", ">= 1", "0"]),
    ({"max_length": 0}, ["`max_length`", ">= 1", "0"]),
    ({"num_answer_slots": -2, "output": "sequence_classification"}, ["`num_answer_slots`", ">= 0", "-2"]),
    ({"expansion": 0.0}, ["`expansion`", "> 0", "0.0"]),
    ({"norm_eps": -1e-5}, ["`norm_eps`", "> 0", "-1e-05"]),
    ({"rope_theta": 0}, ["`rope_theta`", "> 0", "0"]),
    ({"halt_loss_weight": -0.5}, ["`halt_loss_weight`", ">= 0", "-0.5"]),
    ({"num_labels": 0}, ["`num_labels`", ">= 1", "0"]),
    ({"num_labels": None}, ["`num_labels`", ">= 1", "None"]),
    # bad Literal choices
    ({"mixer": "convolution"}, ["`mixer`", "'convolution'", "'attention'", "'mlp'", "'conv'"]),
    ({"mixer": "conv", "conv_kernel": 4}, ["`conv_kernel`", "odd", "4"]),
    ({"grad_mode": "bptt"}, ["`grad_mode`", "'bptt'", "'last_cycle'", "'one_step'", "'full'"]),
    ({"output": "regression"}, ["`output`", "'regression'", "'token_classification'", "'sequence_classification'"]),
    ({"carry_init": "zeros"}, ["`carry_init`", "'zeros'", "'fixed'", "'learned'"]),
    # combinations
    ({"carry_init": "learned"}, ["`carry_init='learned'`", "grad_mode='last_cycle'", "cycles=2", "carry_init='fixed'"]),
    ({"carry_init": "learned", "grad_mode": "one_step", "cycles": 1}, ["`carry_init='learned'`", "one_step", "grad_mode='full'"]),
    ({"mixer": "mlp"}, ["mixer='mlp'", "`max_length`", "mixer='attention'"]),
    ({"hidden_size": 30, "num_heads": 4}, ["`hidden_size` (30)", "`num_heads` (4)", "num_heads=3"]),
    ({"hidden_size": 36, "num_heads": 4}, ["head size", "9", "even"]),
    ({"label_names": ["a", "b"]}, ["`label_names`", "2 names", "`num_labels` is 5"]),
    ({"num_answer_slots": 2}, ["token_classification", "`num_answer_slots`", "0 or None", "2"]),
    ({"output": "sequence_classification", "num_answer_slots": 0}, ["sequence_classification", "`num_answer_slots`", ">= 1"]),
]


@pytest.mark.parametrize(("changes", "fragments"), BAD_VALUES, ids=[",".join(c) + "=" + repr(list(c.values())) for c, _ in BAD_VALUES])
def test_bad_value_names_field_value_and_fix(changes: dict, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as error:
        reasoner_config(**changes)
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_every_field_is_checked_for_type() -> None:
    """No field accepts an arbitrary object: each one names itself in the error."""
    for field in dataclasses.fields(ReasonerConfig):
        with pytest.raises(ValueError, match=re.escape(f"`{field.name}`")):
            reasoner_config(**{field.name: object()})


def test_mlp_with_max_length_and_mlp_ignores_heads() -> None:
    config = reasoner_config(mixer="mlp", max_length=81, num_heads=3)  # heads do not matter without attention
    assert config.max_length == 81


@pytest.mark.parametrize(("grad_mode", "cycles", "steps"), [("full", 3, 2), ("last_cycle", 1, 2), ("one_step", 1, 1)])
def test_learned_carry_init_where_gradients_reach_it(grad_mode: str, cycles: int, steps: int) -> None:
    config = reasoner_config(carry_init="learned", grad_mode=grad_mode, cycles=cycles, latent_steps=steps)
    assert config.gradient_reaches_initial_carry


def test_replace_validates() -> None:
    config = reasoner_config()
    with pytest.raises(ValueError, match="`cycles`"):
        config.replace(cycles=0)
    assert config.replace(cycles=5).cycles == 5 and config.cycles == 2


def test_from_dict_rejects_unknown_keys() -> None:
    values = reasoner_config().to_dict() | {"hiden_size": 64, "zz_extra": 1}
    with pytest.raises(ValueError) as error:
        ReasonerConfig.from_dict(values)
    message = str(error.value)
    assert "hiden_size" in message and "zz_extra" in message and "hidden_size" in message


def test_from_dict_validates_values() -> None:
    with pytest.raises(ValueError, match="`grad_mode`"):
        ReasonerConfig.from_dict(reasoner_config().to_dict() | {"grad_mode": "sometimes"})


# --- round trips --------------------------------------------------------------------------------


def test_dict_round_trip() -> None:
    config = reasoner_config(output="sequence_classification", num_labels=3, label_names=["neg", "neu", "pos"], backbone_layer=4,
                             base_model_name_or_path="some/model", base_model_revision="abc123", grad_mode="one_step")
    assert ReasonerConfig.from_dict(config.to_dict()) == config
    assert ReasonerConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_json_file_round_trip(tmp_path) -> None:
    config = reasoner_config(mixer="mlp", max_length=16, carry_init="learned", grad_mode="full", label_names=list("abcde"))
    path = tmp_path / "reasoner_config.json"
    config.to_json_file(path)
    text = path.read_text()
    assert text.endswith("\n")
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys: stable diffs
    assert ReasonerConfig.from_json_file(path) == config


def test_json_file_errors_name_the_problem(tmp_path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ReasonerConfig.from_json_file(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        ReasonerConfig.from_json_file(listing)


# --- derived quantities -------------------------------------------------------------------------


@pytest.mark.parametrize(("cycles", "steps", "layers", "depth"), [(1, 1, 1, 2), (3, 6, 2, 42), (2, 2, 2, 12)])
def test_effective_depth(cycles: int, steps: int, layers: int, depth: int) -> None:
    assert reasoner_config(cycles=cycles, latent_steps=steps, num_layers=layers).effective_depth == depth


@pytest.mark.parametrize(
    ("output", "slots", "expected"),
    [("token_classification", None, 0), ("token_classification", 0, 0), ("sequence_classification", None, 1),
     ("sequence_classification", 3, 3), ("lm_head", None, 8), ("latent_prefix", 4, 4)],
)
def test_answer_slot_defaults(output: str, slots: int | None, expected: int) -> None:
    assert reasoner_config(output=output, num_answer_slots=slots).answer_slots == expected


def test_every_field_has_help() -> None:
    for field in dataclasses.fields(ReasonerConfig):
        assert field.metadata.get("help"), f"{field.name} has no help text"


def test_configs_saved_before_mlp_norm_keep_the_network_they_trained() -> None:
    """An mlp-mixer config without `mlp_norm` (written before it existed) loads as the per-channel norm it ran."""
    values = reasoner_config(mixer="mlp", max_length=8).to_dict()
    assert values.pop("mlp_norm") == "sequence"  # new configs: TRM's norm over the positions
    assert ReasonerConfig.from_dict(values).mlp_norm == "channel"
    attention = reasoner_config().to_dict()
    del attention["mlp_norm"]
    assert ReasonerConfig.from_dict(attention).mlp_norm == "sequence"  # irrelevant without the mlp mixer; the default
