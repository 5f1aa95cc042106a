"""The state-tracking tasks (`permutations`, `shell_game`), checked against simulations written here.

Each simulation moves physical cups in a Python list, independently of the task code's algebra
(one-line notation and `compose`), and reads the task's text back with its own parser.
"""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from latentreason.tasks import get_task
from latentreason.tasks.shell_game import NOT_ANSWER

WORDS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine".split())}
ORDINALS = {w: i for i, w in enumerate("zeroth first second third fourth fifth sixth seventh eighth ninth".split())}


def simulate_permutations(cells: list[str], size: int, as_swaps: bool) -> tuple[list[str], list[str]]:
    """Ball position and whole arrangement after each step, by moving cup objects in a list."""
    row = list(range(1, size + 1))  # row[position] = the cup (named by its starting position) standing there
    balls, states = [], []
    for cell in cells:
        if as_swaps:
            a, b = int(cell[0]) - 1, int(cell[1]) - 1
            row[a], row[b] = row[b], row[a]
        else:
            moved = [0] * size
            for position, destination in enumerate(cell):
                moved[int(destination) - 1] = row[position]
            row = moved
        balls.append(str(row.index(1) + 1))
        states.append("".join(str(row.index(cup) + 1) for cup in range(1, size + 1)))
    return balls, states


@pytest.mark.parametrize("group,size", [("s3", 3), ("s4", 4), ("s5", 5)])
@pytest.mark.parametrize("input_kind", ["swaps", "elements"])
@pytest.mark.parametrize("output_kind", ["ball", "state"])
def test_permutations_labels_match_a_simulation(group: str, size: int, input_kind: str, output_kind: str) -> None:
    task = get_task("permutations", group=group, length=9, min_length=3, input=input_kind, output=output_kind, num_train=40, num_test=10)
    lengths = set()
    for split in ("train", "test"):
        for example in task.examples(split):
            cells = example["input"].split()
            lengths.add(len(cells))
            balls, states = simulate_permutations(cells, size, input_kind == "swaps")
            assert example["output"].split() == (balls if output_kind == "ball" else states)
            assert set(example["output"].split()) <= set(task.labels())
            if input_kind == "swaps":
                assert all(len(cell) == 2 and cell[0] < cell[1] <= str(size) for cell in cells)
    assert min(lengths) >= 3 and max(lengths) <= 9 and len(lengths) > 1


def test_permutations_draws_every_element_and_splits_never_overlap() -> None:
    task = get_task("permutations", group="s3", length=4, input="elements", num_train=300, num_test=50)
    train, test = task.examples("train"), task.examples("test")
    assert not {row["input"] for row in train} & {row["input"] for row in test}
    assert {cell for row in train for cell in row["input"].split()} == {"123", "132", "213", "231", "312", "321"}
    assert len(task.labels()) == 3
    assert len(get_task("permutations", group="s5", output="state").labels()) == 120


def test_permutations_are_deterministic_and_exported(tmp_path) -> None:
    first = get_task("permutations", length=6, num_train=5, num_test=3, seed=4)
    again = get_task("permutations", length=6, num_train=5, num_test=3, seed=4)
    other = get_task("permutations", length=6, num_train=5, num_test=3, seed=5)
    assert first.examples("train") == again.examples("train") != other.examples("train")
    path = tmp_path / "s5.jsonl"
    first.export_jsonl(str(path), "train")
    assert [json.loads(line) for line in path.read_text().splitlines()] == first.examples("train")


@pytest.mark.parametrize("options,message", [
    ({"group": "s6"}, "group"), ({"length": 0}, "length"), ({"min_length": 20, "length": 8}, "min_length"),
    ({"input": "cycles"}, "input"), ({"output": "parity"}, "output"),
])
def test_permutations_bad_options_are_named(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"`{message}`"):
        get_task("permutations", **options)


def parse_shell_game(text: str) -> tuple[int, list[tuple[int, int]]]:
    """The starting cup and the swaps of a game, read with this test's own parser."""
    def number(token: str) -> int:
        token = token.strip(".").lower()
        return int(token) if token.isdigit() else WORDS.get(token) or ORDINALS[token]

    sentences = [s for s in re.split(r"(?<=\.)\s+", text) if s]
    numbers = [[number(w) for w in s.split() if w.strip(".").lower() in WORDS or w.strip(".").lower() in ORDINALS or w.strip(".").isdigit()]
               for s in sentences]
    (start,), swaps = numbers[0], [tuple(pair) for pair in numbers[1:]]
    assert all(len(pair) == 2 and pair[0] != pair[1] for pair in swaps)
    return start, swaps


