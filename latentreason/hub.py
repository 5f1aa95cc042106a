"""Save, load and publish a reasoner adapter, the way PEFT adapters are published.

A saved reasoner is a folder (or a Hub repo) with fixed, boring names (the constants below):

    reasoner_config.json   the ReasonerConfig + `library_version` + `format_version` (sorted keys, indent 2)
    reasoner.safetensors   the reasoner, input projection, answer slots and output head; never the backbone
    lora/                  the backbone's LoRA adapter in PEFT's own format (only when LoRA was used)
    README.md              the model card: YAML metadata for the Hub, the config, eval per refinement step, usage
    eval_results.json      written by the trainer; shown in the card and uploaded with it when present

Loading rebuilds the frozen base model from `base_model_name_or_path` at `base_model_revision` (or a
copy of it the user passes as `base_model=`), attaches a fresh reasoner and loads the saved weights
into it. Weights are read only from safetensors: a pickle can run code while it is unpickled, so a
`.bin` / `.pt` file is refused, never opened. The base model's own code runs only with
`trust_remote_code=True`.

Saving is atomic: every file is written into a staging folder next to the target and then renamed
into place, so a crash or a full disk mid-save leaves the previous save as it was. Files that are not
ours (a training run's `checkpoints/`, `recipe.yaml`, ...) are left alone, and never uploaded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from . import __version__
from .backbone import resolve_commit
from .config import LM_OUTPUTS, ReasonerConfig
from .model import LatentReasonerModel, attach_reasoner

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

CONFIG_NAME = "reasoner_config.json"
WEIGHTS_NAME = "reasoner.safetensors"
MODEL_CARD_NAME = "README.md"
LORA_DIR = "lora"
EVAL_RESULTS_NAME = "eval_results.json"
FORMAT_VERSION = 1  # bump when the folder layout or the meaning of a saved field changes

# Everything that belongs to a saved reasoner: what is downloaded, uploaded, and replaced on save.
HUB_FILES: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, EVAL_RESULTS_NAME, f"{LORA_DIR}/*")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
_LORA_CONFIG, _LORA_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # PEFT's own names
_COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


# --- save -------------------------------------------------------------------------------------------


def save_pretrained(
    model: LatentReasonerModel,
    save_directory: str | os.PathLike,
    *,
    state_dict: dict[str, torch.Tensor] | None = None,
    eval_results: dict[str, Any] | None = None,
    dataset_name: str | None = None,
    safe_serialization: bool = True,
) -> Path:
    """Write the reasoner adapter (config, safetensors weights, LoRA when used, model card) into a folder.

    Args:
        model: the model to save; its backbone's own weights are never written.
        save_directory: the folder; created if needed. Files in it that are not ours are kept.
        state_dict: weights to save instead of `model.adapter_state_dict()`, with the same names and
            shapes: the trainer passes its EMA copy's weights here. Tensors under `backbone.` are
            not written with the reasoner (the backbone is never saved); LoRA tensors among them
            (`backbone.model....lora_*`) are written into the LoRA adapter instead of the model's
            live LoRA weights.
        eval_results: metrics for the model card (keys `accuracy`, `exact_match`, `per_step`,
            `mean_steps`); also written to `eval_results.json`. By default the folder's own
            `eval_results.json` (written by `latentreason train`) is used when present.
        dataset_name: the training data set's Hub id, listed in the card's metadata.
        safe_serialization: must stay True: weights are written only as safetensors.

    Returns:
        The folder.

    Example:
        >>> model.save_pretrained("sudoku-reasoner")                  # doctest: +SKIP
        >>> sorted(os.listdir("sudoku-reasoner"))                     # doctest: +SKIP
        ['README.md', 'reasoner.safetensors', 'reasoner_config.json']
    """
    if not safe_serialization:
        raise ValueError(
            "latentreason writes weights only as safetensors: pickle files (.bin) can run arbitrary code when they "
            "are loaded. Leave safe_serialization=True."
        )
    target = Path(save_directory).expanduser().resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is a file; save_pretrained needs a folder to write {CONFIG_NAME} and {WEIGHTS_NAME} into.")
    config = model.config
    if config.base_model_name_or_path is None and config.input == "backbone":
        warnings.warn(
            "The model's config does not say which base model it was attached to (base_model_name_or_path is None), "
            "so loading it will need base_model=... . Attach the reasoner to a model id or path to record it.",
            stacklevel=2,
        )
    weights = _weights_to_save(model, state_dict)
    write_eval_results = eval_results is not None
    if eval_results is None:
        eval_results = read_eval_results(target)

    target.parent.mkdir(parents=True, exist_ok=True)
    # Next to the target, so that the final renames stay on one file system; made with mkdir (not mkdtemp,
    # whose folders are private) so the saved folder gets the usual permissions.
    staging = target.parent / f".{target.name}.saving-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        (staging / CONFIG_NAME).write_text(config_to_json(config), encoding="utf-8")
        save_file(weights, staging / WEIGHTS_NAME, metadata=_weights_metadata())
        _usual_permissions(staging / WEIGHTS_NAME)  # safetensors writes 0600; the other files follow the umask
        lora = lora_adapter(model)
        if lora is not None:
            from .lora import peft_state_dict

            averaged = peft_state_dict(state_dict or {})  # e.g. the trainer's EMA of the LoRA weights
            lora.save_pretrained(staging / LORA_DIR, **({"state_dict": averaged} if averaged else {}))
        if write_eval_results:
            (staging / EVAL_RESULTS_NAME).write_text(json.dumps(eval_results, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        card = model_card(config, eval_results=eval_results, dataset_name=dataset_name, load_name=str(target))
        card.save(staging / MODEL_CARD_NAME)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def config_to_json(config: ReasonerConfig) -> str:
    """The text of `reasoner_config.json`: the config's fields, the library and format versions."""
    values = {**config.to_dict(), "library_version": __version__, "format_version": FORMAT_VERSION}
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def lora_adapter(model: LatentReasonerModel) -> Any | None:
    """The backbone's `peft.PeftModel` when LoRA is on it, else None."""
    from peft import PeftModel

    if model.backbone is None:
        return None
    inner = model.backbone.model
    return inner if isinstance(inner, PeftModel) else None


