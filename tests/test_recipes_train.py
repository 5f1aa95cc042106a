"""Every task recipe in recipes/ trains a few steps, then evaluates and answers through its run folder.

Each recipe is run as shipped, with only its size turned down: a tiny local backbone instead of the
real one, a handful of examples, a 32-wide reasoner and a few optimizer steps. What is checked is what
a user relies on: the run folder holds the recipe with the task's options, the evaluation covers every
refinement step, and `predict` answers a test input in the task's own layout. ARC goes through a tiny
causal LM (its answers are free text), which also checks that a task's text output trains on the LM path.
"""

from __future__ import annotations

import glob
import json
import os

import pytest

from latentreason import cli
from latentreason.inference import load_run, predict
from latentreason.pipeline import train_recipe
from latentreason.recipe import RecipeError, load_recipe
from latentreason.tasks import evaluate_pass_at_2, get_task
from latentreason.testing import save_tiny_backbone
from latentreason.text_pairs import TextPairEncoder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK_RECIPES = sorted(path for path in glob.glob(os.path.join(REPO, "recipes", "*.yaml")) if load_recipe(path).data.task is not None)
STEPS = 2  # refinement steps at test time in these tiny runs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models run fastest on one thread (conftest)

# ARC's small grids: tasks whose every grid fits in 4x4, one demonstration shown (short prompts for a
# character-level tokenizer).
TINY_ARC = ["data.task_options.max_grid_size=4", "data.task_options.max_demonstrations=1", "data.task_options.augment_copies=1"]


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tiny llama read as an encoder (label heads) and a tiny llama causal LM (ARC's lm_head output)."""
    root = tmp_path_factory.mktemp("bases")
    return {
        "encoder": save_tiny_backbone("llama", root / "encoder"),
        "causal_lm": save_tiny_backbone("llama", root / "causal_lm", causal_lm=True),
    }


def tiny_overrides(recipe_path: str, bases: dict[str, str], root) -> list[str]:
    recipe = load_recipe(recipe_path)
    is_text = recipe.reasoner.get("output") in ("lm_head", "latent_prefix")
    return [
        f"model.base={bases['causal_lm' if is_text else 'encoder']}", f"training.output_dir={root / 'run'}",
        f"training.cache_dir={root / 'cache'}", "data.task_options.num_train=12", "data.task_options.num_test=3",
        "reasoner.hidden_size=32", "reasoner.num_heads=2", "reasoner.max_supervision_steps=2", "training.supervision_steps=2",
        "training.max_steps=4", "training.batch_size=8", "training.warmup_steps=1", "training.checkpoint_every=null",
        f"eval.steps={STEPS}", "eval.batch_size=8", "training.progress_bar=false", "training.report_to=none",
        *(TINY_ARC if recipe.data.task == "arc" else []),
    ]


@pytest.mark.parametrize("recipe_path", TASK_RECIPES, ids=os.path.basename)
def test_task_recipe_trains_evaluates_and_predicts(recipe_path: str, bases: dict[str, str], tmp_path) -> None:
    overrides = tiny_overrides(recipe_path, bases, tmp_path)
    assert cli.main(["train", recipe_path, *overrides]) == 0
    run_dir = str(tmp_path / "run")

    with open(os.path.join(run_dir, "eval_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    assert len(results["per_step"]) == STEPS
    assert all(0.0 <= step["accuracy"] <= 1.0 and 0.0 <= step["exact_match"] <= step["accuracy"] + 1e-9 for step in results["per_step"])

    run = load_run(run_dir)
    shipped = load_recipe(recipe_path, overrides)
    assert run.recipe.data.task == shipped.data.task and run.recipe.data.task_options == shipped.data.task_options
    task = get_task(shipped.data.task, **shipped.data.task_options)
    example = task.get_example("test", 0)
    [prediction] = predict(run, [example["input"]], steps=STEPS, halt=False)
    if task.output_kind == "text":
        assert isinstance(run.encoder, TextPairEncoder)
        assert isinstance(prediction.answer, str)
        assert len(prediction.per_step) == STEPS and prediction.per_step[-1] == prediction.answer  # lm_head: one answer per step
        [one_step] = predict(run, [example["input"]], steps=1, halt=False)
        assert one_step.answer == prediction.per_step[0]
        check_pass_at_2(run, task)
    else:
        # An aligned answer has one cell per input cell, each a label of the task.
        assert len(prediction.per_step) == STEPS
        assert len(prediction.answer.split()) == len(example["output"].split())
        assert set(prediction.answer.split()) <= set(task.labels())


def check_pass_at_2(run, task) -> None:
    """ARC's voting score on a trained run: one view is plain exact match; more views only add votes."""
    alone = evaluate_pass_at_2(run, views=1, steps=STEPS)
    assert alone["num_examples"] == task.num_examples("test") == len(alone["per_example"])
    assert all(row["pass_at_1"] == row["exact"] and row["views"] == 1 for row in alone["per_example"])
    voted = evaluate_pass_at_2(run, views=3, steps=STEPS)
    assert all(1 <= row["views"] <= 3 and row["pass_at_2"] >= row["pass_at_1"] for row in voted["per_example"])
    assert [row["exact"] for row in voted["per_example"]] == [row["exact"] for row in alone["per_example"]]
    with pytest.raises(ValueError, match="views"):
        evaluate_pass_at_2(run, views=0)


def test_a_text_task_without_an_lm_output_names_the_fix(bases: dict[str, str], tmp_path) -> None:
    recipe = load_recipe(
        os.path.join(REPO, "recipes", "arc.yaml"),
        [*tiny_overrides(os.path.join(REPO, "recipes", "arc.yaml"), bases, tmp_path), "reasoner.output=token_classification"],
    )
    with pytest.raises(RecipeError, match=r"free text.*reasoner\.output=lm_head"):
        train_recipe(recipe)


def test_arc_task_trains_on_the_lm_head_path_with_its_answer_grids_as_labels(bases: dict[str, str], tmp_path) -> None:
    """The task's answers become the LM's token ids plus the end token, exactly as a JSONL pair's would."""
    from latentreason.prepare import load_tokenizer, prepare_data

    path = os.path.join(REPO, "recipes", "arc.yaml")
    recipe = load_recipe(path, tiny_overrides(path, bases, tmp_path))
    tokenizer = load_tokenizer(recipe)
    data = prepare_data(recipe, tokenizer)
    task = get_task("arc", **recipe.data.task_options)
    assert data.output_kind == "lm_head" and isinstance(data.encoder, TextPairEncoder)
    assert len(data.train) == len(task.examples("train")) and len(data.eval) == task.num_examples("test")
    first = task.get_example("test", 0)
    labels = [token for token in data.eval[0]["labels"] if token != -100]
    assert labels == tokenizer(first["output"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
