"""`model.layer: auto`: choose the backbone layer the reasoner reads from a quick probe on the training data.

Which layer carries a task's signal depends on the task: the last layer of a sentence encoder has mixed
each token with its neighbours (good for meaning, bad for "which digit sits here"), a middle one keeps
each token's identity. So instead of a fixed default, a small one-pass probe is trained on each
candidate layer's features, on a slice of the training rows, and scored on rows it did not see:

    features of layer l --Linear--> one attention block --Linear--> per-cell labels (or one label, pooled)

The probe is one pass of roughly the reasoner's shape, without recursion: a layer whose features let it
learn the task fast is one the reasoner can work with. The backbone runs once for all layers; each probe
trains for a fixed number of steps with a fixed seed, so the choice is deterministic. Ties (within
`TIE`) go to the later layer, the usual default.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..losses import IGNORE_INDEX

logger = logging.getLogger(__name__)

TIE = 0.002  # held-out accuracies closer than this count as equal (then the later layer wins)


@dataclass
class LayerChoice:
    """The layer chosen, every candidate's held-out probe accuracy, and how long the probe took."""

    layer: int
    scores: dict[int, float]
    seconds: float
    rows: int

    def describe(self) -> str:
        ranked = ", ".join(f"{layer}: {score:.3f}" for layer, score in self.scores.items())
        return (f"model.layer=auto chose layer {self.layer} (one-pass probe accuracy on held-out rows per layer: {ranked}; "
                f"{self.rows} rows, {self.seconds:.0f} s)")


def candidate_layers(num_layers: int, most: int = 9) -> list[int]:
    """Hidden states 0 (embeddings) .. num_layers (last): all of them, or `most` evenly spread, the last included."""
    if num_layers + 1 <= most:
        return list(range(num_layers + 1))
    return sorted({round(i * num_layers / (most - 1)) for i in range(most)})


class _Probe(nn.Module):
    def __init__(self, hidden_size: int, num_labels: int, width: int = 64, pooled: bool = False) -> None:
        super().__init__()
        self.pooled = pooled
        self.norm = nn.LayerNorm(hidden_size)
        self.project = nn.Linear(hidden_size, width)
        self.block = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.head = nn.Linear(width, num_labels)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.block(self.project(self.norm(features)), src_key_padding_mask=~mask)
        if self.pooled:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            hidden = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        return self.head(hidden)


def _backbone_states(backbone: Any, rows: list[dict[str, Any]], layers: list[int], batch_size: int = 32) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Every candidate layer's hidden states (N, L, H) for `rows`, padded, and the attention mask (N, L)."""
    length = max(len(row["input_ids"]) for row in rows)
    ids = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for index, row in enumerate(rows):
        ids[index, : len(row["input_ids"])] = torch.as_tensor(row["input_ids"])
        mask[index, : len(row["input_ids"])] = True
    states: list[list[torch.Tensor]] = [[] for _ in layers]
    device = backbone.device  # where the backbone computes (a GPU when the run has one); the probes train on the CPU
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            outputs = backbone.encoder(
                input_ids=ids[start : start + batch_size].to(device),
                attention_mask=mask[start : start + batch_size].long().to(device),
                output_hidden_states=True,
                return_dict=True,
            )
            for slot, layer in enumerate(layers):
                states[slot].append(outputs.hidden_states[layer].float().cpu())
    return [torch.cat(chunks) for chunks in states], mask


def _labels(rows: list[dict[str, Any]], length: int, pooled: bool) -> torch.Tensor:
    if pooled:
        return torch.tensor([int(row["labels"]) for row in rows])
    labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
    for index, row in enumerate(rows):
        labels[index, : len(row["labels"])] = torch.as_tensor(row["labels"])
    return labels


def _score(features: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, num_labels: int, pooled: bool,
           train: slice, held_out: slice, steps: int, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    probe = _Probe(features.shape[-1], num_labels, pooled=pooled)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=3e-3, weight_decay=0.01)
    x, m, y = features[train], mask[train], labels[train]
    batch = min(32, len(x))
    for _ in range(steps):
        pick = torch.randint(0, len(x), (batch,), generator=generator)
        logits = probe(x[pick], m[pick])
        loss = nn.functional.cross_entropy(logits.reshape(-1, num_labels), y[pick].reshape(-1), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = probe(features[held_out], mask[held_out]).argmax(-1)
    wanted = labels[held_out]
    counted = wanted != IGNORE_INDEX
    return float((predicted[counted] == wanted[counted]).float().mean())


def choose_layer(
    backbone: Any,
    train_rows: Any,
    num_labels: int,
    *,
    pooled: bool,
    max_rows: int = 512,
    steps: int = 150,
    seed: int = 0,
    layers: list[int] | None = None,
) -> LayerChoice:
    """Probe each candidate layer of `backbone` (a `FrozenBackbone`) on up to `max_rows` encoded training rows
    (`input_ids`, `labels`: per token, IGNORE_INDEX off the cells, or one label per row when `pooled`)."""
    start = time.monotonic()
    count = min(len(train_rows), max_rows)
    order = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    rows = [train_rows[index] for index in order]
    if count < 8:
        raise ValueError(f"model.layer=auto needs at least 8 training rows to probe the layers, got {count}: set model.layer to a number.")
    layers = layers if layers is not None else candidate_layers(backbone.num_layers)
    states, mask = _backbone_states(backbone, rows, layers)
    labels = _labels(rows, mask.shape[1], pooled)
    split = max(1, math.floor(0.75 * count))
    scores = {layer: _score(features, mask, labels, num_labels, pooled, slice(0, split), slice(split, count), steps, seed)
              for layer, features in zip(layers, states)}
    best = max(scores.values())
    chosen = max(layer for layer, score in scores.items() if score >= best - TIE)
    return LayerChoice(chosen, scores, time.monotonic() - start, count)
