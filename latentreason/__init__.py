"""latentreason: give any Hugging Face model a small recursive latent reasoner (TRM-style).

    from latentreason import ReasonerConfig, attach_reasoner, LatentReasonerModel
"""

from .config import ReasonerConfig
from .model import LatentReasonerModel, ReasonerModelOutput, RefineOutput, attach_reasoner
from .reasoner import Carry, Reasoner

__version__ = "0.1.0"

__all__ = [
    "Carry",
    "LatentReasonerModel",
    "Reasoner",
    "ReasonerConfig",
    "ReasonerModelOutput",
    "RefineOutput",
    "__version__",
    "attach_reasoner",
]
