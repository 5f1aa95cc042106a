"""The saved adapter's folder: its fixed names, writing it atomically, reading and checking it.

    reasoner_config.json   the ReasonerConfig + `library_version` + `format_version` (sorted keys, indent 2)
    reasoner.safetensors   the reasoner, input projection, answer slots and output head; never the backbone
    lora/                  the backbone's LoRA adapter in PEFT's own format (only when LoRA was used)
    README.md              the model card (`card.py`)
    eval_results.json      written by the trainer; shown in the card and uploaded with it when present

Weights are read only from safetensors: a pickle can run code while it is unpickled, so a `.bin` /
`.pt` file is refused, never opened, and a `.py` file in the folder is never run (both are named in a
warning). Our files are read only from inside the folder: a link that leads out of it is refused.
Every problem is an error that names the file and the fix.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .. import __version__
from ..adapter_state import backbone_tensors
from ..config import ReasonerConfig, read_json_object

CONFIG_NAME = "reasoner_config.json"
WEIGHTS_NAME = "reasoner.safetensors"
MODEL_CARD_NAME = "README.md"
LORA_DIR = "lora"
EVAL_RESULTS_NAME = "eval_results.json"
FORMAT_VERSION = 1  # bump when the folder layout or the meaning of a saved field changes

# Everything that belongs to a saved reasoner: what is downloaded, uploaded, and replaced on save.
HUB_FILES: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, EVAL_RESULTS_NAME, f"{LORA_DIR}/*")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
CODE_SUFFIXES = (".py",)  # never imported from an adapter folder: base-model code runs only via trust_remote_code
_LORA_CONFIG, _LORA_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # PEFT's own names
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


def config_to_json(config: ReasonerConfig) -> str:
    """The text of `reasoner_config.json`: the config's fields, the library and format versions."""
    values = {**config.to_dict(), "library_version": __version__, "format_version": FORMAT_VERSION}
    return json.dumps(values, indent=2, sort_keys=True) + "\n"


def weights_metadata() -> dict[str, str]:
    return {"format": "pt", "library": "latentreason", "library_version": __version__, "format_version": str(FORMAT_VERSION)}


def usual_permissions(path: Path) -> None:
    """Give a file the mode a plain `open(path, "w")` would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def move_into_place(staging: Path, target: Path) -> None:
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
    values = read_json_object(path, "with the reasoner config", "the reasoner config is corrupt. Save the reasoner again.")
    library_version = values.pop("library_version", "unknown")
    format_version = values.pop("format_version", FORMAT_VERSION)
    if not isinstance(format_version, int) or format_version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {format_version!r}, but this latentreason ({__version__}) reads format "
            f"{FORMAT_VERSION} and older. It was written by latentreason {library_version}: upgrade latentreason "
            "(pip install -U latentreason)."
        )
    unknown = ReasonerConfig.unknown_keys(values)
    if unknown:
        raise ValueError(
            f"{path} has unknown keys {unknown} (written by latentreason {library_version}, this is {__version__}). "
            "If the file comes from a newer latentreason, upgrade; if you edited it by hand, remove those keys. "
            f"Known keys: {ReasonerConfig.known_keys()}."
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
        pickles = files_ending_in(folder, PICKLE_SUFFIXES)
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
    return read_json_object(path, "(accuracy, exact_match, per_step, mean_steps)", "it only feeds the model card: fix it or delete it.")


def lora_folder(folder: str | os.PathLike) -> Path | None:
    """The folder's `lora/` adapter when there is one (checked: PEFT config + safetensors weights), else None."""
    lora = Path(folder) / LORA_DIR
    if not lora.is_dir():
        return None
    if not (lora / _LORA_CONFIG).is_file():
        raise FileNotFoundError(f"{lora / _LORA_CONFIG} not found: the LoRA adapter folder is incomplete. Save the reasoner again.")
    if not (lora / _LORA_WEIGHTS).is_file():
        pickles = files_ending_in(lora, PICKLE_SUFFIXES)
        reason = f"it holds only {pickles}, pickle files that latentreason never opens" if pickles else "it is missing"
        raise ValueError(f"{lora / _LORA_WEIGHTS}: {reason}. LoRA weights are read only from safetensors; save the reasoner again.")
    return lora


