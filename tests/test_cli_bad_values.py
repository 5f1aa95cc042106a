"""Bad values at the command line: every flag that takes a value, given a wrong type or an out-of-range value.

Each must end in one argparse-style line on stderr (`latentreason CMD: error: ... FLAG ...`) and exit
status 2, never in a traceback, and before anything slow: the run folders here do not exist, so an
error about them instead of the flag means the flag was checked too late. Only `convert-trm --config`
is read after its checkpoint, so that command gets a real (tiny) checkpoint. The table is checked
against the parser itself: a new flag that takes a value fails
`test_every_flag_that_takes_a_value_is_in_the_table` until it gets its bad values here.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest
import torch

from latentreason import cli

MISSING_RUN = "/nonexistent/run"
AN_EXISTING_FILE = __file__
CHECKPOINT = "{checkpoint}"  # replaced by the `checkpoint` fixture's file

# The positional arguments each command needs before its flags.
COMMAND_LINES = {
    "eval": ["eval", MISSING_RUN],
    "predict": ["predict", MISSING_RUN, "1 2 3"],
    "plot": ["plot", MISSING_RUN],
    "push": ["push", MISSING_RUN, "user/reasoner"],
    "app": ["app", MISSING_RUN],
    "export-task": ["export-task", "sudoku", "/nonexistent/sudoku.jsonl"],
    "convert-trm": ["convert-trm", CHECKPOINT, "/nonexistent/trm-sudoku"],
}

# (command, flag) -> (a good value, the bad ones: wrong type first, then out of range).
BAD_VALUES: dict[tuple[str, str], tuple[str, list[str]]] = {
    ("eval", "--data"): (AN_EXISTING_FILE, ["/nonexistent/pairs.jsonl"]),
    ("eval", "--steps"): ("8", ["abc", "2.5", "0", "-3"]),
    ("eval", "--halt-threshold"): ("0.9", ["high", "0", "1", "1.5", "nan"]),
    ("eval", "--trajectories"): ("4", ["many", "0"]),
    ("eval", "--noise"): ("0.3", ["loud", "-1", "inf", "nan"]),
    ("eval", "--select"): ("vote", ["best"]),
    ("eval", "--show-wrong"): ("0", ["some", "-1"]),
    ("predict", "--steps"): ("8", ["abc", "0", "-2"]),
    ("predict", "--halt-threshold"): ("0.5", ["x", "1", "-0.5"]),
    ("predict", "--trajectories"): ("2", ["two", "0"]),
    ("predict", "--noise"): ("0", ["-0.5", "inf"]),
    ("predict", "--select"): ("halt", ["vote-all"]),
    ("predict", "--max-new-tokens"): ("16", ["lots", "0"]),
    ("plot", "--example"): ("test:3", ["dev:0", "test", "test:-1", "test:x"]),
    ("plot", "--target"): ("1 2 3 4", ["", "  "]),
    ("plot", "--steps"): ("8", ["three", "0"]),
    ("plot", "--out"): ("pictures", [AN_EXISTING_FILE, ""]),
    ("push", "--token"): ("hf_abc", ["", " "]),
    ("app", "--steps"): ("12", ["many", "0"]),
    ("app", "--host"): ("0.0.0.0", ["", " "]),
    ("app", "--port"): ("8000", ["http", "0", "70000"]),
    ("export-task", "--split"): ("test", ["validation"]),
    ("convert-trm", "--config"): (AN_EXISTING_FILE, ["/nonexistent/all_config.yaml"]),
    ("convert-trm", "--puzzle-id"): ("2", ["first", "-1"]),
}


def flags_that_take_a_value(parser: argparse.ArgumentParser, command: str = "") -> Iterator[tuple[str, str]]:
    """(command, flag) for every optional argument that takes a value, in every (sub)command of `parser`."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from flags_that_take_a_value(subparser, f"{command} {name}".strip())
        elif action.option_strings and action.nargs != 0:  # nargs 0: --help, store_true, --halt/--no-halt
            yield command, max(action.option_strings, key=len)


def test_every_flag_that_takes_a_value_is_in_the_table() -> None:
    assert sorted(flags_that_take_a_value(cli.build_parser())) == sorted(BAD_VALUES)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A one-tensor file shaped like a TRM reference checkpoint, with no all_config.yaml beside it."""
    path = tmp_path_factory.mktemp("trm") / "step_1"
    torch.save({"_orig_mod.model.inner.lm_head.weight": torch.zeros(2, 2)}, path)
    return str(path)


def command_line(command: str, checkpoint: str, *flag_and_value: str) -> list[str]:
    return [checkpoint if token == CHECKPOINT else token for token in COMMAND_LINES[command]] + list(flag_and_value)


def exit_status(argv: list[str]) -> int:
    """What `latentreason ARGV` exits with: argparse exits with SystemExit, `main` returns 2 for errors it reports."""
    try:
        return cli.main(argv)
    except SystemExit as exit_info:
        return exit_info.code


CASES = [(command, flag, value) for (command, flag), (_, bad) in BAD_VALUES.items() for value in bad]


@pytest.mark.parametrize("command, flag, value", CASES, ids=[f"{c} {f} {v!r}" for c, f, v in CASES])
def test_a_bad_value_ends_in_one_error_line_naming_the_flag_and_exit_2(
    command: str, flag: str, value: str, checkpoint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_status(command_line(command, checkpoint, flag, value)) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    error = captured.err.strip().splitlines()[-1]
    assert error.startswith(f"latentreason {command}: error: ") and flag in error, error
    assert repr(value) in error or value.strip() in error, error  # the value is shown as given


@pytest.mark.parametrize("command, flag", list(BAD_VALUES), ids=[" ".join(key) for key in BAD_VALUES])
def test_the_good_value_of_each_flag_parses(command: str, flag: str, checkpoint: str) -> None:
    """The checks refuse the bad values, not every value."""
    good = BAD_VALUES[command, flag][0]
    args = cli.build_parser().parse_args(command_line(command, checkpoint, flag, good))
    parsed = getattr(args, flag.lstrip("-").replace("-", "_"))
    assert parsed in (good, [good]) or parsed == type(parsed)(good)
