"""Training the LM output paths (lm_head, latent_prefix) from recipes/text_pairs.yaml through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from latentreason import cli
from latentreason.testing import tiny_config
from latentreason.training import load_run

WORDS = "zero one two three four five six seven eight nine ten plus".split()
PAIRS = [{"input": f"{WORDS[a]} plus {WORDS[b]}", "output": WORDS[a + b]} for a in range(4) for b in range(4)]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A tiny llama causal LM with a word-level tokenizer, initialised at std 0.1 so that it responds to
    its input as a trained LM does (see `responsive_lm` in test_text_outputs.py)."""
    path = tmp_path_factory.mktemp("tiny_lm")
    config = tiny_config("llama")
    config.initializer_range = 0.1
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    vocab = {word: index for index, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS), encoding="utf-8")
    return str(path)


def train(base: str, pairs_file: str, run_dir, *overrides: str) -> None:
    settings = [
        f"model.base={base}", f"data.train_file={pairs_file}", f"data.eval_file={pairs_file}", f"training.output_dir={run_dir}",
        "training.max_steps=100", "training.batch_size=16", "training.warmup_steps=0", "training.learning_rate=1e-2",
        "training.supervision_steps=2", "training.ema=false", "training.checkpoint_every=null", "training.use_feature_cache=false",
        "training.progress_bar=false", "training.report_to=none", "training.log_every=1",
        "reasoner.hidden_size=32", "reasoner.num_heads=2", "reasoner.latent_steps=1", "reasoner.cycles=1",
        "reasoner.max_supervision_steps=2", "reasoner.num_answer_slots=4", "reasoner.halting=false",
    ]
    assert cli.main(["train", "recipes/text_pairs.yaml", *settings, *overrides]) == 0


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_text_pairs_recipe_trains_evaluates_and_predicts(output, base, pairs_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(base, pairs_file, run_dir, f"reasoner.output={output}")
    results = json.loads((run_dir / "eval_results.json").read_text())
    assert results["num_examples"] == len(PAIRS)
    assert results["accuracy"] > 0.5  # 16 memorised sums: the loss fell far enough to get most answer tokens right

    run = load_run(str(run_dir))
    assert run.model.config.output == output
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), "one plus two"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1]
    assert isinstance(printed, str) and printed and all(word in WORDS for word in printed.split())
