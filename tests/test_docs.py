"""The documentation builds, its runnable code blocks run, and its generated pages are up to date.

Runnable blocks: a fenced block right after the HTML comment `<!-- runnable -->` (invisible in the
rendered page) is executed. The runnable blocks of a page run in order in a fresh temporary folder,
like the cells of a notebook: consecutive `python` blocks run as one script (later blocks see what
earlier ones defined), consecutive `bash` blocks as one shell script; the folder is shared by all of
them, so a Python block can write a file that a later shell block reads. `recipes/` and `examples/`
of the repository are linked into the folder, so the commands read as they would from a clone. The
Hub is off (HF_HUB_OFFLINE=1) and the feature cache lives in the temporary folder. Runnable blocks use
the tiny local models of `latentreason.testing`, so each page runs in seconds; pages run two at a time.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w-]*)[^\n]*$")
LANGUAGES = {"python": "python", "py": "python", "bash": "bash", "sh": "bash", "shell": "bash"}
BLOCK_TIMEOUT_S = 600  # a guard against hangs, not a speed goal: a loaded 2-core machine ran a 60 s block past 180 s


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    language: str  # "python" or "bash"
    code: str


def runnable_blocks(path: Path) -> list[Block]:
    """The blocks of a page marked runnable, in order. A marker not followed by a fenced block is an error."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        start = index + 1
        while start < len(lines) and not lines[start].strip():
            start += 1
        opening = FENCE.match(lines[start].strip()) if start < len(lines) else None
        where = f"{path.name}:{index + 1}"
        if opening is None:
            raise ValueError(f"{where}: `{MARKER}` must be followed by a fenced code block (```python or ```bash).")
        language = LANGUAGES.get(opening.group("lang"))
        if language is None:
            raise ValueError(f"{where}: runnable blocks must be python or bash, got {opening.group('lang')!r}.")
        end = start + 1
        while end < len(lines) and lines[end].strip() != opening.group("fence"):
            end += 1
        if end == len(lines):
            raise ValueError(f"{where}: the runnable block opened at line {start + 1} is never closed.")
        blocks.append(Block(path.name, start + 1, language, "\n".join(lines[start + 1 : end]) + "\n"))
    return blocks


def grouped(blocks: list[Block]) -> list[list[Block]]:
    """Consecutive blocks of the same language, together (they run as one script)."""
    groups: list[list[Block]] = []
    for block in blocks:
        if groups and groups[-1][0].language == block.language:
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups


def script(blocks: list[Block]) -> str:
    parts = [f"# --- {block.page}, block at line {block.line}\n{block.code}" for block in blocks]
    prelude = "set -euo pipefail\n" if blocks[0].language == "bash" else ""
    return prelude + "\n".join(parts)


def run_env(folder: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        LATENTREASON_CACHE=str(folder / ".cache"),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="2",
        TOKENIZERS_PARALLELISM="false",
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def pages_with_runnable_blocks() -> list[Path]:
    return [path for path in sorted(DOCS.glob("*.md")) if runnable_blocks(path)]


# --- the tests ------------------------------------------------------------------------------------


def test_runnable_markers_are_followed_by_a_block() -> None:
    for path in sorted(DOCS.glob("*.md")):
        runnable_blocks(path)  # raises with the page and line on a stray marker


def test_marker_parsing(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- runnable -->\n```python\nx = 1\n```\n\n```python\nnot run\n```\n<!-- runnable -->\n\n```bash\necho hi\n```\n")
    blocks = runnable_blocks(page)
    assert [(b.language, b.line, b.code) for b in blocks] == [("python", 4, "x = 1\n"), ("bash", 13, "echo hi\n")]
    page.write_text("<!-- runnable -->\nno block here\n")
    with pytest.raises(ValueError, match="page.md:1"):
        runnable_blocks(page)


def test_docs_have_runnable_blocks() -> None:
    names = {path.name for path in pages_with_runnable_blocks()}
    assert {"quickstart.md", "concepts.md"} <= names


def run_page(page: Path, folder: Path) -> str | None:
    """Run a page's runnable blocks in `folder`; None if they all pass, else a report of the failure."""
    for name in ("recipes", "examples"):
        if (REPO / name).is_dir():
            (folder / name).symlink_to(REPO / name)
    for group in grouped(runnable_blocks(page)):
        suffix = ".py" if group[0].language == "python" else ".sh"
        path = folder / f"block_{group[0].line}{suffix}"
        path.write_text(script(group), encoding="utf-8")
        command = [sys.executable, str(path)] if suffix == ".py" else ["bash", str(path)]
        result = subprocess.run(command, cwd=folder, env=run_env(folder), capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        if result.returncode != 0:
            lines = ", ".join(str(block.line) for block in group)
            return (
                f"{page.name}: the runnable block(s) at line(s) {lines} failed (exit {result.returncode}).\n"
                f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-5000:]}"
            )
    return None


@pytest.fixture(scope="module")
def page_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """Every page's blocks, started at once on two workers: the pages are independent and mostly wait on imports."""
    executor = ThreadPoolExecutor(max_workers=2)
    runs = {page.name: executor.submit(run_page, page, tmp_path_factory.mktemp(page.stem)) for page in pages_with_runnable_blocks()}
    yield runs
    executor.shutdown(wait=True)


@pytest.mark.parametrize("page", pages_with_runnable_blocks(), ids=lambda path: path.name)
def test_runnable_blocks(page: Path, page_runs: dict[str, Future]) -> None:
    failure = page_runs[page.name].result()
    assert failure is None, failure


def _load_generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_up_to_date() -> None:
    generator = _load_generator()
    for path, content in generator.pages().items():
        assert path.exists(), f"{path.name} is missing: run `python docs/gen_reference.py`."
        assert path.read_text(encoding="utf-8") == content, f"{path.name} is out of date: run `python docs/gen_reference.py`."


def test_configuration_reference_lists_every_field() -> None:
    from latentreason import ReasonerConfig
    from latentreason.training import TrainingConfig

    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for cls in (ReasonerConfig, TrainingConfig):
        for name, field in cls.__dataclass_fields__.items():
            assert f"| `{name}` |" in page, f"{cls.__name__}.{name} is missing from configuration.md"
            assert field.metadata["help"].split("`")[0][:30] in page


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -e '.[docs]'); the docs build is not checked")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "concepts" / "index.html").exists()


def test_readme_links_resolve() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\((?!https?://|#)([^)#\s]+)", readme)
    assert targets, "README.md links to no file"
    missing = [target for target in targets if not (REPO / target).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
