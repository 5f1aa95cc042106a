"""Hostile reasoner folders: each is refused or ignored with a clear message; nothing in it is run.

A folder handed to `LatentReasonerModel.from_pretrained` may come from anyone. Tried here: a base model
whose config asks transformers to run its own code, a safetensors header that claims petabytes, links
that lead out of the folder, pickle and Python files dropped beside the weights, and a model card with
broken YAML. Where a file would run code (a pickle, a `.py`), the test first shows that it does create
its marker file when run, so that the marker's absence after loading means something.
"""

from __future__ import annotations

import json
import pickle
import resource
import runpy
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import reasoner_config
from huggingface_hub import HfApi

from latentreason import LatentReasonerModel, attach_reasoner
from latentreason import model as model_module
from latentreason.hub import CONFIG_NAME, MODEL_CARD_NAME, WEIGHTS_NAME, push_folder
from latentreason.testing import save_tiny_backbone

# Code that leaves a marker file where it runs: the sign that something executed it.
MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('this code ran')\n"


class LeavesAMarker:
    """Unpickling this creates the file `marker` (what a hostile pickle could do with any function)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return Path.touch, (self.marker,)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[LatentReasonerModel, Path]:
    """A reasoner on a tiny Llama (saved as a folder), saved once; each test damages its own copy."""
    root = tmp_path_factory.mktemp("hostile")
    base = save_tiny_backbone("llama", root / "base")
    torch.manual_seed(0)
    model = attach_reasoner(base, reasoner_config()).eval()
    model.save_pretrained(root / "reasoner")
    return model, root / "reasoner"


@pytest.fixture
def folder(saved: tuple[LatentReasonerModel, Path], tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved[1], tmp_path / "reasoner"))


def assert_same_reasoner(loaded: LatentReasonerModel, model: LatentReasonerModel) -> None:
    expected = model.adapter_state_dict()
    actual = loaded.adapter_state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[name], expected[name]) for name in expected)


# --- a base model that needs its own code -----------------------------------------------------------------


def base_with_custom_code(folder: Path, tmp_path: Path, model_type: str) -> tuple[Path, Path]:
    """Copy the reasoner's base, add modelling code that leaves a marker and point `auto_map` at it."""
    base = Path(shutil.copytree(json.loads((folder / CONFIG_NAME).read_text())["base_model_name_or_path"], tmp_path / "custom-base"))
    marker = tmp_path / "custom-code-ran"
    for module in ("configuration_custom", "modeling_custom"):
        (base / f"{module}.py").write_text(MARKER_CODE.format(marker=str(marker)))
    values = json.loads((base / "config.json").read_text())
    values.update(model_type=model_type, auto_map={"AutoConfig": "configuration_custom.CustomConfig", "AutoModel": "modeling_custom.CustomModel"})
    (base / "config.json").write_text(json.dumps(values))
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    runpy.run_path(str(base / "modeling_custom.py"))  # the code does leave its marker when it runs
    assert marker.exists()
    marker.unlink()
    return base, marker


def test_a_base_that_needs_its_own_code_is_refused_and_none_of_it_runs(folder: Path, tmp_path: Path) -> None:
    base, marker = base_with_custom_code(folder, tmp_path, model_type="custom-reasoning-lm")
    with pytest.raises(ValueError) as error:
        LatentReasonerModel.from_pretrained(folder)
    message = str(error.value)
    assert f"The base model {base} (model_type 'custom-reasoning-lm') can only be loaded by running its own Python code" in message
    assert "configuration_custom.CustomConfig, modeling_custom.CustomModel" in message
    assert "Nothing was run" in message and "trust_remote_code=True" in message
    assert not marker.exists()


def test_custom_code_beside_a_model_type_transformers_knows_is_never_run(
    folder: Path, tmp_path: Path, saved: tuple[LatentReasonerModel, Path]
) -> None:
    """`auto_map` on a Llama: transformers loads its own Llama code, so the reasoner loads and the extra code stays unrun."""
    _, marker = base_with_custom_code(folder, tmp_path, model_type="llama")
    loaded = LatentReasonerModel.from_pretrained(folder)
    assert_same_reasoner(loaded, saved[0])
    assert not marker.exists()


# --- a safetensors header that claims petabytes --------------------------------------------------------------

PETABYTES = 2**25  # a 2**25 x 2**25 float32 tensor: 4 PiB
HUGE_HEADERS = {
    "tensor-of-4-PiB": json.dumps({"input_proj.weight": {"dtype": "F32", "shape": [PETABYTES, PETABYTES], "data_offsets": [0, 4 * PETABYTES**2]}}).encode(),
    "shape-of-4-PiB-in-16-bytes": json.dumps({"input_proj.weight": {"dtype": "F32", "shape": [PETABYTES, PETABYTES], "data_offsets": [0, 16]}}).encode(),
    "header-of-4-EiB": None,  # the 8-byte length itself claims 2**62 bytes of header
}


