"""`model.layer: auto` and the data summary printed when training starts.

The probe must find the layer that carries a task's signal: once on a stand-in backbone where exactly
one layer holds it (the others are noise), once end to end on a real tiny BERT whose last block was
made blind (its output LayerNorm zeroed), where `latentreason train` must read an earlier layer and
record it in the run's recipe.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from transformers import AutoModel

from latentreason import LatentReasonerModel
from latentreason.cli import main
from latentreason.losses import IGNORE_INDEX
from latentreason.testing import save_tiny_backbone
from latentreason.training.layer_probe import _backbone_states, candidate_layers, choose_layer


class OneLayerKnows:
    """A stand-in backbone: hidden state `layer` encodes each token's label (plus noise), the others are noise."""

    device = torch.device("cpu")

    def __init__(self, num_layers: int, layer: int, num_labels: int, hidden: int = 16) -> None:
        self.num_layers, self.layer, self.num_labels, self.hidden = num_layers, layer, num_labels, hidden
        self.codes = torch.randn(num_labels, hidden, generator=torch.Generator().manual_seed(1))

    def encoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
        generator = torch.Generator().manual_seed(int(input_ids.sum()))
        states = [torch.randn(*input_ids.shape, self.hidden, generator=generator) for _ in range(self.num_layers + 1)]
        states[self.layer] = self.codes[input_ids % self.num_labels] + 0.3 * states[self.layer]
        return SimpleNamespace(hidden_states=tuple(states))


def rows_for(num_rows: int, num_labels: int, length: int = 6) -> list[dict[str, list[int]]]:
    rng = random.Random(0)
    rows = []
    for _ in range(num_rows):
        ids = [rng.randrange(1, 50) for _ in range(length)]
        rows.append({"input_ids": ids, "labels": [IGNORE_INDEX] + [i % num_labels for i in ids[1:]]})  # position 0 unlabelled
    return rows


def test_the_probe_feeds_the_backbone_on_its_own_device_and_trains_on_the_cpu() -> None:
    """On a GPU run the backbone sits on the GPU: its inputs must go there, and its states come back to the CPU."""
    seen: list[torch.device] = []

    class ElsewhereBackbone:
        device = torch.device("meta")  # a device that is not the CPU, on any machine

        def encoder(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any) -> SimpleNamespace:
            seen.extend([input_ids.device, attention_mask.device])
            return SimpleNamespace(hidden_states=tuple(torch.ones(*input_ids.shape, 4) for _ in range(3)))

    rows = rows_for(40, 3)
    states, mask = _backbone_states(ElsewhereBackbone(), rows, [0, 2])
    assert set(seen) == {torch.device("meta")} and len(seen) == 4  # 40 rows in batches of 32: two calls
    assert [s.device for s in states] == [torch.device("cpu")] * 2 and states[0].shape == (40, 6, 4) and mask.shape == (40, 6)


@pytest.mark.parametrize("knowing", [1, 3])
def test_the_probe_picks_the_one_layer_that_carries_the_signal(knowing: int) -> None:
    backbone = OneLayerKnows(num_layers=4, layer=knowing, num_labels=5)
    choice = choose_layer(backbone, rows_for(120, 5), 5, pooled=False, steps=60)
    assert choice.layer == knowing
    assert choice.scores[knowing] > 0.9 and max(s for layer, s in choice.scores.items() if layer != knowing) < 0.5
    assert list(choice.scores) == [0, 1, 2, 3, 4] and choice.rows == 120


def test_a_pooled_label_task_is_probed_per_row() -> None:
    backbone = OneLayerKnows(num_layers=3, layer=2, num_labels=3)
    rows = [{"input_ids": [7] * 5, "labels": 7 % 3}, {"input_ids": [8] * 5, "labels": 8 % 3}, {"input_ids": [9] * 5, "labels": 9 % 3}] * 30
    assert choose_layer(backbone, rows, 3, pooled=True, steps=60).layer == 2


def test_candidate_layers_cover_a_deep_model_sparsely_and_keep_the_last() -> None:
    assert candidate_layers(6) == [0, 1, 2, 3, 4, 5, 6]
    deep = candidate_layers(30)
    assert len(deep) == 9 and deep[0] == 0 and deep[-1] == 30 and deep == sorted(set(deep))


