"""What `evaluate` reports besides the totals: accuracy per answer position, and the first wrong samples.

Checked against `refine` on the same inputs, on a tiny token-embedding reasoner (no backbone, no
training): the k-th scored cell of every sample is position k, whichever token it sits on.
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from latentreason import LatentReasonerModel, ReasonerConfig
from latentreason.data import collate
from latentreason.losses import IGNORE_INDEX
from latentreason.training import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 3
IDS = torch.randint(0, 7, (11, 6), generator=torch.Generator().manual_seed(3))


def tiny_model(output: str = "token_classification") -> LatentReasonerModel:
    torch.manual_seed(0)
    config = ReasonerConfig(input="token_embeddings", vocab_size=7, hidden_size=16, num_heads=2, latent_steps=1, cycles=1,
                            max_supervision_steps=STEPS, num_labels=3, output=output)
    model = LatentReasonerModel.from_config(config).eval()
    with torch.no_grad():  # halt logits spread around 0, so that samples halt at different steps
        model.reasoner.halt_head.weight.normal_(0.0, 2.0)
        model.reasoner.halt_head.bias.zero_()
    return model


def run_evaluate(model: LatentReasonerModel, labels: torch.Tensor, **options) -> dict:
    rows = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": label} for ids, label in zip(IDS, labels)]
    accelerator = Accelerator(cpu=True)
    loader = accelerator.prepare(DataLoader(rows, batch_size=4, collate_fn=lambda batch: collate(batch, pad_token_id=0)))
    return evaluate(model, loader, accelerator, STEPS, **options)


def headline_predictions(model: LatentReasonerModel, halt: bool) -> torch.Tensor:
    """What `refine` answers, each sample at its halting step (with `halt`) or after the last step."""
    with torch.no_grad():
        return model.refine(IDS, steps=STEPS, halt=halt).logits.argmax(-1)


def aligned_labels() -> torch.Tensor:
    """Answer cells on different tokens in different rows, and 2 to 4 of them: position k is not token k."""
    generator = torch.Generator().manual_seed(5)
    labels = torch.full(IDS.shape, IGNORE_INDEX)
    for row in range(IDS.shape[0]):
        cells = 2 + row % 3
        positions = torch.randperm(IDS.shape[1], generator=generator)[:cells].sort().values
        labels[row, positions] = torch.randint(0, 3, (cells,), generator=generator)
    return labels


@pytest.mark.parametrize("halt", [True, False])
def test_per_position_accuracy_is_that_of_the_kth_answer_cell(halt: bool) -> None:
    model, labels = tiny_model(), aligned_labels()
    results = run_evaluate(model, labels, halt=halt)
    predicted = headline_predictions(model, halt)
    hits, counts = [0] * 4, [0] * 4
    for row in range(IDS.shape[0]):
        scored = (labels[row] != IGNORE_INDEX).nonzero().flatten()
        for position, token in enumerate(scored.tolist()):
            hits[position] += int(predicted[row, token] == labels[row, token])
            counts[position] += 1
    assert [row["position"] for row in results["per_position"]] == [1, 2, 3, 4]
    assert [row["cells"] for row in results["per_position"]] == counts == [11, 11, 7, 3]
    assert [row["accuracy"] for row in results["per_position"]] == pytest.approx([h / c for h, c in zip(hits, counts)])
    weighted = sum(row["accuracy"] * row["cells"] for row in results["per_position"]) / sum(counts)
    assert weighted == pytest.approx(results["accuracy"])
    assert results["halt"] is halt and "wrong" not in results  # only asked for with keep_wrong


def test_a_label_output_has_one_position() -> None:
    model = tiny_model("sequence_classification")
    labels = torch.randint(0, 3, (IDS.shape[0],), generator=torch.Generator().manual_seed(6))
    results = run_evaluate(model, labels)
    assert results["per_position"] == [{"position": 1, "accuracy": pytest.approx(results["accuracy"]), "cells": IDS.shape[0]}]


@pytest.mark.parametrize("keep", [2, 100])
def test_keep_wrong_gives_the_first_wrong_samples_in_data_order(keep: int) -> None:
    model, labels = tiny_model(), aligned_labels()
    results = run_evaluate(model, labels, halt=True, keep_wrong=keep)
    predicted = headline_predictions(model, halt=True)
    scored = labels != IGNORE_INDEX
    wrong = [row for row in range(IDS.shape[0]) if not torch.equal(predicted[row][scored[row]], labels[row][scored[row]])]
    assert 2 < len(wrong) < IDS.shape[0]  # some right, several wrong, across batches of 4
    assert [row["index"] for row in results["wrong"]] == wrong[:keep]
    for row in results["wrong"]:
        assert row["prediction_ids"] == predicted[row["index"]].tolist()
    assert results["exact_match"] == pytest.approx(1 - len(wrong) / IDS.shape[0])