def _weights_to_save(model: LatentReasonerModel, state_dict: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    """The adapter's tensors as independent contiguous CPU copies (what safetensors requires)."""
    expected = model.adapter_state_dict()
    if state_dict is None:
        state = expected
    else:
        state = {name: tensor for name, tensor in state_dict.items() if not name.startswith("backbone.")}
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise ValueError(
                f"state_dict= does not match this model's adapter: missing tensors {missing}, unexpected tensors "
                f"{unexpected}. Pass the weights of a copy of this model, e.g. ema_model.adapter_state_dict()."
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise ValueError(
                    f"state_dict= tensor {name!r} has shape {tuple(tensor.shape)}, the model's has "
                    f"{tuple(expected[name].shape)}: it comes from another reasoner."
                )
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}


def _weights_metadata() -> dict[str, str]:
    return {"format": "pt", "library": "latentreason", "library_version": __version__, "format_version": str(FORMAT_VERSION)}


def _usual_permissions(path: Path) -> None:
    """Give a file the mode a plain `open(path, "w")` would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _move_into_place(staging: Path, target: Path) -> None:
    """Swap the staged files in. All writes happened before this point; what is left are renames.

    A new folder is one atomic rename. An existing folder gets each of our files replaced by an
    atomic rename (a folder is first moved aside, since a rename can't replace a non-empty one),
    so files that are not ours stay where they are. A LoRA folder left from an earlier save is
    removed when this save has none: a stale adapter must never be loaded with new weights.
    """
    if not target.exists():
        staging.rename(target)
        return
    retired = staging / ".retired"
    retired.mkdir()
    for name in (LORA_DIR, WEIGHTS_NAME, EVAL_RESULTS_NAME, MODEL_CARD_NAME, CONFIG_NAME):
        new, old = staging / name, target / name
        if old.is_dir() and (new.exists() or name == LORA_DIR):
            old.rename(retired / name)
        if new.exists():
            os.replace(new, old)


# --- read a saved folder ----------------------------------------------------------------------------


def read_config(path: str | os.PathLike) -> ReasonerConfig:
    """Read `reasoner_config.json`; every problem is an error that names the file and the key."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        if (path.parent / _LORA_CONFIG).is_file():
            hint = f" The folder holds {_LORA_CONFIG}: it is a PEFT adapter, load it with peft.PeftModel.from_pretrained."
        raise FileNotFoundError(
            f"{path} not found: a saved reasoner has {CONFIG_NAME} and {WEIGHTS_NAME}. "
            f"Is {path.parent} the folder written by model.save_pretrained?{hint}"
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}): the reasoner config is corrupt. Save the reasoner again.") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object with the reasoner config, got {type(values).__name__}.")
    library_version = values.pop("library_version", "unknown")
    format_version = values.pop("format_version", FORMAT_VERSION)
    if not isinstance(format_version, int) or format_version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {format_version!r}, but this latentreason ({__version__}) reads format "
            f"{FORMAT_VERSION} and older. It was written by latentreason {library_version}: upgrade latentreason "
            "(pip install -U latentreason)."
        )
    known = {field.name for field in dataclasses.fields(ReasonerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"{path} has unknown keys {unknown} (written by latentreason {library_version}, this is {__version__}). "
            "If the file comes from a newer latentreason, upgrade; if you edited it by hand, remove those keys. "
            f"Known keys: {sorted(known)}."
        )
    try:
        return ReasonerConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: invalid reasoner config: {error}") from error


def read_weights(folder: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read `reasoner.safetensors`. Pickle files are refused, never opened; a damaged file is named."""
    folder = Path(folder)
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
        if pickles:
            raise ValueError(
                f"{folder} has no {WEIGHTS_NAME}, only {pickles}. Those are pickle files, which can run arbitrary code "
                "while they are loaded, so latentreason never opens them. If you trust the file, convert it once: "
                f"state = torch.load(file, weights_only=True); safetensors.torch.save_file(state, '{WEIGHTS_NAME}')."
            )
        raise FileNotFoundError(
            f"{path} not found: the reasoner's weights are missing (latentreason reads weights only from "
            f"{WEIGHTS_NAME}). Save the reasoner again with model.save_pretrained(...)."
        )
    try:
        return load_file(path)
    except SafetensorError as error:
        raise ValueError(
            f"{path} is truncated or corrupt ({error}). Save the reasoner again; if it came from the Hub, delete it "
            "from the cache (huggingface-cli delete-cache) and download it again."
        ) from error


def read_eval_results(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's `eval_results.json` (written by the trainer), or None when there is none."""
    path = Path(folder) / EVAL_RESULTS_NAME
    if not path.is_file():
        return None
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}). It only feeds the model card: fix it or delete it.") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a JSON object (accuracy, exact_match, per_step, mean_steps), got {type(values).__name__}.")
    return values


