"""Where a saved reasoner and its base model come from: a local folder or the Hub, at which revision.

`LatentReasonerModel.from_pretrained` (model.py) reads the folder with these and `files.py`, then
attaches a fresh reasoner to the base model and loads the weights into it.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id
from transformers import PreTrainedModel

from .. import __version__
from ..backbone import resolve_commit
from ..config import ReasonerConfig
from .files import COMMIT_HASH, CONFIG_NAME, HUB_FILES


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder as is; a Hub repo id through `snapshot_download` (our files only, the cache when offline)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if revision is not None:
            warnings.warn(f"revision={revision!r} is ignored: {path} is a local folder, not a Hub repo.", stacklevel=3)
        return path
    try:
        folder = snapshot_download(
            repo_id=str(name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            local_files_only=bool(local_files_only),
            allow_patterns=list(HUB_FILES),
            library_name="latentreason",
            library_version=__version__,
        )
    except (HFValidationError, LocalEntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled) as error:
        raise FileNotFoundError(
            f"{str(name_or_path)!r} is neither a local folder (looked in {Path.cwd()}) nor a Hub repo that could be "
            f"fetched ({type(error).__name__}: {error}). Check the path, or the repo id and revision; with "
            "HF_HUB_OFFLINE=1 only repos already in the local cache load."
        ) from error
    return Path(folder)


def base_to_load(config: ReasonerConfig, base_model: str | PreTrainedModel | None) -> tuple[str | PreTrainedModel, str | None]:
    """Which base to load, and at which revision: the pinned one, or the user's copy at its own revision."""
    if base_model is None:
        name = config.base_model_name_or_path
        if name is None:
            raise ValueError(f"The reasoner's {CONFIG_NAME} does not name its base model: pass base_model= (a Hub id, a folder or a model).")
        if looks_like_path(name) and not Path(name).expanduser().exists():
            raise FileNotFoundError(
                f"This reasoner was trained on a local model at {name}, which is not on this machine: pass base_model= "
                "a copy of it (a local folder, a Hub id or a loaded model)."
            )
        return name, config.base_model_revision
    if isinstance(base_model, os.PathLike):
        base_model = str(base_model)
    if isinstance(base_model, str):
        same = base_model == config.base_model_name_or_path
        return base_model, config.base_model_revision if same else None
    if isinstance(base_model, PreTrainedModel):
        return base_model, None
    raise TypeError(f"base_model must be a Hub id, a local folder or a PreTrainedModel, got {type(base_model).__name__}.")


def base_commit(base: str | PreTrainedModel, revision: str | None, hub_options: dict[str, Any]) -> str | None:
    """The commit of the base model in use, where it can be known: a Hub cache path, the Hub, or the local cache."""
    if isinstance(base, PreTrainedModel):
        commit = getattr(base.config, "_commit_hash", None)  # recorded by transformers before version 5
        if commit:
            return commit
        name = base.name_or_path
    else:
        name = base
    in_cache = re.search(r"/snapshots/([0-9a-f]{40})(/|$)", Path(name).as_posix())
    if in_cache:
        return in_cache.group(1)
    return resolve_commit(base, revision, **hub_options) if isinstance(base, str) else None


def warn_if_other_revision(config: ReasonerConfig, actual: str | None) -> None:
    pinned = config.base_model_revision
    if pinned and actual and COMMIT_HASH.match(pinned) and pinned != actual:
        warnings.warn(
            f"This reasoner was trained on {config.base_model_name_or_path} at revision {pinned}, but the base model "
            f"given is at revision {actual}. Its features may differ, and so may the results: use the pinned revision "
            "if you can.",
            stacklevel=3,
        )


def looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id ("org/name" or "name")."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def is_hub_id(name: str | None) -> bool:
    if not name or looks_like_path(name) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


