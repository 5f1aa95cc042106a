"""Learned token embeddings: the input of a reasoner that reads no base model (TRM as published).

With `ReasonerConfig(input="token_embeddings", vocab_size=V)` a `LatentReasonerModel` has no frozen
backbone: token ids go through a learned table of width `hidden_size`, scaled by sqrt(hidden_size)
as TRM scales them, optionally with a learned position table (TRM's `pos_encodings: learned`,
averaged with the tokens by 1/sqrt(2) so the sum keeps unit variance). The table trains with the
reasoner, so nothing is cached: the lookup runs at every supervision step.

This is what `latentreason convert-trm` loads a TRM checkpoint into, and the "no LLM" comparator
of the benchmarks (the same reasoner without the knowledge of a pretrained model).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import ReasonerConfig

HALF_SQRT2 = 0.707106781  # 1/sqrt(2) to 9 digits, the constant TRM's reference uses (converted checkpoints match it exactly)


class TokenEmbeddings(nn.Module):
    """Token ids (B, L) -> embeddings (B, L, hidden_size), TRM's input embedding.

    With `prefix_slots` P, the model's prefix (TRM's puzzle-embedding positions) is embedded the way the
    reference embeds it, as part of the input: the position table covers P + max_length rows and the
    prefix takes the first P (`embed_prefix`), then everything is scaled alike.
    """

    def __init__(self, config: ReasonerConfig) -> None:
        super().__init__()
        assert config.vocab_size is not None
        self.vocab_size = config.vocab_size
        self.prefix_length = config.prefix_slots
        self.scale = math.sqrt(config.hidden_size)
        std = 1.0 / self.scale
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        nn.init.trunc_normal_(self.embed.weight, std=std, a=-2.0 * std, b=2.0 * std)
        self.positions: nn.Parameter | None = None
        if config.positions == "learned":
            assert config.max_length is not None
            self.positions = nn.Parameter(torch.empty(self.prefix_length + config.max_length, config.hidden_size))
            nn.init.trunc_normal_(self.positions, std=std, a=-2.0 * std, b=2.0 * std)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids must be integer token ids, got dtype {str(input_ids.dtype).removeprefix('torch.')}.")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
            raise ValueError(
                f"input_ids must lie in [0, vocab_size={self.vocab_size}), got values from {int(input_ids.min())} to "
                f"{int(input_ids.max())}: the ids come from another vocabulary than the one this reasoner was built for."
            )
        start = self.prefix_length
        return self._place(self.embed(input_ids), start, start + input_ids.shape[1])

    def embed_prefix(self, prefix: torch.Tensor) -> torch.Tensor:
        """The model's prefix slots (B, P, d) embedded as the reference embeds its puzzle positions."""
        return self._place(prefix, 0, self.prefix_length)

    def _place(self, embedded: torch.Tensor, start: int, end: int) -> torch.Tensor:
        if self.positions is not None:
            embedded = HALF_SQRT2 * (embedded + self.positions[start:end].to(embedded.dtype))
        return self.scale * embedded
