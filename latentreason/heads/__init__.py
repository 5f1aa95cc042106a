"""Output paths (heads), one registry filled eagerly: the label heads and the LM heads side by side.

    base.py             OutputHead (the contract), PerTokenHead, `register_output`, the label-range check
    classification.py   token_classification, sequence_classification
    lm.py               lm_head, latent_prefix: the answer goes back through the frozen causal LM
"""

from __future__ import annotations

from ..config import ReasonerConfig
from . import classification, lm  # noqa: F401  (importing registers the output paths)
from .base import OUTPUT_HEADS, OutputHead, PerTokenHead, check_label_range, register_output


def build_output_head(config: ReasonerConfig, backbone=None) -> OutputHead:
    """The output path `config.output` names, built for `config` (and the backbone, for the LM paths)."""
    if config.output not in OUTPUT_HEADS:
        raise ValueError(f"Unknown output path {config.output!r}; registered: {sorted(OUTPUT_HEADS)}.")
    return OUTPUT_HEADS[config.output](config, backbone)


__all__ = ["OUTPUT_HEADS", "OutputHead", "PerTokenHead", "build_output_head", "check_label_range", "register_output"]
