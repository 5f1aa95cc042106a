"""Text in, text out: the reasoner hands its answer back to the frozen causal language model.

Two output paths, registered under the names used in `ReasonerConfig.output`:

    lm_head (one answer token per slot, non-autoregressive: fast, for short answers)

        prompt tokens + K answer slots -> reasoner -> answer latent of slot k      (B, K, d)
            -> Linear(d -> H) -> the LM's own final norm -> the LM's own lm_head   (B, K, vocab)
        slot k predicts answer token k; an end token closes answers shorter than K.

    latent_prefix (latent thoughts: the LM writes the answer)

        prompt tokens + K answer slots -> reasoner -> K thoughts                    (B, K, d)
            -> Linear(d -> E), at the scale of the LM's input embeddings            (B, K, E)
        frozen LM reads  [ prompt embeddings | K thoughts | answer embeddings ]
        and is trained, through its activations only, to predict the answer tokens (teacher forcing).
        `generate` computes the thoughts once and calls the LM's own `generate(inputs_embeds=...)`.

What is notable:
- The frozen LM is held, not owned: the heads keep the backbone in a plain tuple, so its weights are
  never registered twice, never appear in `adapter_state_dict()` and never reach the optimizer.
  Gradients still flow through its activations into the projection and the reasoner.
- The LM's final norm is applied to the projected slot in `lm_head`, whatever `backbone_layer` is:
  HF already normed `hidden_states[-1]`, but that is the *input* side; the projected vector is new,
  and the norm maps it onto the scale and per-channel gain that `lm_head` was trained to read.
- In `latent_prefix` every row of the LM's input is laid out left-padded, with position ids counted
  over real tokens only, so a prompt gets the same positions alone or in a padded batch. The
  backbone (a causal LM) reads prompts right-padded for the same reason (see `move_padding`).
- Prompts are never truncated: a prompt longer than `max_length` or than the LM's context raises.

Data for these paths: `latentreason.text_pairs.TextPairEncoder`.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from accelerate.utils import align_module_device
from torch import nn
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

from ..backbone import unwrap_peft
from ..config import ReasonerConfig
from ..losses import IGNORE_INDEX
from .base import PerTokenHead, check_label_range, register_output

TextOutput = Literal["lm_head", "latent_prefix"]
NON_LM_OUTPUTS = ("token_classification", "sequence_classification")

# Where HF keeps the final norm on the bare model of a causal LM (Llama/Qwen/Mistral/Gemma: `norm`;
# GPT-2/Falcon: `ln_f`; Phi: `final_layernorm`; GPT-NeoX: `final_layer_norm`; OPT: `decoder.final_layer_norm`).
FINAL_NORM_NAMES = ("norm", "final_layernorm", "final_layer_norm", "ln_f", "norm_f", "final_norm", "decoder.final_layer_norm")


# --- the frozen LM inside a backbone ------------------------------------------------------------


def causal_lm(backbone: nn.Module) -> PreTrainedModel:
    """The causal LM a `FrozenBackbone` wraps; a peft (LoRA) wrapper is looked through, its LoRA layers stay in place."""
    return unwrap_peft(backbone.model)


def check_causal_lm(backbone: nn.Module, output: str) -> None:
    """Raise a clear error unless the backbone is a decoder-only causal LM with its LM head."""
    model = causal_lm(backbone)
    config = model.config
    hint = ""
    if getattr(config, "is_encoder_decoder", False):
        kind = "an encoder-decoder model (its encoder is read, and it has no decoder-only LM to decode with)"
    elif config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False):
        kind = "an encoder-only model (bidirectional, with no causal LM head)"
    elif model.get_output_embeddings() is None or not model.can_generate():
        kind = "loaded without its language-model head"
        hint = " If it is a decoder-only LM, load it with AutoModelForCausalLM (attach_reasoner does so when given a name or path)."
    else:
        return
    raise ValueError(
        f"output={output!r} reads answers through a decoder-only causal LM, but {type(model).__name__} "
        f"({config.model_type}) is {kind}. Supported outputs for this model: "
        f"{', '.join(repr(name) for name in NON_LM_OUTPUTS)}.{hint}"
    )


def final_norm(lm: PreTrainedModel) -> nn.Module:
    """The LM's final norm (the module between its last block and `lm_head`); Identity if it has none."""
    base = lm.base_model
    for name in FINAL_NORM_NAMES:
        module: Any = base
        for part in name.split("."):
            module = getattr(module, part, AttributeError)
            if module is AttributeError:
                break
        else:
            if module is None:  # e.g. OPT-350m (post-norm): there is no final norm
                return nn.Identity()
            if isinstance(module, nn.Module):
                return module
    raise ValueError(
        f"Could not find the final norm of {type(lm).__name__} ({lm.config.model_type}); looked for "
        f"{', '.join(FINAL_NORM_NAMES)} on {type(base).__name__}. Add its attribute name to "
        "latentreason.heads.lm.FINAL_NORM_NAMES."
    )