@pytest.mark.parametrize("phrasing", ["train", "held_out"])
@pytest.mark.parametrize("cups", [3, 5])
def test_shell_game_labels_match_a_simulation(phrasing: str, cups: int) -> None:
    task = get_task("shell_game", cups=cups, length=7, min_length=2, phrasing=phrasing, num_train=40, num_test=10)
    for example in task.examples("train") + task.examples("test"):
        words, cells = example["input"].split(), example["output"].split()
        assert len(words) == len(cells)
        start, swaps = parse_shell_game(example["input"])
        row = ["ball" if cup == start else "empty" for cup in range(1, cups + 1)]
        expected = [start]
        for a, b in swaps:
            assert 1 <= a <= cups and 1 <= b <= cups
            row[a - 1], row[b - 1] = row[b - 1], row[a - 1]
            expected.append(row.index("ball") + 1)
        labelled = [(word, cell) for word, cell in zip(words, cells) if cell != NOT_ANSWER]
        assert [int(cell) for _, cell in labelled] == expected
        assert all(word.endswith(".") for word, _ in labelled)  # each sentence's last word carries its answer
        assert task.final_answer(example["output"]) == str(expected[-1])


def test_held_out_phrasings_share_no_sentence_form_with_training() -> None:
    def forms(phrasing: str) -> set[str]:
        task = get_task("shell_game", length=6, phrasing=phrasing, num_train=200, num_test=0)
        sentences = {s for row in task.examples("train") for s in re.split(r"(?<=\.)\s+", row["input"])}
        return {re.sub(r"\b(\d|" + "|".join(list(WORDS) + list(ORDINALS)) + r")\b", "#", s) for s in sentences}

    train, held_out = forms("train"), forms("held_out")
    assert len(train) >= 4 and len(held_out) >= 6
    assert not train & held_out
    train_words = {w.strip(".").lower() for form in train for w in form.split()}
    assert {"exchange", "switch", "trade", "boxes", "shells"} - train_words == {"exchange", "switch", "trade", "boxes", "shells"}


def test_shell_game_encodes_with_a_real_tokenizer() -> None:
    from transformers import AutoTokenizer

    from latentreason.data import PairEncoder
    from latentreason.recipe import resolve_base

    tokenizer = AutoTokenizer.from_pretrained(resolve_base("packaged:all-MiniLM-L6-v2"))
    task = get_task("shell_game", length=5, num_train=4, num_test=0, phrasing="held_out")
    encoder = PairEncoder(tokenizer, "aligned", task.labels())
    for example in task.examples("train"):
        row = encoder.encode(example)
        labelled = [label for label in row["labels"] if label != -100]
        assert [task.labels()[label] for label in labelled] == example["output"].split()


def test_state_tracking_benchmark_tiny_preset(tiny_benchmarks) -> None:
    """The benchmark at its tiny preset: every part, spreads that are the seeds' own figures, a report read from them."""
    from benchmarks import state_tracking

    settings = state_tracking.PRESETS["tiny"]
    result = tiny_benchmarks[1]["state_tracking"]

    assert [(row["length"], row["name"]) for row in result["depth"]] == [(3, name) for name in settings.comparators]
    for row in result["depth"]:
        per_seed = row["data"]["per_seed"]
        assert sorted(per_seed) == ["0", "1"]
        for key in ("last_cell", "exact_match"):
            values = [per_seed[seed][key] for seed in per_seed]
            assert row["data"][key]["mean"] == pytest.approx(sum(values) / 2)
            assert row["data"][key]["min"] == min(values) and row["data"][key]["max"] == max(values)
            assert all(0.0 <= value <= 1.0 for value in values)
        assert row["data"]["exact_match"]["max"] <= row["data"]["last_cell"]["max"] or row["data"]["exact_match"]["max"] == 0
    slots = next(row for row in result["depth"] if row["name"] == "slots")
    reasoner = next(row for row in result["depth"] if row["name"] == "reasoner")
    assert slots["trainable_parameters"] == reasoner["trainable_parameters"]  # the same net, only the recursion differs
    assert slots["layers_per_step"] < reasoner["layers_per_step"]

    longer = result["longer"]
    assert longer["step_counts"] == [settings.common.supervision_steps * m for m in settings.step_multipliers]
    one_pass = next(row for row in longer["rows"] if row["name"] == "one_pass")
    for by_count in one_pass["scores"].values():  # one step is all a one-pass head has: more steps change nothing
        counts = list(by_count)
        assert by_count[counts[0]] == by_count[counts[-1]]
    assert set(one_pass["scores"]) == {"3", "6"}

    language = result["language"]
    assert {row["name"] for row in language["rows"]} == set(settings.language_comparators)
    assert set(language["rows"][0]["scores"]) == {"train_phrasings", "held_out_phrasings", "length_4"}

    language_lm = result["language_lm"]
    assert [row["name"] for row in language_lm["rows"]] == list(settings.lm_comparators)
    for row in language_lm["rows"]:
        assert set(row["scores"]) == {"train_phrasings", "held_out_phrasings", "length_4"}
        for label, by_count in row["scores"].items():
            per_seed = [next(run for run in language_lm["runs"][seed] if run["name"] == row["name"])["scores"][label]["answer"]["exact_match"]
                        for seed in ("0", "1")]
            assert by_count["answer"]["exact_match"]["mean"] == pytest.approx(sum(per_seed) / 2)
            assert all(0.0 <= value <= 1.0 for value in per_seed)
    reasoner_lm = next(run for run in language_lm["runs"]["0"] if run["name"] == "reasoner")
    assert reasoner_lm["optimizer_steps"] == 4  # the tiny preset's training.max_steps reached the text_pairs recipe

    page = state_tracking.render(result)
    for row in result["depth"]:
        line = next(line for line in page.splitlines() if line.startswith(f"| {row['length']} | {row['name']} |"))
        assert f"{row['data']['last_cell']['mean']:.3f}" in line
    _check_reuse(state_tracking, settings, result)


