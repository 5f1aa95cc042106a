"""Text in, text out on a real LM: sort number words with SmolLM2-135M, alone vs with a latent reasoner.

The task: "seven two five one" -> "one two five seven" (4 distinct number words from zero..nine).
  1. The frozen LM alone: few-shot prompted, greedy decoding; exact-match accuracy on held-out lists.
  2. LM + reasoner (output="lm_head"): the reasoner reads the frozen LM's hidden states, and its
     answer slots are read through the LM's own final norm and lm_head, one word per slot. Only the
     reasoner, its projections and the slots train; the LM's features are computed once and reused.
     Accuracy: `model.generate` on the same held-out lists, decoded, compared as strings.

Runs on a CPU. Commands:
    HF_HUB_OFFLINE=1 .venv/bin/python examples/text_generation.py --threads 1  # SmolLM2-135M; on a shared CPU one thread is fastest
    HF_HUB_OFFLINE=1 .venv/bin/python examples/text_generation.py --smoke    # a tiny random LM, < 30 s
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from latentreason import ReasonerConfig, attach_reasoner
from latentreason.text_outputs import TextPairEncoder

WORDS = "zero one two three four five six seven eight nine".split()


def sorting_pairs(count: int, length: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """`count` distinct lists of `length` distinct number words, none in `exclude`, with their sorted form."""
    rng, pairs, seen = random.Random(seed), [], set(exclude)
    while len(pairs) < count:
        words = rng.sample(WORDS, length)
        text = " ".join(words)
        if text not in seen:
            seen.add(text)
            pairs.append({"input": text, "output": " ".join(sorted(words, key=WORDS.index))})
    return pairs


def few_shot_accuracy(lm, tokenizer, shots: list[dict[str, str]], tests: list[dict[str, str]], batch_size: int) -> float:
    """The frozen LM alone: a few solved examples, then the question; greedy decoding up to the line's end."""
    header = "Sort the numbers from smallest to largest.\n" + "".join(f"Input: {s['input']}\nOutput: {s['output']}\n" for s in shots)
    tokenizer.padding_side = "left"
    right = 0
    for start in range(0, len(tests), batch_size):
        chunk = tests[start : start + batch_size]
        inputs = tokenizer([f"{header}Input: {t['input']}\nOutput:" for t in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            new = lm.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)[:, inputs["input_ids"].shape[1] :]
        for test, text in zip(chunk, tokenizer.batch_decode(new, skip_special_tokens=True)):
            right += text.split("\n")[0].strip() == test["output"]
    return right / len(tests)


def reasoner_accuracy(model, encoder: TextPairEncoder, tests: list[dict[str, str]], batch_size: int) -> tuple[float, list[str]]:
    answers = []
    for start in range(0, len(tests), batch_size):
        prompts = encoder.prompts([t["input"] for t in tests[start : start + batch_size]])
        answers += encoder.decode(model.generate(**prompts))
    right = sum(answer == test["output"] for answer, test in zip(answers, tests))
    return right / len(tests), answers


def train(model, encoder: TextPairEncoder, pairs: list[dict[str, str]], args: argparse.Namespace) -> None:
    """Deep supervision on cached LM features: N_sup steps per batch, each with its own loss and update."""
    batches = []
    with torch.no_grad():
        for start in range(0, len(pairs), args.batch_size):
            batch = encoder(pairs[start : start + args.batch_size])
            batch["features"] = model.encode(batch["input_ids"], batch["attention_mask"])  # the LM runs once per example
            batches.append(batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(batches) * args.supervision_steps, pct_start=0.1)
    model.train()
    for epoch in range(args.epochs):
        random.Random(epoch).shuffle(batches)
        exact, seen = 0, 0
        for batch in batches:
            carry = None
            for _ in range(args.supervision_steps):
                out = model(attention_mask=batch["attention_mask"], features=batch["features"], labels=batch["labels"], carry=carry)
                carry = out.carry
                out.loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
            exact += int(out.exact.sum())
            seen += len(out.exact)
        if epoch % max(1, args.epochs // 10) == 0 or epoch == args.epochs - 1:
            print(f"  epoch {epoch + 1:3d}/{args.epochs}: loss {out.loss.item():.3f}, train exact {exact / seen:.2%}", flush=True)
    model.eval()


def load(args: argparse.Namespace):
    if args.smoke:
        from latentreason.testing import tiny_backbone

        lm = tiny_backbone("llama", causal_lm=True)
        return lm, _word_tokenizer()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentreason.testing import smollm2_path

    path = smollm2_path()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _word_tokenizer():
    """Smoke mode: a word-level tokenizer that fits the tiny model's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS, "Sort", "the", "numbers", "from",
                                                       "smallest", "to", "largest", ".", "Input", "Output", ":"])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny random LM and a few steps: checks the script runs (< 30 s)")
    parser.add_argument("--length", type=int, default=4, help="number words per list")
    parser.add_argument("--train", type=int, default=1200, help="training lists")
    parser.add_argument("--test", type=int, default=200, help="held-out lists")
    parser.add_argument("--shots", type=int, default=4, help="solved examples in the LM-alone prompt")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--layer", type=int, default=-1, help="backbone hidden state the reasoner reads")
    parser.add_argument("--supervision-steps", type=int, default=2, help="N_sup, in training and at test time")
    parser.add_argument("--hidden", type=int, default=128, help="reasoner width")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=["baseline", "reasoner"], help="run one half (e.g. the two halves in two processes)")
    args = parser.parse_args()
    if args.smoke:
        args.length, args.train, args.test, args.shots, args.epochs, args.batch_size = 3, 32, 8, 2, 2, 16
        args.hidden, args.threads = 32, 1
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()

    lm, tokenizer = load(args)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tests = sorting_pairs(args.test, args.length, seed=1)
    shots = sorting_pairs(args.shots, args.length, seed=2, exclude={t["input"] for t in tests})
    pairs = sorting_pairs(args.train, args.length, seed=3, exclude={t["input"] for t in tests + shots})

    if args.only != "reasoner":
        alone = few_shot_accuracy(lm, tokenizer, shots, tests, args.batch_size)
        print(f"LM alone ({args.shots}-shot, greedy): accuracy {alone:.1%} on {len(tests)} held-out lists  [{time.time() - started:.0f} s]", flush=True)
    if args.only == "baseline":
        return

    size = dict(num_heads=2, num_layers=1, latent_steps=1, cycles=1) if args.smoke else dict(num_heads=4, num_layers=2, latent_steps=2, cycles=2)
    config = ReasonerConfig(
        hidden_size=args.hidden, **size, max_supervision_steps=args.supervision_steps,
        output="lm_head", num_answer_slots=args.length + 1, backbone_layer=args.layer, halting=False,
    )
    model = attach_reasoner(lm, config)
    encoder = TextPairEncoder.for_model(tokenizer, model, max_length=32)
    trainable, total = model.get_nb_trainable_parameters()
    print(f"LM + reasoner: {trainable:,d} trainable parameters, {total - trainable:,d} frozen; training on {len(pairs)} lists", flush=True)
    lm_before = [p.clone() for p in lm.parameters()][:3]
    train(model, encoder, pairs, args)
    assert all(torch.equal(a, b) for a, b in zip(lm_before, list(lm.parameters())[:3])), "the LM's weights changed"

    accuracy, answers = reasoner_accuracy(model, encoder, tests, args.batch_size)
    print(f"LM + reasoner (lm_head, {args.supervision_steps} refinement steps): accuracy {accuracy:.1%} on the same held-out lists", flush=True)
    for test, answer in list(zip(tests, answers))[:3]:
        print(f"  {test['input']!r} -> {answer!r} (expected {test['output']!r})")
    print(f"total time {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