def files_ending_in(folder: Path, suffixes: tuple[str, ...]) -> list[str]:
    """The names of the files directly in `folder` whose suffix is one of `suffixes` (sorted; [] if no folder)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix.lower() in suffixes)


def check_links_stay_inside(folder: str | os.PathLike) -> None:
    """Refuse a file of ours that is a link leading out of the folder (`reasoner.safetensors -> /etc/...`).

    Links inside the folder are fine, and so are those of a Hub cache snapshot into its repo's `blobs/`,
    where huggingface_hub keeps the files that `snapshots/<commit>/` links to.
    """
    folder, real = Path(folder), Path(os.path.realpath(folder))
    allowed = [real] + ([real.parent.parent / "blobs"] if real.parent.name == "snapshots" else [])
    for name in (CONFIG_NAME, WEIGHTS_NAME, MODEL_CARD_NAME, EVAL_RESULTS_NAME, LORA_DIR):
        _refuse_outside_link(folder / name, folder, allowed)
    if (folder / LORA_DIR).is_dir():  # only listed once it is known to be inside
        for path in sorted((folder / LORA_DIR).iterdir()):
            _refuse_outside_link(path, folder, allowed)


def _refuse_outside_link(path: Path, folder: Path, allowed: list[Path]) -> None:
    if not path.is_symlink():
        return
    target = Path(os.path.realpath(path))
    if not any(target.is_relative_to(root) for root in allowed):
        raise ValueError(
            f"{path} is a link to {target}, outside the folder {folder}: latentreason reads a saved reasoner's files "
            f"only from inside its folder. If you trust {target}, put a copy in place of the link "
            f"(cp --remove-destination {target} {path}); otherwise delete the folder."
        )


def warn_about_ignored_files(folder: Path) -> None:
    """Name the pickle and Python files in the folder: never unpickled, never run, so a user knows they were not used."""
    ignored = files_ending_in(folder, PICKLE_SUFFIXES + CODE_SUFFIXES)
    ignored += [f"{LORA_DIR}/{name}" for name in files_ending_in(folder / LORA_DIR, PICKLE_SUFFIXES + CODE_SUFFIXES)]
    if ignored:
        warnings.warn(
            f"{folder} holds {ignored}, which latentreason ignores: it reads weights only from {WEIGHTS_NAME} (and "
            f"{LORA_DIR}/{_LORA_WEIGHTS}), never unpickles pickle files and never runs Python files from a reasoner's "
            "folder. Delete them if you did not put them there.",
            stacklevel=4,  # the caller of from_pretrained / push_folder
        )


def read_folder(folder: str | os.PathLike) -> tuple[ReasonerConfig, dict[str, torch.Tensor], Path | None]:
    """A saved reasoner's config, weights and LoRA folder (or None), read only from inside `folder`.

    Links that lead out of the folder are refused (`check_links_stay_inside`), then `read_config`,
    `read_weights` and `lora_folder` check each file; pickle and Python files are named in a warning.
    """
    folder = Path(folder)
    check_links_stay_inside(folder)
    config = read_config(folder / CONFIG_NAME)
    weights = read_weights(folder)
    lora = lora_folder(folder)
    warn_about_ignored_files(folder)
    return config, weights, lora


def validate_folder(folder: str | os.PathLike) -> ReasonerConfig:
    """Check that a folder holds a loadable reasoner, without loading its base model; return its config.

    Reads the folder as `read_folder` does (links, the config with all checks of `read_config`, every
    tensor of the weights: a truncated file fails here, the LoRA folder when there is one), then checks
    that the weights fit the config: no backbone tensors, and the input projection maps the backbone's
    hidden size to the reasoner's.
    """
    folder = Path(folder)
    config, weights, _ = read_folder(folder)
    source = folder / WEIGHTS_NAME
    leaked = sorted(backbone_tensors(weights))
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