def _check_reuse(state_tracking, settings, result) -> None:
    """`--reuse` keeps every seed's runs of the same settings and trains none of them again; other settings keep nothing."""
    import dataclasses
    import json

    stored = json.loads(json.dumps(result))  # as read back from the JSON file
    again = dataclasses.replace(settings, parts=("depth", "longer", "language", "language_lm"))
    trained, written = [], []
    originals = state_tracking.train_and_test, state_tracking.few_shot_run, state_tracking.lm_reasoner_run, state_tracking.accuracy.run
    state_tracking.train_and_test = lambda name, *args, **kwargs: trained.append(name)
    state_tracking.few_shot_run = lambda *args, **kwargs: trained.append("few_shot")
    state_tracking.lm_reasoner_run = lambda *args, **kwargs: trained.append("reasoner")

    def fake_accuracy_run(common):
        trained.append(("depth", common.task_options["length"], common.seed))
        return {"comparators": [{"name": name, "trainable_parameters": 1, "layers_per_step": 1, "data": {
            "all_steps": {"last_cell": 0.5, "exact_match": 0.25}, "optimizer_steps": 1, "train_seconds": 0.1}} for name in common.comparators]}

    state_tracking.accuracy.run = fake_accuracy_run
    try:
        rerun = state_tracking.run(again, previous=stored | {"settings": json.loads(json.dumps(dataclasses.asdict(again)))},
                                   progress=written.append)
        # a new length trains only its own runs; the partial result written after each one keeps the others
        longer_too = dataclasses.replace(settings, parts=("depth",), lengths=(*settings.lengths, 9))
        grown_partials: list[dict] = []
        grown = state_tracking.run(longer_too, previous=stored, progress=grown_partials.append)
        # a part not run now is carried over whole; one whose settings changed is not
        only_longer = dataclasses.replace(settings, parts=("longer",))
        carried = state_tracking.run(only_longer, previous=stored)
        changed = state_tracking.run(dataclasses.replace(only_longer, lm_shots=settings.lm_shots + 1), previous=stored)
    finally:
        (state_tracking.train_and_test, state_tracking.few_shot_run, state_tracking.lm_reasoner_run,
         state_tracking.accuracy.run) = originals
    assert trained == [("depth", 9, seed) for seed in settings.seeds]  # only the new length's runs
    assert rerun["depth"] == stored["depth"] and "partial" not in rerun
    for part in ("longer", "language", "language_lm"):
        assert rerun[part]["rows"] == stored[part]["rows"]
    assert written and all(w["partial"] for w in written)
    assert set(state_tracking.PARTS) <= set(written[-1])  # every part was on disk before the run returned
    assert [row for row in grown["depth"] if row["length"] != 9] == stored["depth"]
    assert {row["name"] for row in grown["depth"] if row["length"] == 9} == set(settings.comparators)
    assert len(grown_partials) == len(settings.seeds) + 1  # after each new (length, seed), then after the part
    first = grown_partials[0]
    assert {row["length"] for row in first["depth"]} == {*settings.lengths, 9} and "9/" + str(settings.seeds[1]) not in first["depth_runs"]
    assert grown["longer"] == stored["longer"] and grown["language_lm"] == stored["language_lm"]  # parts not run: carried over
    assert carried["depth"] == stored["depth"] and carried["language_lm"] == stored["language_lm"]
    assert "language_lm" not in changed and changed["depth"] == stored["depth"]
    assert state_tracking.previous_runs(dataclasses.replace(settings, train_length=4), stored, "longer") == {}
    # a result written before per-seed runs were stored: one seed's rows are read back as that seed's runs
    one_seed = dataclasses.replace(settings, seeds=(1,))
    legacy_rows = state_tracking.summarise_tests({1: stored["longer"]["runs"]["1"]})
    legacy = {"settings": json.loads(json.dumps(dataclasses.asdict(one_seed))), "longer": {"rows": json.loads(json.dumps(legacy_rows))}}
    read_back = state_tracking.previous_runs(dataclasses.replace(one_seed, seeds=(0, 1)), legacy, "longer")["1"]
    assert [run["name"] for run in read_back] == [run["name"] for run in stored["longer"]["runs"]["1"]]
    assert [run["scores"] for run in read_back] == [run["scores"] for run in stored["longer"]["runs"]["1"]]


