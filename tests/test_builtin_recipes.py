"""Built-in recipes are package data: listed, found by name, copied to edit, and present in an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_base
from test_training import REPO, tiny_overrides

from latentreason import cli
from latentreason.recipe import RecipeError, builtin_recipes, copy_recipe, find_recipe, load_recipe, recipe_purpose


def test_builtin_recipes_are_the_package_files_and_each_has_a_purpose() -> None:
    shipped = builtin_recipes()
    in_package = sorted(p.stem for p in (Path(REPO) / "latentreason" / "recipes").glob("*.yaml"))
    assert sorted(shipped) == in_package and "custom_pairs" in shipped
    assert os.path.samefile(Path(REPO) / "recipes", Path(REPO) / "latentreason" / "recipes")  # the clone's recipes/ is the same folder
    for name, path in shipped.items():
        purpose = recipe_purpose(path)
        assert purpose and "#" not in purpose and "\n" not in purpose, name


def test_recipe_purpose_is_the_first_comment_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("# Line one\n#   continues here.\n#\n# Details that are not the purpose.\nmodel:\n  base: gpt2\n")
    assert recipe_purpose(path) == "Line one continues here."


def test_a_name_finds_the_builtin_recipe_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_recipe("sort_words") == builtin_recipes()["sort_words"]
    assert find_recipe("sort_words.yaml") == builtin_recipes()["sort_words"]
    recipe = load_recipe("sort_words", ["training.max_steps=3"])
    assert recipe.data.task == "sort_words" and recipe.training.max_steps == 3


def test_a_local_file_wins_over_a_builtin_of_the_same_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sort_words.yaml").write_text("model:\n  base: my-own-base\ndata:\n  task: sort_words\n")
    assert load_recipe("sort_words.yaml").model.base == "my-own-base"


def test_an_unknown_name_is_refused_with_the_closest_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"sort_word.*did you mean `sort_words`.*custom_pairs"):
        load_recipe("sort_word")
    with pytest.raises(RecipeError, match="does not exist and is not a built-in"):
        load_recipe("configs/sort_words.yaml")  # a path with folders is never taken for a name


def test_copy_writes_the_recipe_and_keeps_an_existing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    written = copy_recipe("custom_pairs")
    assert written == Path("custom_pairs.yaml") and written.read_bytes() == builtin_recipes()["custom_pairs"].read_bytes()
    into_folder = copy_recipe("text_pairs", "configs/")
    assert into_folder == Path("configs/text_pairs.yaml") and yaml.safe_load(into_folder.read_text())["model"]
    written.write_text("edited: true\n")
    with pytest.raises(RecipeError, match="already exists.*--force"):
        copy_recipe("custom_pairs", "custom_pairs.yaml")
    assert written.read_text() == "edited: true\n"
    copy_recipe("custom_pairs", "custom_pairs.yaml", overwrite=True)
    assert written.read_bytes() == builtin_recipes()["custom_pairs"].read_bytes()


def test_cli_lists_every_recipe_and_copies_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert cli.main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = {line.split()[0]: line for line in lines if not line.startswith(" ")}
    assert set(listed) == set(builtin_recipes())
    assert recipe_purpose(builtin_recipes()["maze"]).split()[0] in listed["maze"]
    assert cli.main(["recipes", "copy", "maze", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_bytes() == builtin_recipes()["maze"].read_bytes()
    assert cli.main(["recipes", "copy", "maze", "mine.yaml"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert cli.main(["recipes", "copy", "no_such_recipe"]) == 2


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The latentreason wheel, built from this checkout without build isolation (setuptools from the test venv)."""
    pytest.importorskip("setuptools")
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    # Built from a copy, so setuptools' build/ and egg-info never land in the checkout.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(Path(REPO, name), source / name)
    shutil.copytree(Path(REPO, "latentreason"), source / "latentreason", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)],
                   check=True, capture_output=True, text=True)
    (built,) = out.glob("latentreason-*.whl")
    return built


def test_the_wheel_holds_every_recipe(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(Path(n).stem for n in names if n.startswith("latentreason/recipes/")) == sorted(builtin_recipes())


def test_installed_wheel_trains_a_builtin_recipe_by_name(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv holding only the wheel (dependencies borrowed from the test venv, no repository on the path)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, text=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True)
    # The dependencies only: a plain path line in a .pth does not run the test venv's editable-install hook.
    Path(site.stdout.strip(), "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()
    base = save_tiny_base(str(tmp_path / "base"))
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    where = subprocess.run([python, "-c", "import latentreason; print(latentreason.__file__)"], cwd=work, env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    assert where.startswith(str(venv)), where
    run_dir = tmp_path / "run"
    overrides = tiny_overrides(base, str(run_dir), str(tmp_path / "cache"), **{"training.max_steps": 4, "training.checkpoint_every": 4})
    result = subprocess.run([python, "-m", "latentreason.cli", "train", "sort_words", *overrides], cwd=work, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (run_dir / "reasoner.safetensors").is_file()
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["data"]["task"] == "sort_words"
