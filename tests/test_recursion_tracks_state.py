"""The recursion carries a state further than one supervision step can see, trained by the library's own loop.

S3 ball tracking (3 cups, one swap per step, the ball's cup after each step), learned token
embeddings and the `conv` mixer with n=1, T=1 and 2 layers: one supervision step reaches
T x (n + 1) x layers x (kernel // 2) = 4 positions. Where the ball is after swap 8 depends on every
swap before it, and the swaps 5-8 alone say nothing about it (each swap permutes the cups, so a
uniform ball stays uniform): after one refinement step position 8 can be right only by chance (1/3).
Refined for 8 steps, the state is carried there through the carry, from step to step.
"""

from __future__ import annotations

import functools
import random

import pytest
import torch

from latentreason import LatentReasonerModel, ReasonerConfig
from latentreason.data import collate
from latentreason.training import TrainingConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")

SWAPS = [(0, 1), (0, 2), (1, 2)]
LENGTH = 8


def games(count: int, seed: int, min_length: int = 1) -> list[dict[str, list[int]]]:
    """Encoded games: token k + 1 is swap k; the label is the ball's cup (0-2) after each swap."""
    rng, rows = random.Random(seed), []
    for _ in range(count):
        ball, ids, labels = 0, [], []
        for _ in range(rng.randint(min_length, LENGTH)):
            k = rng.randrange(len(SWAPS))
            a, b = SWAPS[k]
            ball = b if ball == a else a if ball == b else ball
            ids.append(k + 1)
            labels.append(ball)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows


def test_refinement_carries_the_ball_past_one_steps_reach(tmp_path) -> None:
    torch.manual_seed(0)
    config = ReasonerConfig(input="token_embeddings", vocab_size=len(SWAPS) + 1, hidden_size=32, num_heads=2, mixer="conv",
                            latent_steps=1, cycles=1, max_supervision_steps=8, num_labels=3)
    assert config.cycles * (config.latent_steps + 1) * config.num_layers * (config.conv_kernel // 2) == 4  # one step's reach
    model = LatentReasonerModel.from_config(config)
    training = TrainingConfig(output_dir=str(tmp_path), max_steps=600, batch_size=64, learning_rate=1e-3, warmup_steps=10,
                              checkpoint_every=None, progress_bar=False, report_to="none", seed=0)
    result = train(model, games(4000, seed=1), training, collate_fn=functools.partial(collate, pad_token_id=0))
    model.load_state_dict(result.adapter_state_dict, strict=False)

    test = collate(games(256, seed=2, min_length=LENGTH), pad_token_id=0)
    with torch.no_grad():
        steps = model.eval().refine(test["input_ids"], test["attention_mask"], steps=8).step_logits
    right = [(logits.argmax(-1) == test["labels"]).float().mean(0) for logits in steps]  # per position, after each step
    assert right[0][:4].min() > 0.9  # within one step's reach: learned
    assert right[0][LENGTH - 1] < 0.45  # out of reach after one step: chance is 1/3
    assert right[-1][LENGTH - 1] > 0.9  # after 8 steps the ball is tracked to the end (measured: 1.0 from step 4 on)