def test_state_tracking_recipe_trains_a_users_own_pairs_from_the_command_line(tmp_path) -> None:
    """The recipe's header, as a user runs it: export pairs, train with only paths changed (and a short budget), predict."""
    import os
    import subprocess
    import sys

    from test_training import REPO

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, "-m", "latentreason.cli", *args], cwd=REPO, env=env, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    train, test, run = tmp_path / "train.jsonl", tmp_path / "test.jsonl", tmp_path / "run"
    cli("export-task", "permutations", str(train), "length=6", "min_length=1", "num_train=96", "num_test=16")
    cli("export-task", "permutations", str(test), "--split", "test", "length=6", "min_length=1", "num_train=96", "num_test=16")
    cli("train", "recipes/state_tracking.yaml", f"data.train_file={train}", f"data.eval_file={test}", f"training.output_dir={run}",
        "training.max_steps=6", "training.checkpoint_every=null", "reasoner.hidden_size=32", "training.progress_bar=false")
    results = json.loads((run / "eval_results.json").read_text())
    assert [row["step"] for row in results["per_step"]] == list(range(1, 9))  # N_sup = 8 refinement steps at test
    assert results["num_examples"] == 16 and "last_cell" in results["per_step"][-1]
    first = json.loads(test.read_text().splitlines()[0])
    predicted = cli("predict", str(run), first["input"]).stdout.strip().splitlines()[-1]
    assert len(predicted.split()) == len(first["input"].split())
    assert set(predicted.split()) <= {"1", "2", "3", "4", "5"}


def test_the_depth_part_trains_on_a_mixture_of_lengths_and_tests_on_exactly_the_length() -> None:
    """`depth_min_length`: the training games run 1..L swaps, the test games exactly L (`test_task_options`)."""
    from benchmarks import accuracy, state_tracking

    settings = state_tracking.PRESETS["tiny"]
    seen = []
    original = state_tracking.accuracy.run
    state_tracking.accuracy.run = lambda common: seen.append(common) or {"comparators": []}
    try:
        state_tracking.run_depth(dataclasses.replace(settings, lengths=(5,), seeds=(0,), comparators=(), depth_training={}))
        state_tracking.run_depth(dataclasses.replace(settings, lengths=(5,), seeds=(0,), comparators=(), depth_min_length=None))
        state_tracking.run_depth(dataclasses.replace(settings, lengths=(5,), seeds=(0,), comparators=()))  # the default curriculum
    finally:
        state_tracking.accuracy.run = original
    mixed, exact, curriculum = seen
    assert mixed.task_options["min_length"] == 1 and mixed.test_task_options == {"min_length": 5}
    assert "min_length" not in exact.task_options and exact.test_task_options == {}
    assert mixed.training == {} and curriculum.training == {"length_curriculum": 0.5}
    # `depth_training` reaches every comparator's TrainingConfig
    assert accuracy.training_config(curriculum, "unused", None).length_curriculum == 0.5
    assert accuracy.training_config(mixed, "unused", None).length_curriculum == 0.0
    with pytest.raises(ValueError, match=r"Unknown `training` field\(s\) \['length_curiculum'\]"):
        dataclasses.replace(mixed, training={"length_curiculum": 0.5})
    # a result written before `depth_training` and `common.training` existed reads as trained without them
    from benchmarks.harness import as_stored
    older = {key: value for key, value in as_stored(settings).items() if key != "depth_training"}
    older["common"] = {key: value for key, value in older["common"].items() if key != "training"}
    assert state_tracking.same_part({"depth": [], "settings": older}, dataclasses.replace(settings, depth_training={}), "depth")
    assert not state_tracking.same_part({"depth": [], "settings": older}, settings, "depth")

    # what the accuracy benchmark then reads: train games of every length up to 5, test games of exactly 5
    common = dataclasses.replace(mixed, task_options={**mixed.task_options, "num_train": 40, "num_test": 12})
    _, data, _ = accuracy.load_data(common)
    train_lengths = {len(text.split()) for text in data.train["input"]}
    assert len(train_lengths) > 1 and max(train_lengths) <= 5
    assert {len(text.split()) for text in data.eval["input"]} == {5} and len(data.eval) == 12
