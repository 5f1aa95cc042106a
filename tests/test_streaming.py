"""`data.streaming: true`: pairs files read one line at a time, checked, tokenized and trained on as a stream.

The in-memory path permutes the whole training set every epoch (random access); a stream can only
shuffle within a buffer, so the two never see batches in the same order. What must be equal is tested:
the encoded rows (ids, labels, cell positions) row for row, the output kind, labels and max_length the
first pass finds, and the trained weights when one batch holds every row (the order within a batch does
not change the loss but for the order of float sums: equal within 1e-5).
"""

from __future__ import annotations

import functools
import json
import os

import pytest
import torch
from conftest import save_tiny_base
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from latentreason import streaming
from latentreason.data import DataError, collate
from latentreason.hub.files import WEIGHTS_NAME
from latentreason.pipeline import train_recipe
from latentreason.prepare import load_tokenizer, prepare_data
from latentreason.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

ROWS = 12


def sorted_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(count):
        cells = torch.randint(1, 6, (4,), generator=generator).tolist()
        rows.append({"input": " ".join(map(str, cells)), "output": " ".join(map(str, sorted(cells)))})
    return rows


def write_jsonl(path, rows: list[dict[str, str]], raw_lines: dict[int, str] | None = None) -> str:
    lines = [json.dumps(row) for row in rows]
    for number, text in (raw_lines or {}).items():  # 1-based line -> raw text put there
        lines.insert(number - 1, text)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_base(str(tmp_path_factory.mktemp("streaming") / "base"))


def recipe_for(base: str, train_file: str, output_dir, *extra: str, eval_file: str | None = None):
    overrides = [
        f"model.base={base}", "model.layer=-1", f"data.train_file={train_file}", f"training.output_dir={output_dir}",
        "reasoner.hidden_size=32", "reasoner.num_heads=2", "reasoner.num_layers=1", "reasoner.latent_steps=1", "reasoner.cycles=1",
        "reasoner.max_supervision_steps=2", "training.use_feature_cache=false", "training.checkpoint_every=null",
        "training.report_to=none", "training.warmup_steps=0", "training.halt_exploration=0", "eval.batch_size=5", *extra,
    ]
    if eval_file:
        overrides.append(f"data.eval_file={eval_file}")
    return load_recipe(None, overrides)


def test_the_stream_encodes_the_rows_the_in_memory_path_encodes(base: str, tmp_path) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", sorted_rows(ROWS))
    in_memory = prepare_data(recipe_for(base, train_file, tmp_path / "a"), load_tokenizer(recipe_for(base, train_file, tmp_path / "a")))
    recipe = recipe_for(base, train_file, tmp_path / "b", "data.streaming=true", "data.shuffle_buffer=0")
    streamed = prepare_data(recipe, load_tokenizer(recipe))
    assert (streamed.output_kind, streamed.label_names, streamed.max_length) == (in_memory.output_kind, in_memory.label_names, in_memory.max_length)
    assert len(streamed.train) == len(in_memory.train) == ROWS
    for row, expected in zip(streamed.train, in_memory.train, strict=True):  # file order: shuffle_buffer=0
        for column in ("input_ids", "attention_mask", "labels", "cell_positions"):
            assert list(row[column]) == list(expected[column])


def test_streaming_trains_to_the_in_memory_weights(base: str, tmp_path) -> None:
    rows = sorted_rows(ROWS)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", sorted_rows(7, seed=1))
    # One batch of every row, 3 epochs: each process of each path sees the same rows at every optimizer step.
    settings = (f"training.batch_size={ROWS}", "training.epochs=3")
    in_memory = train_recipe(recipe_for(base, train_file, tmp_path / "memory", *settings, eval_file=eval_file))
    streamed = train_recipe(recipe_for(base, train_file, tmp_path / "stream", *settings, "data.streaming=true", eval_file=eval_file))
    assert streamed.global_step == in_memory.global_step == 3 * 2
    memory_weights = load_file(os.path.join(tmp_path / "memory", WEIGHTS_NAME))
    stream_weights = load_file(os.path.join(tmp_path / "stream", WEIGHTS_NAME))
    assert memory_weights.keys() == stream_weights.keys()
    for name, tensor in memory_weights.items():
        torch.testing.assert_close(stream_weights[name], tensor, rtol=0, atol=1e-5, msg=name)
    assert streamed.eval_results["num_examples"] == in_memory.eval_results["num_examples"] == 7
    assert streamed.eval_results["accuracy"] == pytest.approx(in_memory.eval_results["accuracy"])


