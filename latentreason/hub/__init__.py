"""Save, load and publish a reasoner adapter, the way PEFT adapters are published.

A saved reasoner is a folder (or a Hub repo) with fixed, boring names (`files.py`). Loading
(`LatentReasonerModel.from_pretrained`) rebuilds the frozen base model from `base_model_name_or_path`
at `base_model_revision` (or a copy of it the user passes as `base_model=`), attaches a fresh reasoner
and loads the saved weights into it; the base model's own code runs only with `trust_remote_code=True`.

    files.py   the folder's names, atomic writes, reading and checking a saved folder
    save.py    save_pretrained
    load.py    where the folder and the base model come from (local or Hub, which revision)
    push.py    push_to_hub, push_folder
    card.py    the README model card, from a template

None of these import the model: `latentreason.model` sits on top of them.
"""

from .card import model_card
from .files import (
    CONFIG_NAME,
    EVAL_RESULTS_NAME,
    FORMAT_VERSION,
    HUB_FILES,
    LORA_DIR,
    MODEL_CARD_NAME,
    PICKLE_SUFFIXES,
    WEIGHTS_NAME,
    config_to_json,
    lora_folder,
    read_config,
    read_eval_results,
    read_folder,
    read_weights,
    validate_folder,
)
from .load import resolve_folder
from .push import PushError, push_folder, push_to_hub
from .save import save_pretrained

__all__ = [
    "CONFIG_NAME",
    "EVAL_RESULTS_NAME",
    "FORMAT_VERSION",
    "HUB_FILES",
    "LORA_DIR",
    "MODEL_CARD_NAME",
    "PICKLE_SUFFIXES",
    "WEIGHTS_NAME",
    "config_to_json",
    "lora_folder",
    "model_card",
    "PushError",
    "push_folder",
    "push_to_hub",
    "read_config",
    "read_eval_results",
    "read_folder",
    "read_weights",
    "resolve_folder",
    "save_pretrained",
    "validate_folder",
]
