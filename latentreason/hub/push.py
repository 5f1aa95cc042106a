"""Publish a saved reasoner: `push_to_hub` (save into a temporary folder, upload) and `push_folder`.

Only our files are uploaded (the config, the weights, `lora/`, `eval_results.json` and a model card
rewritten to load the repo id); `checkpoints/`, recipes and anything else stay local.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import HfApi, ModelCard

from .card import model_card
from .files import (
    CONFIG_NAME,
    EVAL_RESULTS_NAME,
    HUB_FILES,
    LORA_DIR,
    MODEL_CARD_NAME,
    WEIGHTS_NAME,
    read_eval_results,
    validate_folder,
)
from .save import save_pretrained

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ..model import LatentReasonerModel


def push_to_hub(
    model: LatentReasonerModel,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    eval_results: dict[str, Any] | None = None,
    dataset_name: str | None = None,
) -> CommitInfo:
    """Save the reasoner into a temporary folder and upload it to the Hub repo `repo_id` (created if needed).

    `state_dict`, `eval_results` and `dataset_name` are as in `save_pretrained`.

    Example:
        >>> model.push_to_hub("user/sudoku-reasoner", private=True)      # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory(prefix="latentreason-save-") as scratch:
        folder = save_pretrained(
            model, Path(scratch) / "reasoner", state_dict=state_dict, eval_results=eval_results, dataset_name=dataset_name
        )
        return push_folder(folder, repo_id, private=private, token=token, commit_message=commit_message, revision=revision)


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
) -> CommitInfo:
    """Upload a saved reasoner (or a `latentreason train` run folder) to the Hub: our files only.

    The folder is checked first (`validate_folder`), so a broken save never reaches the Hub. Only
    the config, the weights, `lora/`, `eval_results.json` and a model card are uploaded (the card is
    rewritten so that its usage snippet loads `repo_id`); `checkpoints/`, recipes and anything else
    stay local. Files of ours left on the Hub by an earlier push and absent now (a LoRA folder) are deleted.

    Example:
        >>> push_folder("runs/sudoku", "user/sudoku-reasoner")          # doctest: +SKIP
    """
    folder = Path(folder)
    config = validate_folder(folder)
    eval_results = read_eval_results(folder)
    dataset_name = _card_dataset(folder)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="latentreason-push-") as scratch:
        upload = Path(scratch)
        for name in (CONFIG_NAME, WEIGHTS_NAME, EVAL_RESULTS_NAME):
            if (folder / name).is_file():
                shutil.copy2(folder / name, upload / name)
        if (folder / LORA_DIR).is_dir():
            shutil.copytree(folder / LORA_DIR, upload / LORA_DIR)
        model_card(config, eval_results=eval_results, dataset_name=dataset_name, load_name=repo_id).save(upload / MODEL_CARD_NAME)

        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=upload,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload latentreason reasoner ({config.output}) for {config.base_model_name_or_path}",
            allow_patterns=list(HUB_FILES),
            delete_patterns=list(HUB_FILES),
        )


def _card_dataset(folder: Path) -> str | None:
    """The data set named in the folder's existing model card, so that a re-generated card keeps it."""
    path = folder / MODEL_CARD_NAME
    if not path.is_file():
        return None
    datasets = ModelCard.load(path, ignore_metadata_errors=True).data.datasets
    if isinstance(datasets, list):
        return datasets[0] if datasets else None
    return datasets