def lora_folder(folder: str | os.PathLike) -> Path | None:
    """The folder's `lora/` adapter when there is one (checked: PEFT config + safetensors weights), else None."""
    lora = Path(folder) / LORA_DIR
    if not lora.is_dir():
        return None
    if not (lora / _LORA_CONFIG).is_file():
        raise FileNotFoundError(f"{lora / _LORA_CONFIG} not found: the LoRA adapter folder is incomplete. Save the reasoner again.")
    if not (lora / _LORA_WEIGHTS).is_file():
        pickles = sorted(p.name for p in lora.iterdir() if p.suffix in PICKLE_SUFFIXES)
        reason = f"it holds only {pickles}, pickle files that latentreason never opens" if pickles else "it is missing"
        raise ValueError(f"{lora / _LORA_WEIGHTS}: {reason}. LoRA weights are read only from safetensors; save the reasoner again.")
    return lora


def validate_folder(folder: str | os.PathLike) -> ReasonerConfig:
    """Check that a folder holds a loadable reasoner, without loading its base model; return its config.

    Reads the config (all checks of `read_config`) and every tensor of the weights (a truncated file
    fails here), checks the LoRA folder when there is one, and that the weights fit the config: no
    backbone tensors, and the input projection maps the backbone's hidden size to the reasoner's.
    """
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME)
    weights = read_weights(folder)
    lora_folder(folder)
    source = folder / WEIGHTS_NAME
    leaked = sorted(name for name in weights if name.startswith("backbone."))
    if leaked:
        raise ValueError(f"{source} holds backbone tensors {leaked[:4]}: a reasoner never ships its base model. Save it again.")
    if config.input == "token_embeddings":
        expected_shapes = {"token_embeddings.embed.weight": (config.vocab_size, config.hidden_size)}
    else:
        expected_shapes = {"input_proj.weight": (config.hidden_size, config.backbone_hidden_size)}
    if config.answer_slots:
        expected_shapes["answer_slots"] = (config.answer_slots, config.hidden_size)
    for name, shape in expected_shapes.items():
        if name not in weights:
            raise ValueError(f"{source} has no tensor {name!r}: it does not hold a reasoner for the config in {CONFIG_NAME}.")
        if None not in shape and tuple(weights[name].shape) != shape:
            raise ValueError(
                f"{source}: tensor {name!r} has shape {tuple(weights[name].shape)}, but {CONFIG_NAME} implies {shape}. "
                "The config and the weights come from different reasoners; save the reasoner again."
            )
    return config


