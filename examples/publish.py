"""Publish a trained reasoner on the Hugging Face Hub, the way PEFT adapters are published.

    python examples/publish.py --reasoner outputs/quickstart/sudoku-reasoner --repo-id you/sudoku-reasoner          # dry run
    python examples/publish.py --reasoner outputs/quickstart/sudoku-reasoner --repo-id you/sudoku-reasoner --push   # upload
    python examples/publish.py --smoke          # a tiny untrained reasoner; shows what would be uploaded, uploads nothing

`--reasoner` is a folder written by `model.save_pretrained(...)` or by `latentreason train` (a run
folder). What is uploaded: `reasoner_config.json`, `reasoner.safetensors`, `eval_results.json` when
present, `lora/` when LoRA was used, and a model card (README.md) whose usage snippet loads the repo.
Never the base model's weights, never checkpoints or recipes. Pushing needs a token with write
access: `hf auth login` once, or `HF_TOKEN=...`, or `--token`.

In Python the same takes one line: `model.push_to_hub("you/sudoku-reasoner")`; others then load it
with `LatentReasonerModel.from_pretrained("you/sudoku-reasoner")`, which downloads the base model
by the id and revision recorded in the config.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import sys

from latentreason import LatentReasonerModel, ReasonerConfig, attach_reasoner
from latentreason.hub import HUB_FILES, MODEL_CARD_NAME, model_card, push_folder, read_eval_results, validate_folder
from latentreason.testing import save_tiny_backbone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reasoner", default="outputs/quickstart/sudoku-reasoner", help="saved reasoner or run folder to publish")
    parser.add_argument("--repo-id", default="your-name/sudoku-reasoner", help="Hub repository, e.g. your-name/sudoku-reasoner")
    parser.add_argument("--push", action="store_true", help="really upload (default: a dry run that shows what would be uploaded)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    parser.add_argument("--token", help="Hub token with write access (default: HF_TOKEN or the one saved by `hf auth login`)")
    parser.add_argument("--output-dir", default="outputs/publish", help="where --smoke saves its tiny reasoner")
    parser.add_argument("--smoke", action="store_true", help="save a tiny untrained reasoner and do a dry run (never uploads)")
    return parser.parse_args(argv)


def tiny_reasoner(output_dir: str) -> str:
    """Attach an untrained reasoner to a tiny random BERT and save it: something to publish in a dry run."""
    base = save_tiny_backbone("bert", os.path.join(output_dir, "tiny-bert"))
    config = ReasonerConfig(hidden_size=32, num_heads=2, latent_steps=2, cycles=2, max_supervision_steps=2, num_labels=4,
                            label_names=["1", "2", "3", "4"])
    folder = os.path.join(output_dir, "reasoner")
    attach_reasoner(base, config).save_pretrained(folder)
    return folder


def files_to_upload(folder: str) -> list[str]:
    """The folder's files that a push uploads (the model card is generated anew for the repo)."""
    names = []
    for root, _, files in os.walk(folder):
        for name in files:
            relative = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            if relative != MODEL_CARD_NAME and any(fnmatch.fnmatch(relative, pattern) for pattern in HUB_FILES):
                names.append(relative)
    return sorted(names) + [f"{MODEL_CARD_NAME} (model card, generated for the repo)"]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = tiny_reasoner(args.output_dir) if args.smoke else args.reasoner
    if not os.path.isdir(folder):
        sys.exit(f"{folder} does not exist: train and save a reasoner first (python examples/quickstart.py), or pass --reasoner.")

    # 1. Check the folder without loading the base model (config, weights, shapes), then load it for real.
    config = validate_folder(folder)
    LatentReasonerModel.from_pretrained(folder)
    print(f"{folder}: a {config.output} reasoner for {config.base_model_name_or_path} ({config.backbone_model_type}); it loads.")
    if config.base_model_name_or_path and os.path.isdir(config.base_model_name_or_path):
        print(
            "note: its base model is a local folder, not a Hub id, so others must pass base_model=<a copy of it> to "
            "from_pretrained. Attach to a Hub id (e.g. sentence-transformers/all-MiniLM-L6-v2) to publish a self-contained reasoner."
        )

    # 2. What a push uploads, and the model card the Hub shows.
    print(f"\nfiles for {args.repo_id}:")
    for name in files_to_upload(folder):
        print(f"  {name}")
    card = str(model_card(config, eval_results=read_eval_results(folder), load_name=args.repo_id))
    lines = card.splitlines()
    usage_end = next((i for i, line in enumerate(lines) if line == "```" and any(earlier.startswith("```python") for earlier in lines[:i])), 23)
    print("\nmodel card (up to its usage snippet):\n" + "\n".join(lines[: usage_end + 1]) + "\n  ...")

    # 3. Upload, only when asked, with a token, and never in smoke mode.
    if args.smoke:
        print("\nsmoke mode: nothing uploaded (a tiny untrained reasoner is not worth publishing).")
        return
    if not args.push:
        print(f"\ndry run: nothing uploaded. Add --push to upload to https://huggingface.co/{args.repo_id}")
        return
    from huggingface_hub import get_token

    token = args.token or get_token()
    if token is None:
        sys.exit("No Hub token: run `hf auth login`, set HF_TOKEN, or pass --token.")
    commit = push_folder(folder, args.repo_id, private=args.private, token=token)
    print(f"\nuploaded: {commit.commit_url}")
    print(f'load it anywhere with: LatentReasonerModel.from_pretrained("{args.repo_id}")')


if __name__ == "__main__":
    main()
