"""Shared fixtures: tiny configs, tiny backbones (built once per session) and a padded batch.

Everything runs offline on a CPU: the Hub is switched off before transformers is imported, and
torch uses two threads. The tensors here are tiny, so on a busy shared machine one thread is much
faster (no waiting for a second core): `LATENTREASON_TEST_THREADS=1 pytest ...`.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import functools  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModel, PreTrainedModel  # noqa: E402

from latentreason import (
    ReasonerConfig,  # noqa: E402
    testing,  # noqa: E402
)
from latentreason.testing import VOCAB, tiny_backbone  # noqa: E402

torch.set_num_threads(int(os.environ.get("LATENTREASON_TEST_THREADS", "2")))

# The smallest reasoner that still exercises everything: 2 heads of width 16, n=2, T=2.
TINY_REASONER = dict(hidden_size=32, num_heads=2, num_layers=2, expansion=2.0, latent_steps=2, cycles=2, max_supervision_steps=3)


def reasoner_config(**changes: Any) -> ReasonerConfig:
    """A tiny `ReasonerConfig` (token classification, 5 labels) with some fields changed."""
    values: dict[str, Any] = {**TINY_REASONER, "num_labels": 5, **changes}
    return ReasonerConfig(**values)


@functools.cache
def _cached_backbone(arch: str, causal_lm: bool) -> PreTrainedModel:
    return tiny_backbone(arch, causal_lm=causal_lm)


def shared_backbone(arch: str, causal_lm: bool = False) -> PreTrainedModel:
    """A tiny backbone built once per session. Attaching freezes it; no test may change its weights."""
    return _cached_backbone(arch, causal_lm)


def padded_batch(batch: int = 3, length: int = 7, lengths: tuple[int, ...] | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token ids with right padding: row i has `lengths[i]` real tokens (default: the last row is padded).

    Ids avoid the special ids 0-4 so no architecture treats a real token as padding or a separator.
    """
    generator = torch.Generator().manual_seed(seed)
    lengths = lengths or (length,) * (batch - 1) + (length - 3,)
    input_ids = torch.randint(5, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for row, real in enumerate(lengths):
        attention_mask[row, :real] = 1
    input_ids = input_ids.masked_fill(attention_mask == 0, 0)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def token_labels(batch: dict[str, torch.Tensor], num_labels: int = 5, seed: int = 1) -> torch.Tensor:
    """Random per-token labels, -100 on padding."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_labels, batch["input_ids"].shape, generator=generator)
    return labels.masked_fill(batch["attention_mask"] == 0, -100)


@pytest.fixture
def tiny_config() -> ReasonerConfig:
    return reasoner_config()


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return padded_batch()


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tests on one torch thread: tiny models run fastest so (and the machine may be shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_base(path: str) -> str:
    """A tiny Llama whose vocabulary covers the tiny tokenizer, saved with it (loads by folder)."""
    tokenizer = testing.tiny_tokenizer()
    config = testing.tiny_config("llama")
    config.vocab_size = len(tokenizer)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


TINY_SUDOKU_STEPS = 3  # eval.steps of `tiny_sudoku_run`: the refinement steps its pictures and pages show


@pytest.fixture(scope="session")
def tiny_sudoku_run(tmp_path_factory: pytest.TempPathFactory) -> str:
    """recipes/sudoku_4x4.yaml on a tiny local backbone, few puzzles and 8 optimizer steps: a run folder to read, not to change."""
    from latentreason import cli

    root = tmp_path_factory.mktemp("tiny_sudoku")
    base = testing.save_tiny_backbone("llama", root / "base")
    run_dir = str(root / "run")
    recipe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes", "sudoku_4x4.yaml")
    status = cli.main([
        "train", recipe, f"model.base={base}", f"training.output_dir={run_dir}", f"training.cache_dir={root / 'cache'}",
        "data.task_options.num_train=32", "data.task_options.num_test=8",
        "reasoner.hidden_size=32", "reasoner.max_supervision_steps=3", "training.supervision_steps=2",
        "training.max_steps=8", f"eval.steps={TINY_SUDOKU_STEPS}", "training.progress_bar=false", "training.report_to=none",
    ])
    assert status == 0
    return run_dir


@pytest.fixture(scope="session")
def tiny_benchmarks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, dict]]:
    """Every benchmark run once at its tiny preset (results folder, results by name), shared by the tests that read them."""
    from benchmarks.__main__ import BENCHMARKS, run_benchmarks

    results_dir = tmp_path_factory.mktemp("results")
    return results_dir, run_benchmarks(list(BENCHMARKS), "tiny", results_dir)
