"""Training latent reasoners: the deep-supervision loop on Accelerate, EMA, checkpoints, evaluation.

    from latentreason.training import TrainingConfig, train  # your own encoded datasets
    from latentreason.pipeline import train_recipe                     # what `latentreason train` runs (app layer

Modules: `config` (TrainingConfig), `loop` (train), `evaluation` (accuracy per refinement step),
`ema` (EMA with warm-up), `checkpoints` (atomic, resumable), `persistent` (TRM's persistent batch).
"""

from .checkpoints import latest_checkpoint
from .config import TrainingConfig
from .ema import ExponentialMovingAverage
from .evaluation import evaluate
from .loop import EVAL_RESULTS_NAME, Trainer, TrainResult, adamw, train

__all__ = [
    "EVAL_RESULTS_NAME",
    "ExponentialMovingAverage",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "adamw",
    "evaluate",
    "latest_checkpoint",
    "train",
]
