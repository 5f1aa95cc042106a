"""Fuzzed input (hypothesis): every generated file or override ends in a result or in an error that names the problem.

Readers under test: JSONL and CSV pairs (`load_pairs`), recipe overrides (`load_recipe`), a saved
`reasoner_config.json` (`hub.files.read_config`) and `reasoner.safetensors` (`hub.files.read_weights`).
Every case must end in a value of the right kind or in a `ValueError` subclass whose message names
the file (and the line or key where there is one): never another exception, never a hang (each case
has a deadline). Default suite: 5 properties x 25 cases; slow suite: 5 x 125 more.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from latentreason.config import ReasonerConfig
from latentreason.data import DataError, load_pairs
from latentreason.hub.files import CONFIG_NAME, WEIGHTS_NAME, read_config, read_weights
from latentreason.recipe import Recipe, load_recipe

DEFAULT = settings(max_examples=25, deadline=5000, suppress_health_check=[HealthCheck.too_slow], database=None)
SLOW = settings(max_examples=125, deadline=5000, suppress_health_check=[HealthCheck.too_slow], database=None)

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=8)
row_objects = st.dictionaries(st.sampled_from(["input", "output", "other", "Input", ""]), values, max_size=4)
lines = st.one_of(row_objects.map(json.dumps), st.text(max_size=30), st.just(""), st.just("{"), st.just("[1, 2]"))


SCRATCH = tempfile.mkdtemp(prefix="latentreason-fuzz-")  # every generated file goes under here; removed after the module


@pytest.fixture(scope="module", autouse=True)
def remove_scratch_files() -> Iterator[None]:
    yield
    shutil.rmtree(SCRATCH, ignore_errors=True)


def scratch_file(name: str, content: str | bytes) -> str:
    folder = tempfile.mkdtemp(prefix="case_", dir=SCRATCH)  # one folder per case: read_weights reads a folder
    path = os.path.join(folder, name)
    with open(path, "wb") as handle:
        handle.write(content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass"))
    return path


def check_pairs(content: str, name: str, skip_bad_rows: bool) -> None:
    path = scratch_file(name, content)
    try:
        pairs = load_pairs(path, skip_bad_rows=skip_bad_rows)
    except DataError as error:
        assert path in str(error) or os.path.basename(path) in str(error), str(error)
        return
    assert pairs.column_names == ["input", "output"]
    assert all(isinstance(row["input"], str) and row["input"] and isinstance(row["output"], str) for row in pairs)


def jsonl_property(items: list[str], skip_bad_rows: bool) -> None:
    check_pairs("\n".join(items) + "\n", "pairs.jsonl", skip_bad_rows)


def csv_property(rows: list[list[str]], header: list[str]) -> None:
    def cell(value: str) -> str:
        return '"' + value.replace('"', '""') + '"' if any(c in value for c in ',"\n') else value
    check_pairs("\n".join(",".join(map(cell, row)) for row in [header, *rows]) + "\n", "pairs.csv", skip_bad_rows=False)


KEYS = ["model.base", "model.layer", "data.task", "data.max_length", "reasoner.hidden_size", "reasoner.mixer", "reasoner.latent_steps",
        "training.max_steps", "training.learning_rate", "training.batch_size", "eval.steps", "hub.private", "nope.key", "reasoner.nope",
        "data.task_options", "training"]
override_values = st.one_of(st.sampled_from(["", "null", "-1", "0", "1", "3.5", "true", "abc", "[1, 2]", "{a: 1}", "{", "1e-3", "attention"]),
                            st.text(max_size=10))


def overrides_property(pairs: list[tuple[str, str]], junk: list[str]) -> None:
    overrides = ["model.base=some/model", "data.task=parity"] + [f"{key}={value}" for key, value in pairs] + junk
    try:
        recipe = load_recipe(None, overrides)
    except ValueError as error:  # RecipeError is a ValueError
        message = str(error)
        named = [key for key, _ in pairs] + [key.split(".")[-1] for key, _ in pairs] + junk + ["model.base", "data.task"]
        assert any(f"`{name}" in message or repr(name) in message or f"{name}=" in message or name in message.split() for name in named) \
            or "override" in message.lower(), message
        return
    assert isinstance(recipe, Recipe)


config_keys = st.sampled_from(sorted(ReasonerConfig.known_keys()) + ["format_version", "library_version", "unknown_key"])


def config_property(values_: dict) -> None:
    path = scratch_file(CONFIG_NAME, json.dumps(values_))
    try:
        config = read_config(path)
    except ValueError as error:
        assert path in str(error), str(error)
        return
    assert isinstance(config, ReasonerConfig)


def weights_property(header: bytes, claimed: int | None, body: bytes) -> None:
    prefix = struct.pack("<Q", claimed if claimed is not None else len(header))
    path = scratch_file(WEIGHTS_NAME, prefix + header + body)
    try:
        weights = read_weights(os.path.dirname(path))
    except ValueError as error:
        assert path in str(error), str(error)
        return
    assert isinstance(weights, dict)


header_json = st.dictionaries(st.text(max_size=6), st.fixed_dictionaries({"dtype": st.sampled_from(["F32", "F16", "I64", "XX"]),
                              "shape": st.lists(st.integers(0, 10**9), max_size=3),
                              "data_offsets": st.lists(st.integers(0, 10**9), min_size=2, max_size=2)}), max_size=2).map(json.dumps)
headers = st.one_of(header_json.map(str.encode), st.binary(max_size=40))
claims = st.one_of(st.none(), st.integers(0, 2**63))

PROPERTIES = {
    "jsonl": (jsonl_property, (st.lists(lines, max_size=6), st.booleans())),
    "csv": (csv_property, (st.lists(st.lists(st.text(max_size=8), max_size=3), max_size=4),
                           st.lists(st.sampled_from(["input", "output", "x", ""]), max_size=3))),
    "overrides": (overrides_property, (st.lists(st.tuples(st.sampled_from(KEYS), override_values), max_size=3),
                                       st.lists(st.sampled_from(["novalue", "=x", "a.b.c=1", ".=", "model.=1"]), max_size=1))),
    "reasoner_config": (config_property, (st.dictionaries(config_keys, values, max_size=5),)),
    "safetensors": (weights_property, (headers, claims, st.binary(max_size=64))),
}


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_fuzzed_input_ends_in_a_result_or_a_named_error(name: str) -> None:
    function, strategies = PROPERTIES[name]
    DEFAULT(given(*strategies)(function))()


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_more_fuzzed_input_ends_in_a_result_or_a_named_error(name: str) -> None:
    function, strategies = PROPERTIES[name]
    SLOW(given(*strategies)(function))()
