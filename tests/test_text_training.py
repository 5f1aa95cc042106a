"""Training the LM output paths (lm_head, latent_prefix) from recipes/text_pairs.yaml through the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from latentreason import cli
from latentreason.inference import load_run
from latentreason.model import LatentReasonerModel
from latentreason.pipeline import train_recipe
from latentreason.recipe import load_recipe
from latentreason.testing import tiny_config

WORDS = "zero one two three four five six seven eight nine ten plus".split()
PAIRS = [{"input": f"{WORDS[a]} plus {WORDS[b]}", "output": WORDS[a + b]} for a in range(4) for b in range(4)]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)


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


def settings(base: str, pairs_file: str, run_dir) -> list[str]:
    return [
        f"model.base={base}", f"data.train_file={pairs_file}", f"data.eval_file={pairs_file}", f"training.output_dir={run_dir}",
        "training.max_steps=100", "training.batch_size=16", "training.warmup_steps=0", "training.learning_rate=3e-3",
        "training.supervision_steps=2", "training.ema=false", "training.checkpoint_every=null", "training.use_feature_cache=false",
        "training.progress_bar=false", "training.report_to=none", "training.log_every=1",
        "reasoner.hidden_size=32", "reasoner.num_heads=2", "reasoner.latent_steps=1", "reasoner.cycles=1",
        "reasoner.max_supervision_steps=2", "reasoner.num_answer_slots=4", "reasoner.halting=false",
    ]


def train(base: str, pairs_file: str, run_dir, *overrides: str) -> None:
    assert cli.main(["train", "recipes/text_pairs.yaml", *settings(base, pairs_file, run_dir), *overrides]) == 0


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_text_pairs_recipe_trains_evaluates_and_predicts(output, base, pairs_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(base, pairs_file, run_dir, f"reasoner.output={output}")
    results = json.loads((run_dir / "eval_results.json").read_text())
    assert results["num_examples"] == len(PAIRS)
    # Untrained, about 1 answer token in 10 is right; the 16 sums are learned by heart (teacher-forced for latent_prefix).
    assert results["accuracy"] >= 0.8

    (run_dir / "eval_results.json").unlink()
    assert cli.main(["eval", str(run_dir)]) == 0  # the reloaded run scores as the final evaluation did
    assert json.loads((run_dir / "eval_results.json").read_text())["accuracy"] == pytest.approx(results["accuracy"])

    run = load_run(str(run_dir))
    assert run.model.config.output == output
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), "one plus two"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1
    assert printed[0] == "three" if output == "lm_head" else all(word in WORDS for word in printed[0].split())

    # Per answer token: the sum's one word, then the end token; rows 1 and 6 have a wrong target, so a wrong answer.
    wrong_targets = [{**pair, "output": WORDS[(WORDS.index(pair["output"]) + 1) % 11]} if index in (1, 6) else pair
                     for index, pair in enumerate(PAIRS)]
    (tmp_path / "wrong.jsonl").write_text("".join(json.dumps(pair) + "\n" for pair in wrong_targets), encoding="utf-8")
    assert cli.main(["eval", str(run_dir), "--data", str(tmp_path / "wrong.jsonl"), "--show-wrong", "16"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((run_dir / "eval_results_wrong.json").read_text())
    assert [(row["position"], row["cells"]) for row in results["per_position"]] == [(1, 16), (2, 16)]
    assert sum(row["accuracy"] * row["cells"] for row in results["per_position"]) / 32 == pytest.approx(results["accuracy"])
    assert "accuracy per answer position: 1:" in printed
    examples = results["wrong_examples"]
    assert {1, 6} <= {example["index"] for example in examples} and len(examples) == round(16 * (1 - results["exact_match"]))
    assert all(example["prediction"] != example["target"] == wrong_targets[example["index"]]["output"] for example in examples)
    if output == "lm_head":  # latent_prefix scores (and shows) the teacher-forced answer, not the generated one
        assert cli.main(["predict", str(run_dir), *(example["input"] for example in examples)]) == 0
        assert capsys.readouterr().out.splitlines() == [example["prediction"] for example in examples]


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_predict_max_new_tokens_reaches_generate(output, base, pairs_file, tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "run"
    train(base, pairs_file, run_dir, f"reasoner.output={output}", "training.max_steps=4")
    asked, encoded = [], []
    generate_steps, encode = LatentReasonerModel.generate_steps, LatentReasonerModel.encode

    def spy(self, *args, **kwargs):
        steps = generate_steps(self, *args, **kwargs)
        asked.append((kwargs.get("max_new_tokens"), [tokens.shape[1] for tokens in steps]))
        return steps

    def count(self, *args, **kwargs):
        encoded.append(1)
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(LatentReasonerModel, "generate_steps", spy)
    monkeypatch.setattr(LatentReasonerModel, "encode", count)
    capsys.readouterr()
    assert cli.main(["predict", str(run_dir), "one plus two", "--max-new-tokens", "2"]) == 0
    assert cli.main(["predict", str(run_dir), "one plus two"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and len(printed[0].split()) <= 2  # one word-level token per word
    assert len(asked) == len(encoded) == 2  # one call per predict command; the prompt is read once
    if output == "latent_prefix":  # the LM writes up to the limit; 32 tokens without the flag
        assert [limit for limit, _ in asked] == [2, 32] and asked[0][1][0] <= 2
    else:  # all answer slots at once, after every refinement step; predict keeps the first 2
        run = load_run(run_dir)
        steps = run.recipe.eval.steps or run.model.config.max_supervision_steps
        assert all(limit is None and widths == [4] * steps for limit, widths in asked)
    with pytest.raises(SystemExit) as stopped:  # refused by the parser, before the run loads
        cli.main(["predict", str(run_dir), "one plus two", "--max-new-tokens", "0"])
    assert stopped.value.code == 2
    assert "--max-new-tokens: expected a whole number >= 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("output", ["lm_head", "latent_prefix"])
def test_loss_falls_with_the_feature_cache(output, base, pairs_file, tmp_path):
    overrides = ["training.use_feature_cache=true", f"training.cache_dir={tmp_path / 'cache'}", "training.max_steps=30", f"reasoner.output={output}"]
    recipe = load_recipe("recipes/text_pairs.yaml", settings(base, pairs_file, tmp_path / "run") + overrides)
    losses = [row["train/loss"] for row in train_recipe(recipe).history]
    assert len(losses) == 15  # one logged row per batch (2 supervision steps)
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0]


def test_lora_recipe_trains_the_backbone_and_reloads(base, pairs_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    lora = "model.lora={rank: 2, alpha: 4, target_modules: [q_proj, v_proj]}"
    train(base, pairs_file, run_dir, lora, "training.use_feature_cache=true", "training.max_steps=20", "reasoner.output=lm_head")
    assert "LoRA is on the backbone (model.lora)" in capsys.readouterr().out

    run = load_run(str(run_dir))
    assert (run_dir / "lora").is_dir()
    reloaded = LatentReasonerModel.from_pretrained(str(run_dir), base_model=base)
    lora_weights = {name: p for name, p in reloaded.backbone.named_parameters() if "lora_B" in name}
    assert lora_weights and any(bool(p.abs().sum() > 0) for p in lora_weights.values())  # lora_B starts at zero: it trained
    untouched = AutoModelForCausalLM.from_pretrained(base).state_dict()
    for name, tensor in reloaded.backbone.named_parameters():
        if "lora_" not in name:
            short = name.split("base_model.model.", 1)[-1].replace(".base_layer", "")
            matches = [key for key in untouched if short.endswith(key) or key.endswith(short)]
            assert matches and torch.equal(tensor, untouched[matches[0]]), name
    assert run.model.config.output == "lm_head"
