"""The LM output paths (`lm_head`, `latent_prefix`): training through the frozen LM, generation, text pairs, errors."""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from latentreason import ReasonerConfig, attach_reasoner
from latentreason.heads.lm import causal_lm, final_norm, move_padding
from latentreason.losses import IGNORE_INDEX
from latentreason.testing import DECODER_ARCHITECTURES, save_tiny_backbone, tiny_backbone, tiny_config
from latentreason.text_pairs import TextPairEncoder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUTS = ("lm_head", "latent_prefix")
FAST_ARCHITECTURES = ("llama", "gpt2", "phi3")  # rotary (Llama, Phi-3) and learned absolute positions (GPT-2)
# Prompts of different lengths (so a batch is padded) and answers of one to three words.
PAIRS = [
    {"input": "one plus two", "output": "three"},
    {"input": "four plus four plus one", "output": "nine is nine"},
    {"input": "sort two one", "output": "one two"},
]
STEPS = 1  # supervision steps per batch in the overfit runs, and refinement steps in generate


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose ids fit the tiny models' vocabulary of 128."""
    words = "zero one two three four five six seven eight nine ten plus minus sort is".split()
    vocab = {word: index for index, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def responsive_lm(arch: str, seed: int = 0):
    """A tiny random causal LM initialised at std 0.1 instead of 0.02.

    At std 0.02 a 64-wide random LM is nearly uniform over its vocabulary whatever it reads (logits
    within about +-1), so nothing steers it; a trained LM is sharp. The larger init makes the tiny LM
    respond to its input as a trained one does, so that overfitting through it takes tens of steps.
    """
    config = tiny_config(arch)
    for name in ("initializer_range", "init_std"):
        if hasattr(config, name):
            setattr(config, name, 0.1)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


# lm_head: one slot per answer token (the longest answer is 3 words + the end token). latent_prefix: 16
# thoughts. Measured on every tiny decoder, 2 seeds: with 4 thoughts Gemma and GPT-NeoX plateau (loss ~1.7
# after 1500 steps, answers wrong); with 8 every one overfits within 360 steps, with 16 within 180.
SLOTS = {"lm_head": 4, "latent_prefix": 16}


def make_model(arch: str, output: str, seed: int = 0, **overrides):
    lm = responsive_lm(arch)
    torch.manual_seed(seed)
    settings = dict(hidden_size=32, num_heads=2, num_layers=1, latent_steps=1, cycles=1, max_supervision_steps=STEPS,
                    output=output, num_answer_slots=SLOTS[output], halting=False)
    return attach_reasoner(lm, ReasonerConfig(**{**settings, **overrides}))


def generate_kwargs(output: str) -> dict:
    return {"steps": STEPS, **({"max_new_tokens": 4} if output == "latent_prefix" else {})}


def overfit(model, batch: dict[str, torch.Tensor], max_steps: int, lr: float) -> list[float]:
    """AdamW on one batch until every prediction is exactly right (stopping before that step's update); the losses."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(max_steps):
        out = model(**batch)
        losses.append(out.loss.item())
        if bool(out.exact.all()):
            break
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return losses


@functools.cache
def trained(arch: str, output: str):
    """A tiny model overfit on PAIRS, with its losses and the LM's weights from before training.

    Training stops at the first step whose prediction is exactly right, before that step's update.
    """
    model = make_model(arch, output)
    lm_before = {name: tensor.clone() for name, tensor in causal_lm(model.backbone).state_dict().items()}
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    batch = encoder(PAIRS)
    losses = overfit(model, batch, max_steps=600, lr=1e-2)
    model.eval()
    return model, encoder, losses, lm_before


def _params(archs):
    return [(arch, output) for arch in archs for output in OUTPUTS]


ALL = [pytest.param(arch, output, marks=pytest.mark.slow) for arch, output in _params(DECODER_ARCHITECTURES) if arch not in FAST_ARCHITECTURES]
DEFAULT = _params(FAST_ARCHITECTURES)


@pytest.mark.parametrize("arch,output", DEFAULT + ALL)
def test_training_through_the_frozen_lm(arch, output):
    model, encoder, losses, lm_before = trained(arch, output)
    # the loss falls ...
    assert losses[-1] < 0.6 * losses[0], losses
    # ... while the LM's weights stay bit-identical
    lm_after = causal_lm(model.backbone).state_dict()
    assert lm_before.keys() == lm_after.keys()
    assert all(torch.equal(lm_before[name], lm_after[name]) for name in lm_before)


@pytest.mark.parametrize("arch,output", DEFAULT + ALL)
def test_generate_writes_the_trained_answers(arch, output):
    model, encoder, _, _ = trained(arch, output)
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    assert encoder.decode(model.generate(**prompts, **generate_kwargs(output))) == [pair["output"] for pair in PAIRS]


@pytest.mark.parametrize("arch,output", DEFAULT + ALL)
def test_batched_left_padded_generation_equals_one_by_one(arch, output):
    model, encoder, _, _ = trained(arch, output)
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    assert prompts["attention_mask"][:, 0].tolist() == [0, 1, 0]  # left padding, and it's really there
    batched = model.generate(**prompts, **generate_kwargs(output))
    for row, pair in enumerate(PAIRS):
        alone = model.generate(**encoder.prompts([pair["input"]]), **generate_kwargs(output))[0]
        width = min(len(alone), batched.shape[1])
        assert batched[row, :width].tolist() == alone[:width].tolist()
        assert encoder.decode(alone[None]) == encoder.decode(batched[row : row + 1])


@pytest.mark.parametrize("arch", DECODER_ARCHITECTURES)
def test_teacher_forcing_agrees_with_generation(arch):
    """Training (teacher-forced logits) and generate (the LM's own decoding with a KV cache, left padding)
    see the same thing: fed back its own greedy tokens, the training forward predicts exactly them."""
    model = make_model(arch, "latent_prefix").eval()
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    tokens = model.generate(**prompts, max_new_tokens=5, min_new_tokens=5)  # no end token: 5 tokens per row
    with torch.no_grad():
        teacher_forced = model(**prompts, labels=tokens).logits
    assert torch.equal(teacher_forced.argmax(-1), tokens)


@pytest.mark.parametrize("output", OUTPUTS)
def test_a_padded_batch_gives_each_example_its_own_logits(output):
    model = make_model("llama", output)
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    with torch.no_grad():
        batched = model(**encoder(PAIRS)).logits
        for row in range(len(PAIRS)):
            alone = model(**encoder(PAIRS[row : row + 1])).logits[0]
            torch.testing.assert_close(batched[row, : alone.shape[0]], alone, atol=1e-4, rtol=1e-4)


def test_move_padding_keeps_the_order_of_real_tokens():
    encoder = TextPairEncoder(word_tokenizer(), "latent_prefix")
    right, left = encoder(PAIRS, padding_side="right"), encoder(PAIRS, padding_side="left")
    assert torch.equal(torch.stack(move_padding(left["input_ids"], left["attention_mask"], "right")),
                       torch.stack([right["input_ids"], right["attention_mask"]]))
    assert torch.equal(torch.stack(move_padding(right["input_ids"], right["attention_mask"], "left")),
                       torch.stack([left["input_ids"], left["attention_mask"]]))


@pytest.mark.parametrize("output", OUTPUTS)
def test_frozen_lm_is_held_not_owned(output):
    model = make_model("llama", output)
    lm_params = {id(p) for p in causal_lm(model.backbone).parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and not lm_params & {id(p) for p in trainable}
    assert set(model.head.state_dict()) == {"proj.weight"}
    assert all(not name.startswith("backbone.") for name in model.adapter_state_dict())
    # gradients reach the projection and the reasoner through the LM's activations, never its weights
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    model(**encoder(PAIRS)).loss.backward()
    assert model.head.proj.weight.grad.abs().sum() > 0
    assert model.input_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in causal_lm(model.backbone).parameters())


def test_lm_head_reads_the_lms_own_norm_and_head():
    model = make_model("llama", "lm_head")
    lm = causal_lm(model.backbone)
    assert final_norm(lm) is lm.model.norm
    answer = torch.randn(2, 7, 32)
    expected = lm.lm_head(lm.model.norm(model.head.proj(answer[:, 3:7])))
    torch.testing.assert_close(model.head(answer, torch.ones(2, 7), 3), expected)
    # the LM's own head: changing its weights changes the slots' logits
    with torch.no_grad():
        lm.lm_head.weight.mul_(2.0)
    assert not torch.allclose(model.head(answer, torch.ones(2, 7), 3), expected)


@pytest.mark.parametrize("arch", DECODER_ARCHITECTURES)
def test_thoughts_start_at_the_scale_of_the_prompt_embeddings(arch):
    """Thoughts enter the LM beside the prompt's embeddings, as the embedding module outputs them (Gemma's
    multiplies by sqrt(hidden size)): at init both have about the same RMS, whatever the architecture."""
    model = make_model(arch, "latent_prefix")
    head = model.head
    ids = torch.arange(5, 45).view(2, 20)
    with torch.no_grad():
        embeds, _ = head.prefix(ids, torch.ones_like(ids), head.thoughts(torch.randn(2, 20 + 4, 32), 20))
    rms = embeds.pow(2).mean(-1).sqrt()  # (B, L + K): per position
    ratio = float(rms[:, 20:].mean() / rms[:, :20].mean())
    assert 0.5 < ratio < 2.0, f"thoughts are {ratio:.2f} times the scale of the prompt embeddings"


@pytest.mark.parametrize("arch", DECODER_ARCHITECTURES)
def test_final_norm_found_for_every_decoder(arch):
    lm = tiny_backbone(arch, causal_lm=True)
    norm = final_norm(lm)
    hidden = torch.randn(1, 3, lm.config.hidden_size)
    with torch.no_grad():
        last = lm(inputs_embeds=hidden, output_hidden_states=True).hidden_states[-1]
    # HF's last hidden state already went through the final norm; at init (unit gain, no bias) a norm is
    # idempotent, so the module found must leave it unchanged, and must change an un-normed vector
    torch.testing.assert_close(norm(last), last, atol=1e-3, rtol=1e-3)
    assert not torch.allclose(norm(3.0 * hidden), 3.0 * hidden, atol=1e-2)


def test_generate_runs_the_refinement_steps_once_per_prompt():
    model = make_model("llama", "lm_head", max_supervision_steps=3)
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    right = encoder([{"input": pair["input"], "output": ""} for pair in PAIRS])
    step_logits = model.refine(right["input_ids"], right["attention_mask"], steps=3).step_logits
    no_end = {"eos_token_id": -1}  # an end token that never comes: keep every slot's token
    assert torch.equal(model.generate(**prompts, steps=1, **no_end), step_logits[0].argmax(-1))
    assert torch.equal(model.generate(**prompts, steps=3, **no_end), step_logits[2].argmax(-1))
    assert torch.equal(model.generate(**prompts, **no_end), step_logits[2].argmax(-1))  # default: max_supervision_steps


def test_greedy_sampling_with_top_k_1_equals_greedy():
    model, encoder, _, _ = trained("llama", "latent_prefix")
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    greedy = model.generate(**prompts, steps=STEPS, max_new_tokens=4)
    torch.manual_seed(0)
    sampled = model.generate(**prompts, steps=STEPS, max_new_tokens=4, do_sample=True, top_k=1)
    assert torch.equal(greedy, sampled)
    torch.manual_seed(0)
    wild = [model.generate(**prompts, steps=STEPS, max_new_tokens=4, do_sample=True, temperature=50.0) for _ in range(3)]
    assert any(not torch.equal(w, greedy) for w in wild)  # sampling really samples


# --- text pairs ------------------------------------------------------------------------------------


def test_text_pair_encoder_round_trip():
    tokenizer = word_tokenizer()
    slots = TextPairEncoder(tokenizer, "lm_head", num_slots=4, max_length=8)
    batch = slots(PAIRS)
    assert batch["labels"].shape == (3, 4)
    assert batch["labels"][0].tolist() == [tokenizer.convert_tokens_to_ids("three"), tokenizer.eos_token_id, IGNORE_INDEX, IGNORE_INDEX]
    assert slots.decode(batch["labels"]) == [pair["output"] for pair in PAIRS]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1] * 5, [1, 1, 1, 0, 0]]  # right padding for training
    prefix = TextPairEncoder(tokenizer, "latent_prefix", num_slots=4, max_length=8)
    labels = prefix(PAIRS)["labels"]
    assert labels.shape == (3, 4)  # as long as the longest answer + end token
    assert prefix.decode(labels) == [pair["output"] for pair in PAIRS]
    prompts = prefix.prompts(["one plus two", "sort two one four"])
    assert prompts["attention_mask"].tolist() == [[0, 1, 1, 1], [1, 1, 1, 1]]  # left padding for generation
    assert "labels" not in prompts


def test_text_pair_encoder_errors():
    tokenizer = word_tokenizer()
    with pytest.raises(ValueError, match="never truncated"):
        TextPairEncoder(tokenizer, "latent_prefix", max_length=3)({"input": "one plus two plus three", "output": "six"} for _ in [0])
    with pytest.raises(ValueError, match="answer slots"):
        TextPairEncoder(tokenizer, "lm_head", num_slots=2)([{"input": "one", "output": "one two three"}])
    with pytest.raises(ValueError, match="non-empty"):
        TextPairEncoder(tokenizer, "lm_head")([{"input": "  ", "output": "one"}])
    with pytest.raises(ValueError, match="'output'"):
        TextPairEncoder(tokenizer, "lm_head")([{"input": "one"}])
    with pytest.raises(ValueError, match="'lm_head' or 'latent_prefix'"):
        TextPairEncoder(tokenizer, "token_classification")
    no_eos = word_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(ValueError, match="no eos token"):
        TextPairEncoder(no_eos, "lm_head")


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "t5"])
@pytest.mark.parametrize("output", OUTPUTS)
def test_encoder_models_are_refused_with_the_outputs_they_support(arch, output, tmp_path):
    config = ReasonerConfig(hidden_size=32, num_heads=2, output=output)
    with pytest.raises(ValueError, match="Supported outputs for this model: 'token_classification', 'sequence_classification'"):
        attach_reasoner(tiny_backbone(arch), config)
    # by path, attach_reasoner loads the causal-LM class: BERT's exists (BertLMHeadModel), T5's does not
    with pytest.raises(ValueError, match="token_classification'.*'sequence_classification"):
        attach_reasoner(save_tiny_backbone(arch, tmp_path / arch), config)


def test_decoder_without_its_lm_head_is_refused():
    with pytest.raises(ValueError, match="AutoModelForCausalLM"):
        attach_reasoner(tiny_backbone("llama"), ReasonerConfig(hidden_size=32, num_heads=2, output="lm_head"))


def test_bad_labels_and_inputs_raise():
    model = make_model("llama", "lm_head")
    ids = torch.tensor([[5, 17, 6]])
    with pytest.raises(ValueError, match=r"one token per answer slot: shape \(batch, 4\)"):
        model(ids, labels=torch.tensor([[7, 2]]))
    with pytest.raises(ValueError, match=r"token ids in \[0, 128\)"):
        model(ids, labels=torch.tensor([[7, 500, 2, -100]]))
    with pytest.raises(ValueError, match="no generation options"):
        model.generate(ids, do_sample=True)
    prefix = make_model("llama", "latent_prefix")
    features = prefix.encode(ids)
    with pytest.raises(ValueError, match="pass input_ids"):
        prefix(features=features, labels=torch.tensor([[7, 2]]))
    with pytest.raises(ValueError, match=r"shape \(batch, answer_length\)"):
        prefix(ids, labels=torch.tensor([7, 2]))


def test_prompt_longer_than_the_context_raises():
    model = make_model("gpt2", "latent_prefix")  # gpt2's tiny config has 256 positions
    ids = torch.full((1, 250), 5)
    with pytest.raises(ValueError, match="more than the LM's context of 256"):
        model(ids, labels=torch.full((1, 4), 7))
    with pytest.raises(ValueError, match=f"max_new_tokens is {250 + SLOTS['latent_prefix'] + 4} "):
        model.generate(ids, max_new_tokens=4)
    with pytest.raises(ValueError, match="longer than the backbone's context"):
        model.generate(torch.full((1, 300), 5), max_new_tokens=4)


def test_generate_is_for_text_outputs_only():
    model = attach_reasoner(tiny_backbone("llama"), ReasonerConfig(hidden_size=32, num_heads=2, num_labels=3))
    with pytest.raises(ValueError, match="predicts labels, not text"):
        model.generate(torch.tensor([[5, 6]]))


# --- the example script and the real model -------------------------------------------------------


def test_example_smoke_mode_runs_end_to_end():
    script = os.path.join(ROOT, "examples", "text_generation.py")
    result = subprocess.run(
        [sys.executable, script, "--smoke"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    table = [line for line in result.stdout.splitlines() if line.startswith("| LM ")]
    names = [line.split("|")[1].strip() for line in table]
    assert names == ["LM alone (2-shot)", "LM + linear head", "LM + reasoner (lm_head)", "LM + reasoner (latent_prefix)"]
    linear, reasoner = (int(line.split("|")[3].replace(",", "")) for line in table[1:3])
    assert abs(linear - reasoner) <= 0.05 * reasoner  # the comparator has the reasoner's size
    assert "the LM's weights are unchanged" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("output", OUTPUTS)
def test_smollm2_both_paths_overfit_and_generate_the_answers(output):
    """On the real SmolLM2-135M both paths learn a few sorted lists and write them back exactly.

    Measured on one thread: latent_prefix (16 thoughts) is exact after 35 steps (66 s), lm_head sooner.
    """
    from transformers import AutoTokenizer

    from latentreason.packaged import smollm2_path

    path = smollm2_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = ReasonerConfig(hidden_size=64, num_heads=2, num_layers=1, latent_steps=1, cycles=1, max_supervision_steps=1,
                            output=output, num_answer_slots=8 if output == "lm_head" else 16, halting=False, backbone_layer=8)
    torch.manual_seed(0)
    model = attach_reasoner(path, config, dtype=torch.float32)
    lm = causal_lm(model.backbone)
    before = {name: tensor.clone() for name, tensor in lm.state_dict().items()}
    encoder = TextPairEncoder.for_model(tokenizer, model)
    pairs = [{"input": "seven two five", "output": "two five seven"}, {"input": "nine one four", "output": "one four nine"},
             {"input": "six three eight", "output": "three six eight"}, {"input": "four zero two", "output": "zero two four"}]
    batch = encoder(pairs)
    losses = overfit(model, batch, max_steps=80, lr=3e-3)
    assert losses[-1] < 0.3 * losses[0], losses
    assert all(torch.equal(before[name], tensor) for name, tensor in lm.state_dict().items())
    model.eval()
    prompts = encoder.prompts([pair["input"] for pair in pairs])
    tokens = model.generate(**prompts, **({"max_new_tokens": 8} if output == "latent_prefix" else {}))
    assert encoder.decode(tokens) == [pair["output"] for pair in pairs]


@pytest.mark.parametrize("output", OUTPUTS)
def test_generate_steps_gives_the_answer_of_generate_after_each_step(output):
    model = make_model("llama", output, max_supervision_steps=3).eval()
    encoder = TextPairEncoder.for_model(word_tokenizer(), model)
    prompts = encoder.prompts([pair["input"] for pair in PAIRS])
    kwargs = {"max_new_tokens": 3} if output == "latent_prefix" else {}
    every = model.generate_steps(**prompts, steps=3, **kwargs)
    assert len(every) == 3
    for k, tokens in enumerate(every, start=1):
        assert torch.equal(tokens, model.generate(**prompts, steps=k, **kwargs))
    assert [t.tolist() for t in model.generate_steps(**prompts, steps=3, every_step=False, **kwargs)] == [every[-1].tolist()]
    # the steps really differ (else this would not tell one from another): the answer latents move
    answers, _ = model.answer_latents(prompts["input_ids"], prompts["attention_mask"], steps=3)
    assert not torch.allclose(answers[0], answers[-1])
