"""latentreason: give any Hugging Face model a small recursive latent reasoner (TRM-style).

    from latentreason import ReasonerConfig, attach_reasoner, LatentReasonerModel

Names are imported on first use, so `import latentreason` stays cheap (the task suite and the CLI's
`--help` do not pay for importing transformers and accelerate).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "ReasonerConfig": "config",
    "LatentReasonerModel": "model",
    "ReasonerModelOutput": "model",
    "RefineOutput": "trajectories",
    "attach_reasoner": "model",
    "Carry": "reasoner",
    "Reasoner": "reasoner",
    "TrainingConfig": "training",
    "train": "training",
    "load_recipe": "recipe",
    "load_pairs": "data",
    "PairEncoder": "data",
    "FeatureCache": "features",
    "get_task": "tasks",
}

__all__ = [
    "Carry",
    "FeatureCache",
    "LatentReasonerModel",
    "PairEncoder",
    "Reasoner",
    "ReasonerConfig",
    "ReasonerModelOutput",
    "RefineOutput",
    "TrainingConfig",
    "__version__",
    "attach_reasoner",
    "get_task",
    "load_pairs",
    "load_recipe",
    "train",
]

if TYPE_CHECKING:
    from .config import ReasonerConfig
    from .data import PairEncoder, load_pairs
    from .features import FeatureCache
    from .model import LatentReasonerModel, ReasonerModelOutput, attach_reasoner
    from .reasoner import Carry, Reasoner
    from .recipe import load_recipe
    from .tasks import get_task
    from .training import TrainingConfig, train
    from .trajectories import RefineOutput


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'latentreason' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
