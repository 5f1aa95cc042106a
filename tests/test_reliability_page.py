"""docs/reliability.md counts the cases each test tries: the counts on the page are the tests' own.

Each row of the page names where its count comes from (a table, a setting, a parameter); this reads
that source and the number the page gives beside it, so a test that grows or shrinks its cases fails
here until the page says so.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import test_cli_bad_values
import test_faults
import test_fuzz
import test_hostile_files
import test_hub

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text(encoding="utf-8")


def numbers(pattern: str) -> tuple[int, ...]:
    """The integers that `pattern` (a regex with groups, literal backticks) captures on the page; exactly one match."""
    matches = re.findall(pattern, PAGE)
    assert len(matches) == 1, f"docs/reliability.md: expected one match of {pattern!r}, found {len(matches)}"
    found = matches[0] if isinstance(matches[0], tuple) else (matches[0],)
    return tuple(int(value) for value in found)


def slow_seeds(function) -> int:
    """How many seeds `@pytest.mark.parametrize("seed", [...])` gives a test."""
    (mark,) = [mark for mark in function.pytestmark if mark.name == "parametrize"]
    return len(mark.args[1])


def test_kill_counts() -> None:
    default_kills, = numbers(r"(\d+) kills \(`kills=\d+` in `test_three_kills_anywhere_lose_nothing`\)")
    assert f"kills={default_kills}," in inspect.getsource(test_faults.test_three_kills_anywhere_lose_nothing)
    total, seeds, per_seed = numbers(r"\*slow\*: (\d+) more \((\d+) seeds x `kills=(\d+)` in `test_twenty_more_kills_lose_nothing`\)")
    slow = test_faults.test_twenty_more_kills_lose_nothing
    assert f"kills={per_seed}," in inspect.getsource(slow)
    assert seeds == slow_seeds(slow) and total == seeds * per_seed
    assert any(mark.name == "slow" for mark in slow.pytestmark)


def test_fuzz_counts() -> None:
    properties, default, default_setting, slow_properties, slow, slow_setting = numbers(
        r"(\d+) properties \(`PROPERTIES`\) x (\d+) examples \(`DEFAULT`, `max_examples=(\d+)`\); "
        r"\*slow\*: (\d+) x (\d+) more \(`SLOW`, `max_examples=(\d+)`\)"
    )
    assert properties == slow_properties == len(test_fuzz.PROPERTIES)
    assert default == default_setting == test_fuzz.DEFAULT.max_examples
    assert slow == slow_setting == test_fuzz.SLOW.max_examples


@pytest.mark.parametrize("pattern, count", [
    (r"\| (\d+) \(`BAD_FOLDERS`\)", len(test_hub.BAD_FOLDERS)),
    (r"\| (\d+) \(`HUGE_HEADERS`\)", len(test_hostile_files.HUGE_HEADERS)),
    (r"\| (\d+) files \(`PICKLES` and `CODE`\)", len(test_hostile_files.PICKLES) + len(test_hostile_files.CODE)),
    (r"\| (\d+) flags \(`BAD_VALUES`\)", len(test_cli_bad_values.BAD_VALUES)),
    (r", (\d+) values \(`CASES`\)", len(test_cli_bad_values.CASES)),
], ids=["damaged folders", "huge headers", "pickles and code", "cli flags", "cli values"])
def test_table_counts(pattern: str, count: int) -> None:
    assert numbers(pattern) == (count,)