@pytest.mark.parametrize("header", HUGE_HEADERS.values(), ids=HUGE_HEADERS.keys())
def test_a_safetensors_header_claiming_petabytes_is_refused_without_allocating(folder: Path, monkeypatch: pytest.MonkeyPatch, header: bytes | None) -> None:
    length = 2**62 if header is None else len(header)
    (folder / WEIGHTS_NAME).write_bytes(struct.pack("<Q", length) + (header or b"{}") + bytes(16))
    monkeypatch.setattr(model_module, "attach_reasoner", lambda *a, **k: pytest.fail("the base model loaded before the weights were checked"))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ValueError, match=f"{folder / WEIGHTS_NAME} is truncated or corrupt"):
        LatentReasonerModel.from_pretrained(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 64 * 1024  # under 64 MiB more at the peak


# --- links out of the folder ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [WEIGHTS_NAME, CONFIG_NAME, MODEL_CARD_NAME])
def test_a_link_out_of_the_folder_is_refused_naming_the_file_and_the_fix(folder: Path, tmp_path: Path, name: str) -> None:
    """The file outside is a valid copy of the right file: only the link itself can be the reason for the refusal."""
    outside = tmp_path / "elsewhere" / name
    outside.parent.mkdir()
    (folder / name).rename(outside)
    (folder / name).symlink_to(outside)
    with pytest.raises(ValueError) as error:
        LatentReasonerModel.from_pretrained(folder)
    message = str(error.value)
    assert f"{folder / name} is a link to {outside}, outside the folder {folder}" in message
    assert f"cp --remove-destination {outside} {folder / name}" in message


def test_a_link_that_stays_inside_the_folder_loads(folder: Path, saved: tuple[LatentReasonerModel, Path]) -> None:
    (folder / "versions").mkdir()
    (folder / WEIGHTS_NAME).rename(folder / "versions" / "v1.safetensors")
    (folder / WEIGHTS_NAME).symlink_to(Path("versions") / "v1.safetensors")
    assert_same_reasoner(LatentReasonerModel.from_pretrained(folder), saved[0])


# --- pickle and Python files beside the weights -----------------------------------------------------------

PICKLES = ["reasoner.bin", "pytorch_model.bin", "model.pt", "state.pkl"]
CODE = ["modeling_reasoner.py", "__init__.py"]


def test_pickle_and_python_files_are_named_never_unpickled_never_run(folder: Path, saved: tuple[LatentReasonerModel, Path]) -> None:
    markers = {name: folder.parent / f"{name}-ran" for name in PICKLES + CODE}
    for name in PICKLES:
        (folder / name).write_bytes(pickle.dumps(LeavesAMarker(markers[name])))
    for name in CODE:
        (folder / name).write_text(MARKER_CODE.format(marker=str(markers[name])))
    # Controls: each file does leave its marker when it is unpickled or run.
    for name in PICKLES:
        pickle.loads((folder / name).read_bytes())
    for name in CODE:
        runpy.run_path(str(folder / name))
    assert all(marker.exists() for marker in markers.values())
    for marker in markers.values():
        marker.unlink()

    with pytest.warns(UserWarning) as warned:
        loaded = LatentReasonerModel.from_pretrained(folder)
    (message,) = [str(w.message) for w in warned if "latentreason ignores" in str(w.message)]
    assert f"{folder} holds {sorted(PICKLES + CODE)}, which latentreason ignores" in message
    assert "never unpickles pickle files and never runs Python files" in message
    assert not any(marker.exists() for marker in markers.values())
    assert_same_reasoner(loaded, saved[0])


# --- a model card with broken YAML ------------------------------------------------------------------------

BROKEN_CARD = "---\nbase_model: [unclosed\ndatasets: {\n---\n\n# My reasoner\n"


def test_a_card_with_broken_yaml_is_not_needed_to_load(folder: Path, saved: tuple[LatentReasonerModel, Path]) -> None:
    (folder / MODEL_CARD_NAME).write_text(BROKEN_CARD)
    assert_same_reasoner(LatentReasonerModel.from_pretrained(folder), saved[0])


def test_a_card_with_broken_yaml_is_replaced_on_push_with_a_warning(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pushed card is written anew (its usage snippet must load the repo id); the broken one only loses its dataset name."""
    (folder / MODEL_CARD_NAME).write_text(BROKEN_CARD)
    pushed: dict[str, str] = {}

    def upload_folder(self: HfApi, **kwargs: Any) -> str:
        pushed["card"] = (Path(kwargs["folder_path"]) / MODEL_CARD_NAME).read_text()
        return "https://huggingface.co/user/reasoner"

    monkeypatch.setattr(HfApi, "whoami", lambda self, **kwargs: {"name": "user"})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: f"https://huggingface.co/{repo_id}")
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with pytest.warns(UserWarning, match=f"{folder / MODEL_CARD_NAME} has malformed YAML front matter .*the card pushed is written anew"):
        push_folder(folder, "user/reasoner", allow_local_base=True)
    assert pushed["card"].startswith("---\n") and "library_name: latentreason" in pushed["card"]
    assert "from_pretrained('user/reasoner')" in pushed["card"]