@pytest.fixture(scope="module")
def blind_last_layer(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny BERT whose last block outputs zeros (its output LayerNorm has weight and bias 0)."""
    path = tmp_path_factory.mktemp("blind") / "bert"
    save_tiny_backbone("bert", path)
    model = AutoModel.from_pretrained(path)
    norm = model.encoder.layer[-1].output.LayerNorm
    torch.nn.init.zeros_(norm.weight)
    torch.nn.init.zeros_(norm.bias)
    model.save_pretrained(path)
    return str(path)


def test_train_with_layer_auto_reads_a_layer_that_sees_and_says_so(blind_last_layer: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = random.Random(3)
    lines = []
    for _ in range(200):
        digits = [rng.randrange(10) for _ in range(6)]
        lines.append(json.dumps({"input": " ".join(map(str, digits)), "output": " ".join(str(d % 3) for d in digits)}))
    lines.insert(17, "not json")  # skipped with skip_bad_rows, and reported
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(lines[:160]) + "\n")
    held_out = tmp_path / "test.jsonl"
    held_out.write_text("\n".join(lines[160:]) + "\n")
    out = tmp_path / "run"
    status = main(["train", "custom_pairs", f"model.base={blind_last_layer}", f"data.train_file={train}", f"data.eval_file={held_out}",
                   "data.skip_bad_rows=true", f"training.output_dir={out}", "training.max_steps=2", "training.use_feature_cache=false",
                   "reasoner.hidden_size=16", "reasoner.num_heads=2"])
    printed = capsys.readouterr().out
    assert status == 0

    chosen = yaml.safe_load((out / "recipe.yaml").read_text())["model"]["layer"]
    assert chosen in (0, 1)  # the last layer (2) sees nothing
    assert LatentReasonerModel.from_pretrained(out).config.backbone_layer == chosen
    (line,) = [line for line in printed.splitlines() if line.startswith("model.layer=auto")]
    scores = dict(part.split(": ") for part in line.split("per layer: ")[1].split(";")[0].split(", "))
    assert line.startswith(f"model.layer=auto chose layer {chosen} ")
    assert float(scores["2"]) < float(scores[str(chosen)]) - 0.2

    summary = printed.split("Data:\n")[1].split("\nmodel.layer")[0].splitlines()
    assert summary == [
        f"  train: 159 rows from {train}",
        f"  eval: 41 rows from {held_out}",
        "  output kind: aligned (all 159 rows with more than one cell have one output cell per input cell)",
        "  labels: 3 per cell: 0 1 2",
        "  lengths: inputs up to 6 cells, 11 tokens; max_length 11",
        f"  skipped: {train}: 1 malformed row (see the warning above)",
    ]


def test_a_file_smaller_than_the_recipes_batch_trains_in_batches_of_all_its_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"input": "1 2 3", "output": "3 2 1"}) + "\n" for _ in range(21)))
    base = save_tiny_backbone("bert", tmp_path / "bert")
    run = tmp_path / "run"
    status = main(["train", "custom_pairs", f"model.base={base}", f"data.train_file={train}", f"training.output_dir={run}",
                   "model.layer=0", "reasoner.hidden_size=16", "reasoner.num_heads=2", "training.max_steps=2", "training.batch_size=64",
                   "training.calibrate_halting=0.1", "training.checkpoint_every=null", "training.progress_bar=false"])
    printed = capsys.readouterr().out
    assert status == 0
    # 21 rows, 2 held out to calibrate halting: one batch of the other 19
    assert "training.batch_size=64 is more than the 19 training rows: training in batches of 19" in printed
    assert yaml.safe_load((run / "recipe.yaml").read_text())["training"]["batch_size"] == 19


def test_a_file_too_small_to_split_over_the_accumulation_steps_is_refused_before_the_model_is_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from latentreason import pipeline

    def not_reached(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the base model was loaded (and would have computed features) for data that cannot train")

    monkeypatch.setattr(pipeline, "build_model", not_reached)
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"input": "1 2 3", "output": "3 2 1"}) + "\n" for _ in range(3)))
    base = save_tiny_backbone("bert", tmp_path / "bert")  # its tokenizer reads the rows
    status = main(["train", "custom_pairs", f"model.base={base}", f"data.train_file={train}", f"training.output_dir={tmp_path / 'run'}",
                   "training.calibrate_halting=0", "training.gradient_accumulation_steps=4"])
    err = capsys.readouterr().err
    assert status == 2
    assert "The training set has 3 examples, too few for one batch split over 4 processes x gradient accumulation steps" in err