# --- load -------------------------------------------------------------------------------------------


def from_pretrained(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    base_model: str | PreTrainedModel | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool | None = None,
) -> LatentReasonerModel:
    """Load a saved reasoner from a local folder or a Hub repo, on its base model, ready for inference.

    Args:
        name_or_path: a folder written by `save_pretrained`, or a Hub repo id.
        revision: the reasoner repo's branch, tag or commit (Hub only).
        base_model: attach to this base instead of the one in the config: a local folder, a Hub id,
            or a loaded `PreTrainedModel` (used as is; LoRA layers, if any, are injected into it).
            A base whose commit differs from the pinned one is used with a warning.
        trust_remote_code: let the base model's checkpoint run its own Python code. Only if you trust it.
        dtype: dtype of the backbone when it is loaded here (the reasoner stays in float32).
        cache_dir, token, local_files_only: as in `huggingface_hub`; `HF_HUB_OFFLINE=1` reads only the cache.

    Example:
        >>> from latentreason import LatentReasonerModel                             # doctest: +SKIP
        >>> model = LatentReasonerModel.from_pretrained("user/sudoku-reasoner")     # doctest: +SKIP
        >>> model = LatentReasonerModel.from_pretrained("user/sudoku-reasoner", base_model="/models/Qwen2.5-0.5B")  # doctest: +SKIP
    """
    folder = resolve_folder(name_or_path, revision=revision, cache_dir=cache_dir, token=token, local_files_only=local_files_only)
    config = read_config(folder / CONFIG_NAME)
    weights = read_weights(folder)  # before the base model loads: a broken file fails fast
    lora = lora_folder(folder)
    if config.input == "token_embeddings":  # no base model to fetch
        if base_model is not None:
            raise ValueError(f"{name_or_path} is a reasoner on learned token embeddings: it reads no base model, so base_model= has no use. Leave it out.")
        model = LatentReasonerModel.from_config(config)
        model.load_adapter_state_dict(weights, source=str(folder / WEIGHTS_NAME))
        return model.eval()

    base, base_revision = _base_to_load(config, base_model)
    hub_options = {key: value for key, value in dict(cache_dir=cache_dir, token=token, local_files_only=local_files_only).items() if value is not None}
    try:
        model = attach_reasoner(
            base,
            config,
            revision=base_revision,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            **hub_options,
        )
    except ValueError as error:
        described = base if isinstance(base, str) else type(base).__name__
        raise ValueError(f"Cannot attach the reasoner from {name_or_path} to {described}: {error}") from error
    _warn_if_other_revision(config, _base_commit(base, base_revision, hub_options))
    if base_model is not None:
        # The adapter still describes the base it was trained on, whatever copy it runs on here.
        model.config = model.config.replace(
            base_model_name_or_path=config.base_model_name_or_path, base_model_revision=config.base_model_revision
        )
    if lora is not None:
        from peft import PeftModel

        model.backbone.model = PeftModel.from_pretrained(model.backbone.model, str(lora), is_trainable=False)
    model.load_adapter_state_dict(weights, source=str(folder / WEIGHTS_NAME))
    return model.eval()


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


def _base_to_load(config: ReasonerConfig, base_model: str | PreTrainedModel | None) -> tuple[str | PreTrainedModel, str | None]:
    """Which base to load, and at which revision: the pinned one, or the user's copy at its own revision."""
    if base_model is None:
        name = config.base_model_name_or_path
        if name is None:
            raise ValueError(f"The reasoner's {CONFIG_NAME} does not name its base model: pass base_model= (a Hub id, a folder or a model).")
        if _looks_like_path(name) and not Path(name).expanduser().exists():
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


