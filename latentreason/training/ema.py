"""An exponential moving average of the trainable weights, with TRM's decay and a warm-up.

`torch.optim.swa_utils.AveragedModel` does the averaging. It averages a small module that holds
only the trainable parameters (never the frozen backbone, which can be millions of weights that
never change), and the decay warms up as `min(decay, (1 + s) / (10 + s))`: a plain 0.999 EMA after
a few hundred CPU steps is still mostly the random initialisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel


class TrainableParameters(nn.Module):
    """A view of a model's trainable parameters, remembering their names (what `AveragedModel` copies)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        self.names = [name for name, _ in named]
        self.params = nn.ParameterList([p for _, p in named])


def warmup_ema_avg_fn(decay: float, warmup: bool):
    """A `multi_avg_fn` for `AveragedModel`: EMA with decay `min(decay, (1 + s) / (10 + s))` when `warmup`."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        step = float(num_averaged)
        rate = min(decay, (1.0 + step) / (10.0 + step)) if warmup else decay
        torch._foreach_lerp_(averaged, current, 1.0 - rate)

    return update


class ExponentialMovingAverage(nn.Module):
    """EMA of `model`'s trainable weights: `update()` after each optimizer step, `swapped_into()` to evaluate.

    Example:
        >>> ema = ExponentialMovingAverage(model, decay=0.999)           # doctest: +SKIP
        >>> ema.update()                                                  # after optimizer.step()  # doctest: +SKIP
        >>> with ema.swapped_into():                                      # evaluate the averaged weights  # doctest: +SKIP
        ...     metrics = evaluate(model, loader)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        self.live = [TrainableParameters(model)]  # a list, so the live weights are not part of this module's state
        self.averaged = AveragedModel(self.live[0], multi_avg_fn=warmup_ema_avg_fn(decay, warmup), use_buffers=False)

    @property
    def num_updates(self) -> int:
        return int(self.averaged.n_averaged)

    def update(self) -> None:
        self.averaged.update_parameters(self.live[0])

    def named_averages(self) -> dict[str, torch.Tensor]:
        """The averaged weights by parameter name (the names of the model the EMA was built on)."""
        module = self.averaged.module
        return {name: p.detach() for name, p in zip(module.names, module.params)}

    @contextlib.contextmanager
    def swapped_into(self) -> Iterator[None]:
        """Inside the block the model holds the averaged weights; its own weights come back afterwards."""
        live = list(self.live[0].params)
        saved = [p.detach().clone() for p in live]
        with torch.no_grad():
            for p, average in zip(live, self.averaged.module.params):
                p.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, original in zip(live, saved):
                    p.copy_(original)
