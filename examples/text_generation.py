"""Text in, text out on a real LM: SmolLM2-135M alone, with a linear head, and with a latent reasoner.

Two tasks written as words (`--task`):
  sort  "seven two five" -> "two five seven": 3 distinct number words (720 possible lists).
  add   "three four plus five eight" -> "nine two": two 2-digit numbers, digit by digit (`--length 2`).
Four ways to answer, all scored by exact match of the answer text on the same 60 held-out inputs:

  1. LM alone: the frozen LM, few-shot prompted (a task line, then "Input: ... Output: ..." lines),
     greedy decoding up to the end of the line.
  2. LM + linear head: the comparator of the same size. Each answer slot is a linear function of
     the prompt's frozen LM features (layer `--layer`, RMS-normalised per token, flattened), read
     through the LM's own final norm and lm_head like the reasoner's lm_head path. A factored map
     Linear(L*D -> K*w), Linear(w -> H) whose width w gives it as many trainable parameters as the
     reasoner (within 0.5%); same data, optimizer, schedule and epochs.
  3. LM + reasoner, output="lm_head": the reasoner reads the same features; its answer slots are
     read through the LM's final norm and lm_head, one word per slot (`model.generate`).
  4. LM + reasoner, output="latent_prefix": K latent thoughts in the LM's embedding space after
     the prompt; the frozen LM writes the answer (`model.generate`, greedy). Each training step
     runs the whole LM forward and backward, so on a CPU it gets a far smaller budget here.

The LM's weights never change (checked). Its features are computed once per training input and
cached; the linear head and the reasoners train on the cache (the features' time is counted in the
linear head's row).

Measured on a shared 2-core CPU (one thread, other jobs running):

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python examples/text_generation.py --threads 1   # sort: 835 s

    | model                         | exact match (60 held out) | trainable parameters | wall time |
    | LM alone (3-shot)             | 20.0%                     | 0                    | 44 s      |
    | LM + linear head              | 96.7%                     | 539,424              | 252 s     |
    | LM + reasoner (lm_head)       | 95.0%                     | 541,697              | 400 s     |
    | LM + reasoner (latent_prefix) | 0.0%                      | 541,697              | 137 s     |

(latent_prefix row: 4 thoughts then, 128 lists for 16 steps; see below for 16 thoughts and 600 lists.)

Sorting is solved by the linear head as well: the LM's layer-8 features make it linearly decodable.
Adding digit by digit (sums mod 10, carries) is not:

    OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python examples/text_generation.py --threads 1 --task add --length 2 --train 2000 --only few-shot linear lm_head
    # 1977 s on the loaded CPU (about 6 jobs on 2 cores)

    | model                   | exact match (60 held out) | trainable parameters | wall time                  |
    | LM alone (3-shot)       | 0.0%                      | 0                    | 105 s                      |
    | LM + linear head        | 8.3%                      | 544,500              | 1091 s (258 s LM features) |
    | LM + reasoner (lm_head) | 76.7%                     | 541,697              | 775 s                      |

The reasoner's training loss was still falling (0.11 at the end) after 15 epochs. Both trained
models at 30 epochs, each run alone (`--epochs 30 --only lm_head`, then `--only linear`; one core,
one other job on the machine):

    | model                   | exact match (60 held out) | trainable parameters | wall time                 |
    | LM + linear head        | 15.0%                     | 544,500              | 1121 s (63 s LM features) |
    | LM + reasoner (lm_head) | 96.7%                     | 541,697              | 1234 s (74 s LM features) |

With the same data, optimizer and epochs, the frozen LM with the reasoner answers 58 of the 60
held-out sums; with a linear head of the same size, 9. latent_prefix is not run on this task: on
sorting, 600 lists for one epoch (75 steps of 8, each running the whole LM forward and backward;
16 thoughts; 330 s) give 1.7%; it overfits a handful of lists exactly (tests/test_text_outputs.py)
but needs far more steps than a CPU budget gives to generalise.

Quick check with a tiny random LM (< 30 s):

    HF_HUB_OFFLINE=1 .venv/bin/python examples/text_generation.py --smoke
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from torch import nn

from latentreason import ReasonerConfig, attach_reasoner
from latentreason.heads.lm import final_norm
from latentreason.losses import IGNORE_INDEX
from latentreason.text_pairs import TextPairEncoder

WORDS = "zero one two three four five six seven eight nine".split()


# --- data ------------------------------------------------------------------------------------------


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


def addition_pairs(count: int, digits: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    """`count` distinct sums of two `digits`-digit numbers, digits written as words: "three four plus five eight" -> "nine two"."""
    rng, pairs, seen = random.Random(seed), [], set(exclude)
    spell = lambda number, width: " ".join(WORDS[int(c)] for c in f"{number:0{width}d}")  # noqa: E731
    while len(pairs) < count:
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        text = f"{spell(a, digits)} plus {spell(b, digits)}"
        if text not in seen:
            seen.add(text)
            pairs.append({"input": text, "output": spell(a + b, 1)})
    return pairs


def make_pairs(args: argparse.Namespace, count: int, seed: int, exclude: set[str] = frozenset()) -> list[dict[str, str]]:
    if args.task == "sort":
        return sorting_pairs(count, args.length, seed, exclude)
    return addition_pairs(count, args.length, seed, exclude)


def answer_slots(args: argparse.Namespace) -> int:
    """Answer tokens + 1 end token: a sorted list has `length` words, a sum up to `length + 1` digits."""
    return args.length + (1 if args.task == "sort" else 2)


def encode_batches(model, encoder: TextPairEncoder, pairs: list[dict[str, str]], batch_size: int, features=None) -> list[dict]:
    """Fixed batches of encoded pairs, each with the frozen LM's features of its prompts.

    The LM runs here once per list (or not at all when `features`, one tensor per batch, are given):
    training reuses these features at every epoch.
    """
    batches = []
    for index, start in enumerate(range(0, len(pairs), batch_size)):
        batch = encoder(pairs[start : start + batch_size])
        if features is None:
            with torch.no_grad():
                batch["features"] = model.encode(batch["input_ids"], batch["attention_mask"])
        else:
            batch["features"] = features[index]
        batches.append(batch)
    return batches


# --- 1. the LM alone ----------------------------------------------------------------------------------


def few_shot_answers(lm, tokenizer, shots: list[dict[str, str]], tests: list[dict[str, str]], batch_size: int) -> list[str]:
    """The frozen LM alone: a few solved examples, then the question; greedy decoding up to the line's end."""
    task = "Sort the numbers from smallest to largest." if "plus" not in tests[0]["input"] else "Add the numbers, digit by digit."
    header = task + "\n" + "".join(f"Input: {s['input']}\nOutput: {s['output']}\n" for s in shots)
    tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(tests), batch_size):
        chunk = tests[start : start + batch_size]
        inputs = tokenizer([f"{header}Input: {t['input']}\nOutput:" for t in chunk], return_tensors="pt", padding=True)
        with torch.no_grad():
            new = lm.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        answers += [text.split("\n")[0].strip() for text in tokenizer.batch_decode(new[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)]
    return answers


# --- 2. the comparator: a linear head of the same size --------------------------------------------------


class LinearSlotHead(nn.Module):
    """Each answer slot is a linear function of the prompt's frozen LM features, read through the LM's own head.

        features (B, L, D) -> RMS-normalise each token -> flatten (B, L*D) -> Linear -> K slots (B, K, w)
            -> Linear(w -> H) -> the LM's final norm -> the LM's lm_head       logits (B, K, vocab)

    The read-out is the reasoner's lm_head path; the reasoner is replaced by one (factored) linear map.
    `width` (w) is chosen so that the trainable parameters match `parameter_budget`.
    """

    def __init__(self, lm, prompt_length: int, slots: int, parameter_budget: int) -> None:
        super().__init__()
        features, hidden = lm.config.hidden_size, lm.get_output_embeddings().weight.shape[1]
        per_width = prompt_length * features * slots + slots + hidden  # weights + biases of `mix`, weights of `proj`
        self.width = max(1, round(parameter_budget / per_width))
        self.slots, self.prompt_length = slots, prompt_length
        self.mix = nn.Linear(prompt_length * features, slots * self.width)
        self.proj = nn.Linear(self.width, hidden, bias=False)
        self._lm = (lm,)  # held, not registered: the frozen LM is no part of this head

    def forward(self, features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if features.shape[1] != self.prompt_length:
            raise ValueError(f"LinearSlotHead reads prompts of exactly {self.prompt_length} tokens, got {features.shape[1]}.")
        features = features * torch.rsqrt(features.pow(2).mean(-1, keepdim=True) + 1e-6) * attention_mask[..., None]
        slots = self.mix(features.flatten(1)).view(-1, self.slots, self.width)
        lm = self._lm[0]
        return lm.get_output_embeddings()(final_norm(lm)(self.proj(slots)))

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


def train_linear_head(head: LinearSlotHead, batches: list[dict], args: argparse.Namespace) -> None:
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.epochs * len(batches), pct_start=0.1)
    for epoch in range(args.epochs):
        random.Random(epoch).shuffle(batches)
        for batch in batches:
            logits = head(batch["features"], batch["attention_mask"])
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        report(epoch, args.epochs, loss)


def linear_head_answers(head: LinearSlotHead, model, encoder: TextPairEncoder, tests: list[dict[str, str]]) -> list[str]:
    batch = encoder(tests)
    with torch.no_grad():
        logits = head(model.encode(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"])
    return encoder.decode(logits.argmax(-1))  # cut at the first end token


# --- 3 and 4. the reasoner ---------------------------------------------------------------------------------


def train_reasoner(model, batches: list[dict], epochs: int, args: argparse.Namespace) -> None:
    """Deep supervision on cached LM features: N_sup steps per batch, each with its own loss and update.

    `input_ids` go in too: latent_prefix runs the frozen LM over the prompt and the answer (lm_head ignores them).
    """
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.01)
    total = epochs * len(batches) * args.supervision_steps
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=total, pct_start=0.1)
    model.train()
    for epoch in range(epochs):
        random.Random(epoch).shuffle(batches)
        for batch in batches:
            carry = None
            for _ in range(args.supervision_steps):
                out = model(batch["input_ids"], batch["attention_mask"], features=batch["features"], labels=batch["labels"], carry=carry)
                carry = out.carry
                out.loss.backward()
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
        report(epoch, epochs, out.loss)
    model.eval()


def reasoner_answers(model, encoder: TextPairEncoder, tests: list[dict[str, str]], batch_size: int, **generate_kwargs) -> list[str]:
    answers = []
    for start in range(0, len(tests), batch_size):
        prompts = encoder.prompts([t["input"] for t in tests[start : start + batch_size]])
        answers += encoder.decode(model.generate(**prompts, **generate_kwargs))
    return answers


def report(epoch: int, epochs: int, loss: torch.Tensor) -> None:
    if epoch % max(1, epochs // 5) == 0 or epoch == epochs - 1:
        print(f"    epoch {epoch + 1:3d}/{epochs}: loss {loss.item():.3f}", flush=True)


# --- the run ------------------------------------------------------------------------------------------------


def load(args: argparse.Namespace):
    if args.smoke:
        from latentreason.testing import tiny_backbone

        return tiny_backbone("llama", causal_lm=True), _word_tokenizer()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from latentreason.packaged import smollm2_path

    path = smollm2_path()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(path)


def _word_tokenizer():
    """Smoke mode: a word-level tokenizer that fits the tiny model's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(["<pad>", "<s>", "</s>", "<unk>", *WORDS, "Sort", "the", "numbers", "from",
                                                       "smallest", "to", "largest", ".", "Input", "Output", ":", "plus", "Add",
                                                       "digit", "by", ","])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def reasoner_config(args: argparse.Namespace, output: str) -> ReasonerConfig:
    slots = answer_slots(args) if output == "lm_head" else args.thoughts
    return ReasonerConfig(
        hidden_size=args.hidden, num_heads=args.heads, num_layers=2, latent_steps=args.latent_steps, cycles=args.cycles,
        max_supervision_steps=args.supervision_steps, output=output, num_answer_slots=slots,
        backbone_layer=args.layer, halting=False,
    )


def exact(answers: list[str], tests: list[dict[str, str]]) -> float:
    return sum(answer == test["output"] for answer, test in zip(answers, tests)) / len(tests)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a tiny random LM and a few steps: checks the script runs (< 30 s)")
    parser.add_argument("--task", choices=["sort", "add"], default="sort", help="sort number words, or add two numbers written digit by digit as words")
    parser.add_argument("--length", type=int, default=3, help="sort: number words per list; add: digits per number")
    parser.add_argument("--train", type=int, default=600, help="training lists")
    parser.add_argument("--test", type=int, default=60, help="held-out lists")
    parser.add_argument("--shots", type=int, default=3, help="solved examples in the LM-alone prompt")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the linear head and the lm_head reasoner")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--layer", type=int, default=8, help="backbone hidden state read (SmolLM2 has 30 blocks; middle ones keep the words apart best)")
    parser.add_argument("--supervision-steps", type=int, default=1, help="N_sup, in training and at test time")
    parser.add_argument("--latent-steps", type=int, default=1, help="n: latent updates per cycle")
    parser.add_argument("--cycles", type=int, default=1, help="T: cycles per supervision step")
    parser.add_argument("--hidden", type=int, default=128, help="reasoner width")
    parser.add_argument("--heads", type=int, default=4, help="reasoner attention heads")
    parser.add_argument("--prefix-train", type=int, default=128, help="training lists for latent_prefix (each step runs the whole LM)")
    parser.add_argument("--prefix-epochs", type=int, default=1, help="epochs of the latent_prefix reasoner")
    parser.add_argument("--prefix-batch-size", type=int, default=8)
    parser.add_argument("--thoughts", type=int, default=16, help="latent_prefix: thoughts between the prompt and the answer (more steer the LM faster)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="+", choices=["few-shot", "linear", "lm_head", "latent_prefix"], help="run only these parts")
    args = parser.parse_args()
    if args.smoke:
        args.train, args.test, args.shots, args.epochs, args.batch_size = 32, 8, 2, 2, 16
        args.prefix_train, args.prefix_epochs, args.hidden, args.heads, args.layer = 16, 1, 32, 2, -1
    parts = args.only or ["few-shot", "linear", "lm_head", "latent_prefix"]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.time()

    lm, tokenizer = load(args)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tests = make_pairs(args, args.test, seed=1)
    shots = make_pairs(args, args.shots, seed=2, exclude={t["input"] for t in tests})
    pairs = make_pairs(args, args.train, seed=3, exclude={t["input"] for t in tests + shots})
    lm_before = [p.detach().clone() for p in lm.parameters()]
    rows = []  # (name, exact match, trainable parameters, seconds)

    def timed(name: str, run) -> None:
        start = time.time()
        accuracy, trainable, answers = run()
        rows.append((name, accuracy, trainable, time.time() - start))
        print(f"{name}: exact match {accuracy:.1%} on {len(tests)} held-out lists  [{rows[-1][3]:.0f} s]", flush=True)
        for test, answer in list(zip(tests, answers))[:2]:
            print(f"    {test['input']!r} -> {answer!r} (expected {test['output']!r})", flush=True)

    if "few-shot" in parts:
        timed(f"LM alone ({args.shots}-shot)", lambda: (lambda a: (exact(a, tests), 0, a))(few_shot_answers(lm, tokenizer, shots, tests, args.batch_size)))

    model = attach_reasoner(lm, reasoner_config(args, "lm_head"))
    encoder = TextPairEncoder.for_model(tokenizer, model, max_length=32)
    trainable = model.get_nb_trainable_parameters()[0]
    cached = {}

    def features() -> list[dict]:  # the LM runs once per training list, for all three trained models
        if "batches" not in cached:
            start = time.time()
            cached["batches"] = encode_batches(model, encoder, pairs, args.batch_size)
            print(f"  LM features of {len(pairs)} training lists computed once: {time.time() - start:.0f} s", flush=True)
        return cached["batches"]

    if "linear" in parts:
        def linear():
            batches = features()
            head = LinearSlotHead(lm, batches[0]["input_ids"].shape[1], answer_slots(args), trainable)
            print(f"LM + linear head: width {head.width}, {head.parameter_count():,d} trainable parameters (reasoner: {trainable:,d})", flush=True)
            train_linear_head(head, list(batches), args)
            answers = linear_head_answers(head, model, encoder, tests)
            return exact(answers, tests), head.parameter_count(), answers

        timed("LM + linear head", linear)

    if "lm_head" in parts:
        def reasoner():
            print(f"LM + reasoner (lm_head): {trainable:,d} trainable parameters, training on {len(pairs)} lists", flush=True)
            train_reasoner(model, list(features()), args.epochs, args)
            answers = reasoner_answers(model, encoder, tests, args.batch_size)
            return exact(answers, tests), trainable, answers

        timed("LM + reasoner (lm_head)", reasoner)

    if "latent_prefix" in parts:
        def prefix():
            torch.manual_seed(0)
            thinker = attach_reasoner(lm, reasoner_config(args, "latent_prefix"))
            prefix_encoder = TextPairEncoder.for_model(tokenizer, thinker, max_length=32)
            subset = pairs[: args.prefix_train]
            batches = encode_batches(thinker, prefix_encoder, subset, args.prefix_batch_size)
            count = thinker.get_nb_trainable_parameters()[0]
            print(f"LM + reasoner (latent_prefix): {count:,d} trainable parameters, training on {len(subset)} lists", flush=True)
            train_reasoner(thinker, batches, args.prefix_epochs, args)
            answers = reasoner_answers(thinker, prefix_encoder, tests, args.batch_size, max_new_tokens=3 * answer_slots(args), do_sample=False)
            return exact(answers, tests), count, answers

        timed("LM + reasoner (latent_prefix)", prefix)

    assert all(torch.equal(a, b) for a, b in zip(lm_before, lm.parameters())), "the LM's weights changed"
    print(f"\n| model | exact match ({len(tests)} held-out lists) | trainable parameters | wall time |")
    print("| --- | --- | --- | --- |")
    for name, accuracy, count, seconds in rows:
        print(f"| {name} | {accuracy:.1%} | {count:,d} | {seconds:.0f} s |")
    print(f"\ntotal time {time.time() - started:.0f} s (the LM's weights are unchanged)")


if __name__ == "__main__":
    main()
