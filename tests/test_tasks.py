"""The task suite: valid, unique puzzles; validity-preserving augmentations; disjoint splits; scoring; JSONL."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections import deque

import pytest

from latentreason.tasks import TASKS, Task, get_task, list_tasks, register_task
from latentreason.tasks.addition import AdditionTask
from latentreason.tasks.arc import load_arc, pass_at_2
from latentreason.tasks.sort_words import number_to_word
from latentreason.tasks.sudoku import AUGMENTATIONS, BOX_SHAPES, count_solutions, digits_of, find_solutions

SMALL = {
    "sudoku": {"size": 4},
    "maze": {"size": 9},
    "sort_words": {"length": 6},
    "addition": {"digits": 6},
    "parity": {"length": 10},
    "permutations": {"length": 6},
    "shell_game": {"length": 3},
    "arc": {"max_grid_size": 6, "max_demonstrations": 2},
}


# --- independent checkers (deliberately not the task code) -----------------------------------------
def sudoku_units(size: int) -> list[list[int]]:
    box_rows, box_cols = BOX_SHAPES[size]
    rows = [[r * size + c for c in range(size)] for r in range(size)]
    columns = [[r * size + c for r in range(size)] for c in range(size)]
    boxes = [
        [(top + r) * size + left + c for r in range(box_rows) for c in range(box_cols)]
        for top in range(0, size, box_rows)
        for left in range(0, size, box_cols)
    ]
    return rows + columns + boxes


def naive_count(puzzle: list[int], size: int, limit: int = 2) -> int:
    """Row-major backtracking without heuristics: a second opinion on uniqueness."""
    units = sudoku_units(size)
    peers = [{p for unit in units if i in unit for p in unit} - {i} for i in range(size * size)]
    grid = list(puzzle)

    def count(position: int) -> int:
        while position < len(grid) and grid[position]:
            position += 1
        if position == len(grid):
            return 1
        total = 0
        for digit in range(1, size + 1):
            if all(grid[p] != digit for p in peers[position]):
                grid[position] = digit
                total += count(position + 1)
                grid[position] = 0
                if total >= limit:
                    break
        return total

    return count(0)


def assert_valid_sudoku(example: dict, size: int, givens: int) -> None:
    puzzle = [int(c) for c in example["input"].split()]
    solution = [int(c) for c in example["output"].split()]
    assert len(puzzle) == len(solution) == size * size
    assert sum(d != 0 for d in puzzle) == givens
    assert all(p in (0, s) for p, s in zip(puzzle, solution)), "solution contradicts a given"
    for unit in sudoku_units(size):
        assert sorted(solution[i] for i in unit) == list(range(1, size + 1))
    assert count_solutions(puzzle, size) == 1


def maze_paths(cells: list[str], size: int) -> tuple[int, int]:
    """Length (in cells) of the shortest S->G path and the number of shortest paths, by BFS."""
    start, goal = cells.index("S"), cells.index("G")
    distance, ways, queue = {start: 0}, {start: 1}, deque([start])
    while queue:
        here = queue.popleft()
        row, col = divmod(here, size)
        for r, c in ((row + 1, col), (row - 1, col), (row, col + 1), (row, col - 1)):
            there = r * size + c
            if 0 <= r < size and 0 <= c < size and cells[there] != "#":
                if there not in distance:
                    distance[there], ways[there] = distance[here] + 1, 0
                    queue.append(there)
                if distance[there] == distance[here] + 1:
                    ways[there] += ways[here]
    return distance[goal] + 1, ways[goal]


def assert_valid_maze(example: dict, size: int) -> None:
    cells, marked = example["input"].split(), example["output"].split()
    assert len(cells) == len(marked) == size * size
    assert set(cells) <= {"#", ".", "S", "G"} and set(marked) <= {"#", ".", "*"}
    assert cells.count("S") == cells.count("G") == 1
    assert all((c == "#") == (m == "#") for c, m in zip(cells, marked)), "walls must be copied"
    path = {i for i, m in enumerate(marked) if m == "*"}
    assert {cells.index("S"), cells.index("G")} <= path
    length, count = maze_paths(cells, size)
    assert count == 1, "the shortest path must be unique"
    assert len(path) == length
    # The marked cells form one chain from S to G: S and G have one marked neighbour, the rest two.
    for i in path:
        row, col = divmod(i, size)
        neighbours = sum(n in path for n in (i - size, i + size) + ((i - 1,) if col else ()) + ((i + 1,) if col < size - 1 else ()))
        assert neighbours == (1 if cells[i] in ("S", "G") else 2)


# --- registry ----------------------------------------------------------------------------------
def test_registry_lists_every_task() -> None:
    assert list_tasks() == sorted(SMALL)
    assert all(issubclass(TASKS[name], Task) and TASKS[name].name == name for name in SMALL)


def test_get_task_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="registered tasks: addition, arc, maze"):
        get_task("sudokuu")
    with pytest.raises(ValueError, match="no option 'sizes'.*size"):
        get_task("sudoku", sizes=4)
    with pytest.raises(ValueError, match="size` must be one of"):
        get_task("sudoku", size=5)
    with pytest.raises(ValueError, match="givens"):
        get_task("sudoku", size=9, givens=12)
    with pytest.raises(ValueError, match="odd"):
        get_task("maze", size=10)
    with pytest.raises(ValueError, match="length"):
        get_task("sort_words", length=65)
    with pytest.raises(ValueError, match="Unknown split"):
        get_task("parity").get_example("validation", 0)
    with pytest.raises(IndexError, match="out of range"):
        get_task("parity", num_test=3).get_example("test", 3)
    with pytest.raises(ValueError, match="already registered"):
        register_task(type("Other", (Task,), {"name": "sudoku"}))


# --- sudoku ------------------------------------------------------------------------------------
def test_solver_counts_hand_made_cases() -> None:
    assert len(find_solutions([0] * 16, 4, limit=1000)) == 288  # the number of 4x4 Sudoku grids
    solved = [1, 2, 3, 4, 3, 4, 1, 2, 2, 1, 4, 3, 4, 3, 2, 1]
    assert count_solutions(solved, 4) == 1
    swappable = list(solved)
    for i in (0, 1, 8, 9):  # 1 2 / 2 1 in two boxes of the same columns: both orders fit
        swappable[i] = 0
    assert count_solutions(swappable, 4) == naive_count(swappable, 4) == 2
    assert count_solutions([1, 1] + [0] * 14, 4) == 0


@pytest.mark.parametrize("size", [4, 6, 9])
def test_generated_sudokus_are_valid_and_unique(size: int) -> None:
    for seed in (0, 1, 2):
        task = get_task("sudoku", size=size, seed=seed, num_train=2, num_test=2)
        for split in ("train", "test"):
            for index in range(2):
                example = task.get_example(split, index)
                assert_valid_sudoku(example, size, task.options.givens)
                if size < 9:
                    assert naive_count([int(c) for c in example["input"].split()], size) == 1


@pytest.mark.parametrize("size", [4, 6, 9])
def test_sudoku_augmentations_keep_validity_and_are_seeded(size: int) -> None:
    task = get_task("sudoku", size=size, num_train=3, num_test=1, seed=3)
    originals = [task.get_example("train", i) for i in range(3)]
    for kinds in [AUGMENTATIONS] + [(kind,) for kind in AUGMENTATIONS]:
        single = get_task("sudoku", size=size, augmentations=kinds)
        for seed, example in enumerate(originals):
            augmented = single.augment(example, random.Random(seed))
            assert_valid_sudoku(augmented, size, task.options.givens)
            assert augmented == single.augment(example, random.Random(seed))
    changed = {task.augment(originals[0], random.Random(seed))["input"] for seed in range(5)}
    assert len(changed) > 1


def test_sudoku_transpose_only_where_boxes_are_square() -> None:
    for size, may_transpose in ((4, True), (6, False)):
        task = get_task("sudoku", size=size, augmentations=("transpose",), num_train=1, num_test=1)
        example = task.get_example("train", 0)
        results = {task.augment(example, random.Random(seed))["input"] for seed in range(8)}
        assert (len(results) > 1) == may_transpose


def symmetry_class(puzzle: list[int], size: int) -> tuple[int, ...]:
    """The smallest relabelled grid over every band/stack/row/column permutation and transpose: brute force."""
    box_rows, box_cols = BOX_SHAPES[size]

    def line_orders(block: int) -> list[list[int]]:
        within = list(itertools.permutations(range(block)))
        return [
            [band * block + line for band, lines in zip(bands, inner) for line in lines]
            for bands in itertools.permutations(range(size // block))
            for inner in itertools.product(within, repeat=size // block)
        ]

    grids = [puzzle] + ([[puzzle[c * size + r] for r in range(size) for c in range(size)]] if box_rows == box_cols else [])
    best = None
    for grid in grids:
        for rows in line_orders(box_rows):
            for columns in line_orders(box_cols):
                names = {0: 0}
                relabelled = tuple(names.setdefault(grid[r * size + c], len(names)) for r in rows for c in columns)
                best = relabelled if best is None or relabelled < best else best
    return best


@pytest.mark.parametrize("size", [4, 6, 9])
def test_sudoku_key_is_shared_by_every_augmented_variant(size: int) -> None:
    task = get_task("sudoku", size=size, num_train=4, num_test=1, seed=5)
    for index in range(4):
        example = task.get_example("train", index)
        variant = example
        for seed in range(6):  # compositions of random symmetries, every kind switched on
            variant = task.augment(variant, random.Random(seed))
            assert task.canonical_key(variant) == task.canonical_key(example)
    keys = {task.canonical_key(task.get_example("train", i)) for i in range(4)}
    assert len(keys) == 4  # different puzzles, different keys


def test_sudoku_splits_share_no_puzzle_up_to_symmetry() -> None:
    """4x4 with 6 givens has only a few hundred puzzles up to symmetry: a key that missed band or row
    permutations would let most test puzzles into training in disguise. Checked by brute force."""
    task = get_task("sudoku", size=4, givens=6, num_train=150, num_test=60, seed=0)
    test_classes = {symmetry_class(digits_of(task.get_example("test", i)["input"]), 4) for i in range(60)}
    train_classes = {symmetry_class(digits_of(task.get_example("train", i)["input"]), 4) for i in range(150)}
    assert test_classes.isdisjoint(train_classes)
    # The key is not much stricter than the classes themselves: few classes share a key.
    keys = {task.canonical_key(task.get_example("train", i)) for i in range(150)}
    assert len(keys) >= 0.9 * len(train_classes)


# --- maze --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("size", "openings"), [(9, 0), (11, 6), (15, 0)])
def test_mazes_mark_the_unique_shortest_path(size: int, openings: int) -> None:
    task = get_task("maze", size=size, extra_openings=openings, num_train=4, num_test=2, seed=1)
    for split in ("train", "test"):
        for index in range(task.num_examples(split)):
            example = task.get_example(split, index)
            assert_valid_maze(example, size)
            assert len([c for c in example["output"].split() if c == "*"]) >= size  # min_path_length default


def test_maze_augmentations_are_the_eight_symmetries() -> None:
    task = get_task("maze", size=9, extra_openings=3, num_train=2, num_test=1)
    example = task.get_example("train", 0)
    variants = {task.augment(example, random.Random(seed))["input"] for seed in range(40)}
    assert len(variants) == 8
    for seed in range(8):
        augmented = task.augment(example, random.Random(seed))
        assert_valid_maze(augmented, 9)
        assert augmented == task.augment(example, random.Random(seed))
        assert task.canonical_key(augmented) == task.canonical_key(example)


# --- sequence tasks ----------------------------------------------------------------------------
def test_addition_outputs_the_sum_aligned_per_digit() -> None:
    task = get_task("addition", digits=12, num_train=60, num_test=20, carry_chains=0.5)
    width = 13
    for split in ("train", "test"):
        for index in range(task.num_examples(split)):
            example = task.get_example(split, index)
            a, b = AdditionTask.read(example["input"])
            output = example["output"].split()
            assert len(output) == len(example["input"].split()) == 2 * width + 1
            assert int("".join(output[:width])) == a + b
            assert output[width:] == ["_"] * (width + 1)
            swapped = task.augment(example, random.Random(index))
            assert swapped["output"] == example["output"] and AdditionTask.read(swapped["input"]) in ((a, b), (b, a))
    assert get_task("addition", digits=3).write(58, 67) == {"input": "0 0 5 8 + 0 0 6 7", "output": "0 1 2 5 _ _ _ _ _"}


def test_addition_carry_chains_reach_the_top_digit() -> None:
    task = get_task("addition", digits=10, carry_chains=1.0, num_train=30, num_test=1)
    for index in range(30):
        a, b = AdditionTask.read(task.get_example("train", index)["input"])
        length = max(len(str(a)), len(str(b)))
        assert a + b >= 10**length, "the carry must run out of the top digit"


def test_number_words_are_single_hyphenated_cells() -> None:
    assert [number_to_word(n) for n in (0, 15, 40, 42, 100, 342, 999)] == [
        "zero", "fifteen", "forty", "forty-two", "one-hundred", "three-hundred-forty-two", "nine-hundred-ninety-nine",
    ]  # fmt: skip
    assert len({number_to_word(n) for n in range(1000)}) == 1000


@pytest.mark.parametrize("as_digits", [False, True])
def test_sort_words_sorts_by_value(as_digits: bool) -> None:
    task = get_task("sort_words", length=12, min_length=3, max_value=999, as_digits=as_digits, num_train=20, num_test=5)
    value_of = {word: value for value, word in enumerate(task.labels())}
    lengths = set()
    for index in range(20):
        example = task.get_example("train", index)
        items, answer = example["input"].split(), example["output"].split()
        lengths.add(len(items))
        assert [value_of[w] for w in answer] == sorted(value_of[w] for w in items)
        shuffled = task.augment(example, random.Random(index))
        assert shuffled["output"] == example["output"] and sorted(shuffled["input"].split()) == sorted(items)
    assert len(lengths) > 1 and min(lengths) >= 3 and max(lengths) <= 12


def test_parity_is_the_running_xor() -> None:
    task = get_task("parity", length=12, num_train=10, num_test=5)
    for index in range(10):
        example = task.get_example("train", index)
        bits, running = example["input"].split(), example["output"].split()
        assert running == [str(sum(int(b) for b in bits[: i + 1]) % 2) for i in range(len(bits))]


# --- splits, determinism, datasets -------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
def test_splits_never_overlap(name: str) -> None:
    task = get_task(name, num_train=30 if name != "arc" else None, num_test=10 if name != "arc" else None, **SMALL[name])

    def digests(split: str, key) -> set[str]:
        return {hashlib.sha256(key(task.get_example(split, i)).encode()).hexdigest() for i in range(task.num_examples(split))}

    for key in (lambda example: example["input"], task.canonical_key):
        assert digests("train", key).isdisjoint(digests("test", key))


def test_train_draws_that_hit_the_test_split_are_redrawn() -> None:
    task = get_task("parity", length=4, num_test=10, num_train=40)  # 16 strings: collisions are certain
    test_inputs = {task.get_example("test", i)["input"] for i in range(10)}
    train_inputs = [task.get_example("train", i)["input"] for i in range(40)]
    assert set(train_inputs).isdisjoint(test_inputs)
    with pytest.raises(RuntimeError, match="too small"):
        get_task("parity", length=2, num_test=40, num_train=1).get_example("train", 0)


def test_examples_are_deterministic_given_the_seed() -> None:
    def first(seed: int) -> list[dict]:
        task = get_task("sudoku", size=6, seed=seed, num_train=3, num_test=2)
        return [task.get_example("train", i) for i in range(3)]

    assert first(0) == first(0)
    assert first(0) != first(1)
    only_digits = get_task("sudoku", size=6, seed=0, num_train=3, num_test=2, augmentations=("digits",))
    assert [only_digits.get_example("train", i) for i in range(3)] == first(0)  # augmentation options do not change puzzles


def test_to_dataset_has_exactly_input_and_output() -> None:
    plain = get_task("maze", size=9, num_train=6, num_test=3)
    augmented = get_task("maze", size=9, num_train=6, num_test=3, augment=True, augment_copies=2)
    train = augmented.to_dataset("train")
    assert train.column_names == ["input", "output"]
    assert len(train) == 18 and len(augmented.to_dataset("test")) == 3
    assert train[0] == plain.to_dataset("train")[0]  # originals come first, then their copies
    assert train["input"] == augmented.to_dataset("train")["input"]  # augmentation is seeded
    assert get_task("arc", **SMALL["arc"], num_test=4).to_dataset("test").column_names == ["input", "output"]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_jsonl_round_trip(name: str, tmp_path) -> None:
    task = get_task(name, num_train=5, num_test=3, augment=True, **SMALL[name])
    path = tmp_path / f"{name}.jsonl"
    task.export_jsonl(str(path), "train")
    expected = task.examples("train")
    with open(path) as file:
        assert [json.loads(line) for line in file] == expected
    data = pytest.importorskip("latentreason.data", reason="latentreason/data.py (load_pairs) is not written yet")
    loaded = data.load_pairs(str(path))
    assert [{"input": r["input"], "output": r["output"]} for r in loaded] == expected


# --- scoring -----------------------------------------------------------------------------------
def test_score_counts_cells_and_exact_match() -> None:
    task = get_task("sudoku", size=4)
    assert task.score("1 2 3 4", "1 2 3 4") == {"cell_accuracy": 1.0, "exact": 1.0}
    assert task.score("1 2 4 4", "1 2 3 4") == {"cell_accuracy": 0.75, "exact": 0.0}
    assert task.score("1 2", "1 2 3 4") == {"cell_accuracy": 0.5, "exact": 0.0}  # missing cells are wrong
    assert task.score("1 2 3 4 5 6 7 8", "1 2 3 4") == {"cell_accuracy": 0.5, "exact": 0.0}  # so are extra ones
    assert get_task("arc").score(" 1  2 |\n3 4 ", "1 2 | 3 4")["exact"] == 1.0  # whitespace does not matter


# --- ARC ---------------------------------------------------------------------------------------
def test_arc_loads_the_packaged_data() -> None:
    data = load_arc("arc-agi-1")
    assert len(data["train"]) == len(data["eval"]) == 400
    task = get_task("arc", max_grid_size=10, leave_one_out=False, max_demonstrations=2)
    example = task.get_example("test", 0)
    parts = example["input"].split()
    assert parts.count("in") == 3 and parts.count("out") == 2
    assert all(len(row.split()) <= 10 for row in example["output"].split("|"))
    with_demos = get_task("arc", max_grid_size=10, max_demonstrations=2)
    assert with_demos.num_examples("train") > task.num_examples("train") > 0
    assert get_task("arc", max_grid_size=10, max_cells=200).num_examples("train") < with_demos.num_examples("train")


def test_arc_augmentation_inverts_and_keeps_background() -> None:
    task = get_task("arc", max_grid_size=8, max_demonstrations=2)
    example = task.get_example("test", 1)
    shapes = set()
    for seed in range(12):
        augmented, inverse = task.augment_with_inverse(example, random.Random(seed))
        assert inverse(augmented["output"]) == example["output"]
        assert augmented["input"].split().count("0") == example["input"].split().count("0")  # background stays 0
        shapes.add(augmented["output"])
    assert len(shapes) > 1


def test_pass_at_2_votes_over_inverse_augmented_predictions() -> None:
    task = get_task("arc", max_grid_size=8, max_demonstrations=2)
    example = task.get_example("test", 0)
    views = [task.augment_with_inverse(example, random.Random(seed)) for seed in range(4)]
    inverses = [inverse for _, inverse in views]
    right = [augmented["output"] for augmented, _ in views]
    wrong = "1 1 | 1 1"
    # Three views agree on the right answer once mapped back, though their texts differ.
    assert pass_at_2(right[:3] + [wrong], inverses, example["output"]) == {"pass_at_1": 1.0, "pass_at_2": 1.0}
    same = [lambda text: text] * 5
    assert pass_at_2(["3 | 3", "3 | 3", "1 | 2", "4", "not a grid |"], same, "1 | 2") == {"pass_at_1": 0.0, "pass_at_2": 1.0}
    assert pass_at_2(["3", "3", "4", "4", "1 | 2"], same, "1 | 2") == {"pass_at_1": 0.0, "pass_at_2": 0.0}
    assert pass_at_2(["9 x | 1", "1 | 2"], [inverses[0], same[0]], "1 | 2")["pass_at_1"] == 1.0  # malformed: no vote
    with pytest.raises(ValueError, match="one per augmentation"):
        pass_at_2(["1"], [], "1")
