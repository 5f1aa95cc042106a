"""The package's layering: imports go down (core <- io <- training / tasks <- app) and never in a circle.

An AST walk over latentreason/ reads every import statement, module-level and inside functions alike
(a function-level import that dodges a cycle is still a cycle), but not those under
`if TYPE_CHECKING:` (annotations only, never run). Importing `a.b.c` runs the package `a.b` first, so
an import of a submodule is also an edge to each package above it. Every module must have a row in
LAYERS (a new module says where it belongs); docs/architecture.md explains the table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "latentreason"

# module (or package: it covers its submodules) -> layer; the longest matching name wins
LAYERS = {
    "latentreason": "core",  # __version__ and lazy public names (resolved on attribute access, not imported)
    "latentreason.config": "core",
    "latentreason.losses": "core",
    "latentreason.storage": "core",
    "latentreason.adapter_state": "core",
    "latentreason.kernels": "core",
    "latentreason.reasoner": "core",
    "latentreason.backbone": "core",
    "latentreason.embeddings": "core",
    "latentreason.heads": "core",
    "latentreason.trajectories": "core",
    "latentreason.lora": "core",
    "latentreason.packaged": "core",  # which PyPI package holds a copy of which Hub model: attach_reasoner resolves bases through it
    "latentreason.hub": "core",  # the adapter format the model saves itself in (see docs/architecture.md)
    "latentreason.model": "core",
    "latentreason.data": "io",
    "latentreason.text_pairs": "io",
    "latentreason.streaming": "io",
    "latentreason.features": "io",
    "latentreason.feature_storage": "io",
    "latentreason.convert_trm": "io",
    "latentreason.lock": "io",
    "latentreason.training": "training",
    "latentreason.tasks": "tasks",
    "latentreason.recipe": "app",
    "latentreason.pipeline": "app",
    "latentreason.prepare": "app",
    "latentreason.inference": "app",
    "latentreason.cli": "app",
    "latentreason.cli_help": "app",
    "latentreason.app": "app",
    "latentreason.visualize": "app",
    "latentreason.testing": "app",
}

# what each layer may import
ALLOWED = {
    "core": {"core"},
    "io": {"core", "io"},
    "training": {"core", "io", "training"},
    "tasks": {"core", "io", "tasks"},
    "app": {"core", "io", "training", "tasks", "app"},
}


def module_names() -> dict[str, Path]:
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def layer_of(module: str) -> str | None:
    matches = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:`."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped |= {id(inner) for statement in node.body for inner in ast.walk(statement)}
    return skipped


def imports_of(module: str, path: Path, modules: set[str]) -> set[str]:
    """The package modules that importing `module` runs (directly, and the packages above each)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skipped = _type_checking_only(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                targets.add(submodule if submodule in modules else source)
    edges = set()
    for target in targets:
        if not (target == "latentreason" or target.startswith("latentreason.")):
            continue
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            own_ancestor = module == name or module.startswith(name + ".")
            if name in modules and (name == target or not own_ancestor) and name != module:
                edges.add(name)
    return edges


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    names = module_names()
    return {module: imports_of(module, path, set(names)) for module, path in names.items()}


def test_every_module_has_a_layer(graph: dict[str, set[str]]) -> None:
    missing = sorted(module for module in graph if layer_of(module) is None)
    assert not missing, f"add these modules to LAYERS (and docs/architecture.md): {missing}"


def test_imports_only_go_down(graph: dict[str, set[str]]) -> None:
    upward = sorted(
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target) not in ALLOWED[layer_of(module)]
    )
    assert not upward, "imports that go up a layer:\n" + "\n".join(upward)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_cycles_upward_imports_and_function_level_imports(tmp_path: Path) -> None:
    """The walk itself: a function-level import is an edge, a TYPE_CHECKING one is not, and a cycle is found."""
    package = tmp_path / "latentreason"
    (package / "training").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "training" / "__init__.py").write_text("from .loop import train\n")
    (package / "training" / "loop.py").write_text("def train():\n    from ..model import attach\n")
    (package / "model.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .data import x\ndef f():\n    from .training import loop\n"
    )
    (package / "data.py").write_text("from . import model\n")
    modules = {"latentreason", "latentreason.training", "latentreason.training.loop", "latentreason.model", "latentreason.data"}
    paths = {
        "latentreason.training": package / "training" / "__init__.py",
        "latentreason.training.loop": package / "training" / "loop.py",
        "latentreason.model": package / "model.py",
        "latentreason.data": package / "data.py",
    }
    edges = {module: imports_of(module, path, modules) for module, path in paths.items()}
    assert edges["latentreason.model"] == {"latentreason.training.loop", "latentreason.training"}
    assert edges["latentreason.data"] == {"latentreason.model"}
    assert edges["latentreason.training.loop"] == {"latentreason.model"}
    assert find_cycle(edges) is not None
    assert layer_of("latentreason.model") == "core" and "training" not in ALLOWED[layer_of("latentreason.model")]
