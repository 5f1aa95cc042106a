"""Training latent reasoners: the deep-supervision loop on Accelerate, EMA, checkpoints, evaluation.

    from latentreason.training import TrainingConfig, train            # your own encoded datasets
    from latentreason.training import train_recipe                     # what `latentreason train` runs

Modules: `config` (TrainingConfig), `loop` (train), `evaluation` (accuracy per refinement step),
`ema` (EMA with warm-up), `checkpoints` (atomic, resumable), `pipeline` (recipe -> run folder -> eval/predict).
"""

from .checkpoints import latest_checkpoint
from .config import TrainingConfig
from .ema import ExponentialMovingAverage
from .evaluation import evaluate
from .loop import EVAL_RESULTS_NAME, TrainResult, adamw, train
from .pipeline import Prediction, Run, evaluate_run, load_run, predict, train_recipe

__all__ = [
    "EVAL_RESULTS_NAME",
    "ExponentialMovingAverage",
    "Prediction",
    "Run",
    "TrainResult",
    "TrainingConfig",
    "adamw",
    "evaluate",
    "evaluate_run",
    "latest_checkpoint",
    "load_run",
    "predict",
    "train",
    "train_recipe",
]