def test_the_stream_never_holds_more_than_its_buffer(base: str, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    total, buffer, batch = 300, 8, 4
    train_file = write_jsonl(tmp_path / "big.jsonl", sorted_rows(total))
    read = [0]
    real_rows = streaming._pair_rows

    def counting_rows(*args, **kwargs):
        for row in real_rows(*args, **kwargs):
            read[0] += 1
            yield row

    recipe = recipe_for(base, train_file, tmp_path / "run", "data.streaming=true", f"data.shuffle_buffer={buffer}", "data.max_length=16")
    data = prepare_data(recipe, load_tokenizer(recipe))  # the first pass reads every line once (and keeps none)
    monkeypatch.setattr(streaming, "_pair_rows", counting_rows)
    loader = iter(DataLoader(data.train, batch_size=batch, collate_fn=functools.partial(collate, pad_token_id=0)))
    first = next(loader)
    assert first["input_ids"].shape[0] == batch
    assert read[0] <= buffer + batch + 1, f"{read[0]} rows read for the first batch of {batch} with a buffer of {buffer}"
    assert sum(1 for _ in loader) == total // batch - 1
    assert read[0] == total
    data.train.set_epoch(1)  # another epoch, another order (the buffer is reseeded)
    again = next(iter(DataLoader(data.train, batch_size=batch, collate_fn=functools.partial(collate, pad_token_id=0))))
    assert not torch.equal(again["input_ids"], first["input_ids"])


def test_a_malformed_row_names_the_file_and_line(base: str, tmp_path) -> None:
    rows = sorted_rows(10)
    train_file = write_jsonl(tmp_path / "train.jsonl", rows, {5: '{"input": "1 2", "output": '})
    recipe = recipe_for(base, train_file, tmp_path / "run", "data.streaming=true")
    with pytest.raises(DataError, match=r"train\.jsonl, line 5: invalid JSON"):
        prepare_data(recipe, load_tokenizer(recipe))  # the first pass, before any backbone loads
    skipping = recipe_for(base, train_file, tmp_path / "run", "data.streaming=true", "data.skip_bad_rows=true")
    data = prepare_data(skipping, load_tokenizer(skipping))
    assert len(data.train) == 10 and any("1 malformed row" in line for line in data.summary)

    misaligned = write_jsonl(tmp_path / "misaligned.jsonl", rows, {7: json.dumps({"input": "1 2 3", "output": "1 2"})})
    recipe = recipe_for(base, misaligned, tmp_path / "run", "data.streaming=true", "data.output_kind=aligned")
    with pytest.raises(DataError, match=r"misaligned\.jsonl, line 7: the output has another number of cells"):
        prepare_data(recipe, load_tokenizer(recipe))

    # An error found only when a row is encoded, while streaming, names its line too.
    long_row = write_jsonl(tmp_path / "long.jsonl", rows, {9: json.dumps({"input": "1 2 3 4 5 1 2 3 4 5", "output": "1 1 2 2 3 3 4 4 5 5"})})
    recipe = recipe_for(base, long_row, tmp_path / "run", "data.streaming=true", "data.max_length=12", "data.shuffle_buffer=0")
    data = prepare_data(recipe, load_tokenizer(recipe))
    with pytest.raises(DataError, match=r"long\.jsonl, line 9: the input is \d+ tokens long, more than max_length=12"):
        list(data.train)


@pytest.mark.parametrize(("setting", "named"), [
    ("training.use_feature_cache=true", "training.use_feature_cache=false"),
    ("model.layer=auto", "a numbered model.layer"),
    ("training.schedule=persistent", "training.schedule=per_batch"),
    ("training.calibrate_halting=0.1", "training.calibrate_halting=0"),
])
def test_what_a_stream_cannot_do_is_named_with_its_setting(base: str, tmp_path, setting: str, named: str) -> None:
    train_file = write_jsonl(tmp_path / "train.jsonl", sorted_rows(6))
    recipe = recipe_for(base, train_file, tmp_path / "run", "data.streaming=true", setting)
    with pytest.raises(RecipeError, match=named):
        prepare_data(recipe, load_tokenizer(recipe))


def test_a_json_array_is_refused_with_the_way_out(tmp_path) -> None:
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(sorted_rows(3)), encoding="utf-8")
    with pytest.raises(DataError, match="one JSON array.*JSON lines"):
        streaming.scan_pairs(path)
