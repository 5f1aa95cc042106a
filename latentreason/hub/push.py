"""Publish a saved reasoner: `push_to_hub` (save into a temporary folder, upload) and `push_folder`.

Only our files are uploaded (the config, the weights, `lora/`, `eval_results.json` and a model card
rewritten to load the repo id); `checkpoints/`, recipes and anything else stay local.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

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
from .load import is_hub_id
from .save import save_pretrained

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

    from ..config import ReasonerConfig
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
    allow_local_base: bool = False,
) -> CommitInfo:
    """Save the reasoner into a temporary folder and upload it to the Hub repo `repo_id` (created if needed).

    `state_dict`, `eval_results` and `dataset_name` are as in `save_pretrained`; the checks before the
    upload (`allow_local_base`, the token) are as in `push_folder`.

    Example:
        >>> model.push_to_hub("user/sudoku-reasoner", private=True)      # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory(prefix="latentreason-save-") as scratch:
        folder = save_pretrained(
            model, Path(scratch) / "reasoner", state_dict=state_dict, eval_results=eval_results, dataset_name=dataset_name
        )
        return push_folder(
            folder, repo_id, private=private, token=token, commit_message=commit_message, revision=revision,
            allow_local_base=allow_local_base,
        )


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    allow_local_base: bool = False,
    extra_files: dict[str, str] | None = None,
) -> CommitInfo:
    """Upload a saved reasoner (or a `latentreason train` run folder) to the Hub: our files only.

    The folder is checked first (`validate_folder`), so a broken save never reaches the Hub. Only
    the config, the weights, `lora/`, `eval_results.json` and a model card are uploaded (the card is
    rewritten so that its usage snippet loads `repo_id`); `checkpoints/`, recipes and anything else
    stay local. Files of ours left on the Hub by an earlier push and absent now (a LoRA folder) are deleted.
    `extra_files` (name -> text, e.g. a Space's `app.py` and `requirements.txt`) are uploaded beside them.

    Before anything is uploaded: an adapter whose base model is a path on this machine is refused
    (nobody else could load it) unless `allow_local_base=True`, and the token is checked with the Hub
    (`whoami`), so a missing login, a bad token or an unreachable Hub ends in one `PushError` naming the fix.

    Example:
        >>> push_folder("runs/sudoku", "user/sudoku-reasoner")          # doctest: +SKIP
    """
    folder = Path(folder)
    config = validate_folder(folder)
    eval_results = read_eval_results(folder)
    dataset_name = _card_dataset(folder)
    if not allow_local_base:
        check_base_is_public(config, folder)
    api = HfApi(token=token)
    check_login(api, repo_id)
    with tempfile.TemporaryDirectory(prefix="latentreason-push-") as scratch:
        upload = Path(scratch)
        for name in (CONFIG_NAME, WEIGHTS_NAME, EVAL_RESULTS_NAME):
            if (folder / name).is_file():
                shutil.copy2(folder / name, upload / name)
        if (folder / LORA_DIR).is_dir():
            shutil.copytree(folder / LORA_DIR, upload / LORA_DIR)
        model_card(config, eval_results=eval_results, dataset_name=dataset_name, load_name=repo_id).save(upload / MODEL_CARD_NAME)
        for name, text in (extra_files or {}).items():
            (upload / name).write_text(text, encoding="utf-8")

        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        if revision is not None:
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=upload,
            repo_type="model",
            revision=revision,
            commit_message=commit_message or f"Upload latentreason reasoner ({config.output}) for {config.base_model_name_or_path}",
            allow_patterns=[*HUB_FILES, *(extra_files or {})],
            delete_patterns=list(HUB_FILES),
        )


class PushError(ValueError):
    """A push that cannot go ahead: the message names the reason and the fix, in one line."""


def check_base_is_public(config: ReasonerConfig, folder: Path) -> None:
    """Refuse an adapter whose base model is a folder on this machine: loading it from the Hub would fail."""
    if config.input != "backbone" or is_hub_id(config.base_model_name_or_path):
        return
    raise PushError(
        f"{folder} was trained on the base model {config.base_model_name_or_path!r}, a path on this machine, "
        "so nobody who downloads the adapter could load it. Retrain with model.base set to a Hub id or a "
        "packaged model (packaged:all-MiniLM-L6-v2, packaged:SmolLM2-135M-Instruct: saved by their Hub ids), "
        "or pass --allow-local-base (allow_local_base=True) to publish it anyway."
    )


def check_login(api: HfApi, repo_id: str) -> None:
    """Ask the Hub who the token belongs to, so that a missing login or an unreachable Hub fails before any upload."""
    try:
        api.whoami()
    except LocalTokenNotFoundError:
        raise PushError(
            f"cannot push to {repo_id!r}: no Hugging Face token found. Log in with `hf auth login`, "
            "set HF_TOKEN, or pass --token."
        ) from None
    except OfflineModeIsEnabled:
        raise PushError(
            f"cannot push to {repo_id!r}: HF_HUB_OFFLINE is set, so the Hub is not contacted. Unset it to push."
        ) from None
    except HfHubHTTPError as error:
        status = error.response.status_code if error.response is not None else None
        if status in (401, 403):
            raise PushError(
                f"cannot push to {repo_id!r}: the Hub refused the token ({status}). Log in again with "
                "`hf auth login` or pass a valid --token (with write access)."
            ) from None
        raise PushError(f"cannot push to {repo_id!r}: the Hub answered {status}: {_first_line(error)}") from None
    except Exception as error:
        if not _is_network_error(error):
            raise
        raise PushError(
            f"cannot push to {repo_id!r}: the Hub (huggingface.co) cannot be reached ({_first_line(error)}). "
            "Check the network connection or proxy settings (HTTPS_PROXY), then push again."
        ) from None


def _is_network_error(error: BaseException) -> bool:
    """A connection, DNS or timeout failure, from the HTTP client huggingface_hub uses (httpx) or the OS."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return isinstance(error, (ConnectionError, TimeoutError)) or bool(names & {"TransportError", "RequestError", "NetworkError", "TimeoutException"})


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _card_dataset(folder: Path) -> str | None:
    """The data set named in the folder's existing model card, so that a re-generated card keeps it."""
    path = folder / MODEL_CARD_NAME
    if not path.is_file():
        return None
    try:
        datasets = ModelCard.load(path, ignore_metadata_errors=True).data.datasets
    except (yaml.YAMLError, ValueError) as error:  # the card is written anew: a broken one costs only its dataset name
        warnings.warn(
            f"{path} has malformed YAML front matter ({_first_line(error)}), so the data set it names is not kept: "
            "the card pushed is written anew. Fix the front matter (or delete the card) to keep it.",
            stacklevel=3,
        )
        return None
    if isinstance(datasets, list):
        return datasets[0] if datasets else None
    return datasets