def end_token_id(lm: PreTrainedModel, given: int | list[int] | None = None) -> int:
    """The end-of-answer token: `given`, else the LM's generation config eos (the first, if several)."""
    eos = given if given is not None else lm.generation_config.eos_token_id
    if eos is None:
        eos = lm.config.eos_token_id
    if isinstance(eos, (list, tuple)):
        eos = eos[0] if eos else None
    if eos is None:
        raise ValueError(f"{lm.config.model_type} has no eos_token_id: pass eos_token_id= (the end-of-answer token) to generate.")
    return int(eos)


def _pad_token_id(lm: PreTrainedModel, eos: int) -> int:
    pad = lm.generation_config.pad_token_id
    if pad is None:
        pad = lm.config.pad_token_id
    return int(pad) if pad is not None else eos


def move_padding(input_ids: torch.Tensor, attention_mask: torch.Tensor, side: Literal["left", "right"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Move every row's padding to one side, keeping the order of the real tokens.

    A causal LM reads right-padded rows as if they were alone (pads come after every real token);
    the LM's `generate` wants them left-padded (new tokens follow the prompt directly).

    Example:
        >>> ids, mask = move_padding(torch.tensor([[0, 5, 6]]), torch.tensor([[0, 1, 1]]), "right")
        >>> ids.tolist(), mask.tolist()
        ([[5, 6, 0]], [[1, 1, 0]])
    """
    real = attention_mask.bool()
    key = (~real if side == "right" else real).long()  # stable sort: real tokens keep their order
    order = torch.sort(key, dim=1, stable=True).indices
    return input_ids.gather(1, order), attention_mask.gather(1, order)


def _check_token_labels(labels: torch.Tensor, batch: int, vocab_size: int, what: str) -> None:
    if labels.dim() != 2 or labels.shape[0] != batch:
        raise ValueError(
            f"{what} labels must have shape (batch, answer_length) with batch={batch}: the answer's token ids, "
            f"{IGNORE_INDEX} past its end; got {tuple(labels.shape)}. Build them with TextPairEncoder."
        )
    check_label_range(labels, vocab_size, f"{what} labels must be token ids", "Were they made with the tokenizer of this LM?")


# --- output path 1: answer slots read through the LM's own head -------------------------------------


@register_output("lm_head")
class LMHeadOutput(PerTokenHead):
    """Each answer slot predicts one answer token through the frozen LM's final norm and `lm_head`.

    Labels: (B, K) token ids of the answer followed by the end token, -100 after it.
    Logits: (B, K, vocab). `exact`: every answer token (and the end token) right.
    """

    def __init__(self, config: ReasonerConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            raise ValueError(f"output={config.output!r} needs the backbone (the frozen LM whose head it reads).")
        check_causal_lm(backbone, config.output)
        self._frozen = (backbone,)  # held, not registered: the LM is never part of this head's weights
        lm = causal_lm(backbone)
        final_norm(lm)  # fail now, not at the first forward, if the norm can't be found
        vocab_size, lm_width = lm.get_output_embeddings().weight.shape
        self.vocab_size = int(vocab_size)
        self.proj = nn.Linear(config.hidden_size, int(lm_width), bias=False)

    @property
    def lm(self) -> PreTrainedModel:
        return causal_lm(self._frozen[0])

    def forward(self, answer: torch.Tensor, mask: torch.Tensor, num_inputs: int) -> torch.Tensor:
        slots = answer[:, num_inputs : num_inputs + self.config.answer_slots]  # (B, K, d)
        lm = self.lm
        hidden = self.proj(slots).to(lm.dtype)  # (B, K, H)
        logits = lm.get_output_embeddings()(final_norm(lm)(hidden)).float()  # (B, K, vocab)
        softcap = getattr(lm.config, "final_logit_softcapping", None)  # Gemma 2 caps its logits; so do we
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def check_labels(self, labels: torch.Tensor, input_ids_shape: tuple[int, ...]) -> None:
        _check_token_labels(labels, input_ids_shape[0], self.vocab_size, "lm_head")
        if labels.shape[1] != self.config.answer_slots:
            raise ValueError(
                f"lm_head labels need one token per answer slot: shape (batch, {self.config.answer_slots}), got "
                f"{tuple(labels.shape)}. Pad with {IGNORE_INDEX} after the end token (TextPairEncoder does), or change "
                "num_answer_slots."
            )

    @torch.no_grad()
    def generate(
        self,
        answer: torch.Tensor,
        mask: torch.Tensor,
        num_inputs: int,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
        **unused: Any,
    ) -> torch.Tensor:
        """The argmax token of each slot, up to and including the first end token; pad after it. (B, K)."""
        if unused:
            raise ValueError(
                f"output='lm_head' predicts all answer tokens at once (argmax per slot); it takes no generation "
                f"options {sorted(unused)}. Use output='latent_prefix' for sampling and max_new_tokens."
            )
        eos = end_token_id(self.lm, eos_token_id)
        pad = pad_token_id if pad_token_id is not None else _pad_token_id(self.lm, eos)
        tokens = self(answer, mask, num_inputs).argmax(-1)  # (B, K)
        ended_before = (tokens == eos).long().cumsum(dim=1) - (tokens == eos).long() > 0
        return tokens.masked_fill(ended_before, pad)


# --- output path 2: latent thoughts the LM decodes ---------------------------------------------------


@register_output("latent_prefix")
class LatentPrefixOutput(PerTokenHead):
    """K thoughts in the LM's input-embedding space, between the prompt and the answer; the frozen LM decodes.

    Labels: (B, A) answer token ids followed by the end token, -100 after it.
    Logits: (B, A, vocab) with teacher forcing (position t predicts answer token t); without labels,
    (B, 1, vocab): the first answer token. `exact`: every teacher-forced argmax right, which is
    exactly "greedy decoding writes the answer and stops".
    """

    reads_prompt = True

    def __init__(self, config: ReasonerConfig, backbone: nn.Module | None = None) -> None:
        super().__init__(config)
        if backbone is None:
            raise ValueError(f"output={config.output!r} needs the backbone (the frozen LM that decodes).")
        check_causal_lm(backbone, config.output)
        self._frozen = (backbone,)  # held, not registered: the LM is never part of this head's weights
        lm = causal_lm(backbone)
        embeddings = lm.get_input_embeddings()
        self.vocab_size = int(lm.get_output_embeddings().weight.shape[0])
        self.proj = nn.Linear(config.hidden_size, embeddings.embedding_dim, bias=False)
        # The reasoner's latents have unit RMS; the LM's input embeddings have their own scale: match it,
        # so thoughts start as plausible inputs. Gemma's embedding module multiplies its output by
        # `embed_scale` (sqrt(hidden size)); thoughts enter as inputs_embeds, past that module, so they
        # take the factor here. Recomputed from the LM, so never saved.
        nn.init.normal_(self.proj.weight, std=config.hidden_size**-0.5)
        scale = float(getattr(embeddings, "embed_scale", 1.0))
        with align_module_device(embeddings):  # an offloaded LM (device_map) keeps this weight on disk until asked
            rms = embeddings.weight.detach().float().pow(2).mean().sqrt()
        self.register_buffer("embedding_rms", rms * scale, persistent=False)

    @property
    def lm(self) -> PreTrainedModel:
        return causal_lm(self._frozen[0])

    @property
    def max_positions(self) -> int | None:
        return self._frozen[0].max_positions

    def thoughts(self, answer: torch.Tensor, num_inputs: int) -> torch.Tensor:
        """The K answer-slot latents projected into the LM's input-embedding space: (B, K, E)."""
        slots = answer[:, num_inputs : num_inputs + self.config.answer_slots]  # (B, K, d)
        return self.proj(slots) * self.embedding_rms

    def prefix(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, thoughts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[left-padded prompt embeddings | thoughts] (B, L + K, E) and its mask: what the LM continues."""
        input_ids, attention_mask = move_padding(input_ids, attention_mask, "left")
        lm = self.lm
        prompt = lm.get_input_embeddings()(input_ids)  # (B, L, E)
        embeds = torch.cat([prompt, thoughts.to(prompt.dtype)], dim=1)
        mask = torch.cat([attention_mask.long(), attention_mask.new_ones(thoughts.shape[:2]).long()], dim=1)
        return embeds, mask

    def check_context(self, length: int, what: str) -> None:
        limit = self.max_positions
        if limit is not None and length > limit:
            raise ValueError(
                f"{what} is {length} positions long, more than the LM's context of {limit}: shorten the prompt or the "
                "answer, or use fewer answer slots. Nothing is truncated silently."
            )

    def forward(
        self,
        answer: torch.Tensor,
        mask: torch.Tensor,
        num_inputs: int,
        *,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if input_ids is None:
            raise ValueError("output='latent_prefix' runs the frozen LM over the prompt: pass input_ids (also when passing cached features).")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        embeds, lm_mask = self.prefix(input_ids, attention_mask, self.thoughts(answer, num_inputs))
        keep = 1
        if labels is not None:  # teacher forcing: append the answer, right-padded after each row's end
            answer_mask = (labels != IGNORE_INDEX).long()
            answer_embeds = self.lm.get_input_embeddings()(labels.clamp(min=0))  # -100 -> any id; masked out
            embeds = torch.cat([embeds, answer_embeds], dim=1)
            lm_mask = torch.cat([lm_mask, answer_mask], dim=1)
            keep = labels.shape[1] + 1
        self.check_context(embeds.shape[1], "The prompt + thoughts + answer")
        positions = (lm_mask.cumsum(dim=1) - 1).clamp(min=0)  # count real tokens only: padding never shifts a row
        outputs = self.lm(inputs_embeds=embeds, attention_mask=lm_mask, position_ids=positions, logits_to_keep=keep, use_cache=False)
        logits = outputs.logits.float()  # (B, keep, vocab): the logits at position t predict token t + 1
        return logits if labels is None else logits[:, :-1]

    def check_labels(self, labels: torch.Tensor, input_ids_shape: tuple[int, ...]) -> None:
        _check_token_labels(labels, input_ids_shape[0], self.vocab_size, "latent_prefix")

    @torch.no_grad()
    def generate(
        self,
        answer: torch.Tensor,
        mask: torch.Tensor,
        num_inputs: int,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """The LM's own `generate` after [prompt | thoughts]: only the new tokens, (B, new), as transformers returns them."""
        lm = self.lm
        embeds, lm_mask = self.prefix(input_ids, attention_mask, self.thoughts(answer, num_inputs))
        max_new_tokens = generate_kwargs.get("max_new_tokens")
        if max_new_tokens is None and generate_kwargs.get("max_length") is None:
            max_new_tokens = lm.generation_config.max_new_tokens or 20
            generate_kwargs["max_new_tokens"] = max_new_tokens
        if max_new_tokens is not None:
            self.check_context(embeds.shape[1] + max_new_tokens, "The prompt + thoughts + max_new_tokens")
        if generate_kwargs.get("pad_token_id") is None:
            generate_kwargs["pad_token_id"] = _pad_token_id(lm, end_token_id(lm, generate_kwargs.get("eos_token_id")))
        return lm.generate(inputs_embeds=embeds, attention_mask=lm_mask, **generate_kwargs)