def _base_commit(base: str | PreTrainedModel, revision: str | None, hub_options: dict[str, Any]) -> str | None:
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


def _warn_if_other_revision(config: ReasonerConfig, actual: str | None) -> None:
    pinned = config.base_model_revision
    if pinned and actual and _COMMIT_HASH.match(pinned) and pinned != actual:
        warnings.warn(
            f"This reasoner was trained on {config.base_model_name_or_path} at revision {pinned}, but the base model "
            f"given is at revision {actual}. Its features may differ, and so may the results: use the pinned revision "
            "if you can.",
            stacklevel=3,
        )


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub id ("org/name" or "name")."""
    return os.path.isabs(name) or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _is_hub_id(name: str | None) -> bool:
    if not name or _looks_like_path(name) or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


# --- publish ----------------------------------------------------------------------------------------


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


# --- model card -------------------------------------------------------------------------------------

_TASK_TYPES = {
    "token_classification": "token-classification",
    "sequence_classification": "text-classification",
    "lm_head": "text-generation",
    "latent_prefix": "text-generation",
}


def model_card(
    config: ReasonerConfig,
    *,
    eval_results: dict[str, Any] | None = None,
    dataset_name: str | None = None,
    load_name: str = "PATH_OR_REPO_ID",
) -> ModelCard:
    """The README model card: Hub metadata (YAML), what the model is, usage, config, eval per refinement step.

    `load_name` is what the usage snippet passes to `from_pretrained` (the folder, or the Hub repo id).
    """
    title = Path(load_name).name or "latentreason reasoner"
    metrics = _eval_metrics(config, eval_results or {}, dataset_name, title)
    data = ModelCardData(
        library_name="latentreason",
        base_model=config.base_model_name_or_path if _is_hub_id(config.base_model_name_or_path) else None,
        tags=["latentreason", "recursive-reasoning", "trm", config.output],
        datasets=[dataset_name] if dataset_name else None,
        eval_results=metrics or None,
        model_name=title if metrics else None,
    )
    sections = [
        f"# {title}",
        _about(config, dataset_name),
        "## Usage\n\n" + _usage(config, load_name),
        "## Configuration\n\n" + _config_table(config),
    ]
    if eval_results:
        sections.append("## Evaluation\n\n" + _eval_section(eval_results))
    sections.append(_files_section())
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


def _about(config: ReasonerConfig, dataset_name: str | None) -> str:
    trained_on = f" It was trained on [{dataset_name}](https://huggingface.co/datasets/{dataset_name})." if dataset_name else ""
    if config.input == "token_embeddings":
        return (
            f"A recursive latent reasoner (TRM-style) made with [latentreason](https://pypi.org/project/latentreason/) "
            f"on learned token embeddings ({config.vocab_size} token ids), with no base model: TRM as published. "
            f"It refines an answer latent for up to {config.max_supervision_steps} supervision steps "
            f"({config.cycles} cycles of {config.latent_steps} latent updates each, effective depth "
            f"{config.effective_depth} layers per step) and answers through the `{config.output}` output path.{trained_on}"
        )
    base = config.base_model_name_or_path or "an unrecorded base model"
    revision = f" at revision `{config.base_model_revision}`" if config.base_model_revision else ""
    return (
        f"A recursive latent reasoner (TRM-style) made with [latentreason](https://pypi.org/project/latentreason/) "
        f"for the frozen base model `{base}`{revision} ({config.backbone_model_type}, hidden size "
        f"{config.backbone_hidden_size}). It reads the base model's hidden states at layer {config.backbone_layer}, "
        f"refines an answer latent for up to {config.max_supervision_steps} supervision steps "
        f"({config.cycles} cycles of {config.latent_steps} latent updates each, effective depth "
        f"{config.effective_depth} layers per step) and answers through the `{config.output}` output path."
        f"{trained_on}\n\nOnly the reasoner is here, never the base model's weights: loading it fetches the base "
        "model from its own repo at the pinned revision."
    )


def _usage(config: ReasonerConfig, load_name: str) -> str:
    if config.input == "token_embeddings":
        return "\n".join([
            "```python",
            "import torch",
            "",
            "from latentreason import LatentReasonerModel",
            "",
            f"model = LatentReasonerModel.from_pretrained({load_name!r})",
            f"input_ids = torch.tensor([[1, 2, 0, 3]])  # token ids in [0, {config.vocab_size}), as in training",
            "result = model.refine(input_ids, halt=True)",
            "print(result.logits.argmax(-1)[0].tolist())",
            'print("refinement steps used:", result.halted_at.tolist())',
            "```",
        ])
    lines = [
        "```python",
        "from transformers import AutoTokenizer",
        "",
        "from latentreason import LatentReasonerModel",
        "",
        f"model = LatentReasonerModel.from_pretrained({load_name!r})",
        "tokenizer = AutoTokenizer.from_pretrained(model.config.base_model_name_or_path, revision=model.config.base_model_revision)",
        "",
        'inputs = tokenizer(["5 3 0 0 7 0"], return_tensors="pt")  # your input, written as in training',
    ]
    if config.output in LM_OUTPUTS:
        lines += [
            'answer_ids = model.generate(inputs["input_ids"], inputs["attention_mask"])',
            "print(tokenizer.batch_decode(answer_ids, skip_special_tokens=True))",
        ]
    else:
        lines += [
            'result = model.refine(inputs["input_ids"], inputs["attention_mask"], halt=True)  # stops when the halting head says so',
            "names = model.config.label_names or [str(label) for label in range(model.config.num_labels)]",
        ]
        if config.output == "token_classification":
            lines.append("print([names[label] for label in result.logits.argmax(-1)[0].tolist()])  # one label per token")
        else:
            lines.append("print(names[result.logits.argmax(-1)[0].item()])")
        lines.append('print("refinement steps used:", result.halted_at.tolist())')
    lines.append("```")
    return "\n".join(lines)


def _config_table(config: ReasonerConfig) -> str:
    rows = ["| field | value |", "| --- | --- |"]
    rows += [f"| `{name}` | `{value!r}` |" for name, value in sorted(config.to_dict().items())]
    return "\n".join(rows)


def _eval_metrics(config: ReasonerConfig, eval_results: dict[str, Any], dataset_name: str | None, title: str) -> list[EvalResult]:
    metrics = []
    for metric in ("accuracy", "exact_match"):
        value = eval_results.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.append(
                EvalResult(
                    task_type=_TASK_TYPES[config.output],
                    dataset_type=dataset_name or "custom",
                    dataset_name=dataset_name or "custom evaluation data",
                    metric_type=metric,
                    metric_value=float(value),
                )
            )
    return metrics


def _eval_section(eval_results: dict[str, Any]) -> str:
    summary = ", ".join(
        f"{label} {_number(eval_results[key])}"
        for key, label in (("accuracy", "accuracy"), ("exact_match", "exact match"), ("mean_steps", "mean refinement steps"))
        if key in eval_results
    )
    examples = eval_results.get("num_examples")
    where = f"On {examples} evaluation examples" if isinstance(examples, int) else "On the evaluation data"
    text = f"{where}: {summary}." if summary else ""
    per_step = eval_results.get("per_step")
    if isinstance(per_step, list) and per_step:
        rows = ["| refinement step | accuracy | exact match |", "| --- | --- | --- |"]
        for index, entry in enumerate(per_step, start=1):
            if isinstance(entry, dict):
                step = entry.get("step", index)
                rows.append(f"| {step} | {_number(entry.get('accuracy'))} | {_number(entry.get('exact_match'))} |")
            else:
                rows.append(f"| {index} | {_number(entry)} | - |")
        text += "\n\nAfter each refinement step (the answer is refined further at every step):\n\n" + "\n".join(rows)
    return text.strip()


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _files_section() -> str:
    return (
        "## Files\n\n"
        "| file | holds |\n| --- | --- |\n"
        f"| `{CONFIG_NAME}` | the reasoner config, the base model id and revision, the library and format versions |\n"
        f"| `{WEIGHTS_NAME}` | the reasoner, input projection, answer slots and output head (never the base model) |\n"
        f"| `{LORA_DIR}/` | the base model's LoRA adapter in PEFT's format, when LoRA was trained |\n"
        f"| `{EVAL_RESULTS_NAME}` | evaluation metrics, when the model was evaluated |"
    )
