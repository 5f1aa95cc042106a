"""The Python that the shell scripts run (heredocs in scripts/*.sh, e.g. the README demo) imports names that exist.

The scripts are run by hand, not by the suite (the demo trains for minutes), so a moved function would
break them unseen: this parses each heredoc and resolves every `from latentreason... import ...`.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.sh"))
HEREDOC = re.compile(r"<<\s*'?(?P<tag>\w+)'?\n(?P<body>.*?)\n(?P=tag)\n", re.S)


def python_heredocs(path: Path) -> list[str]:
    """The bodies of the heredocs fed to a python command (`.venv/bin/python - <<'PY'`)."""
    text = path.read_text(encoding="utf-8")
    return [match.group("body") for match in HEREDOC.finditer(text) if "python" in text[: match.start()].splitlines()[-1]]


def test_the_demo_script_has_python_to_check() -> None:
    assert any(python_heredocs(path) for path in SCRIPTS), "no Python heredoc found in scripts/*.sh: is HEREDOC still right?"


@pytest.mark.parametrize("path", [path for path in SCRIPTS if python_heredocs(path)], ids=lambda path: path.name)
def test_every_latentreason_import_of_a_script_resolves(path: Path) -> None:
    for body in python_heredocs(path):
        for node in ast.walk(ast.parse(body)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("latentreason"):
                module = importlib.import_module(node.module)
                missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
                assert not missing, f"{path.name}: `from {node.module} import {', '.join(missing)}`: no such name"
