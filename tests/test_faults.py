"""Kill it anywhere and lose nothing: SIGKILL a real `latentreason train` at seeded random moments, resume until done.

Each kill lands wherever the process happens to be: loading, tokenizing, writing the feature cache,
training, writing a checkpoint, evaluating, saving the adapter. The run is then started again with
`--resume`, and again killed, until the kills are spent; the last start runs to the end. The weights
it saves must equal, bit for bit, those of a run never interrupted, and its evaluation must too: no
resume may load a partial checkpoint or a partial cache (either would change the numbers or crash).

Default suite: 3 kills. Slow suite (`-m slow`): 20 more, over other moments.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import save_tiny_base
from safetensors.torch import load_file
from test_training import REPO, tiny_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONUNBUFFERED": "1"}
MAX_STEPS = 24


def command(workspace: dict[str, str], name: str, resume: bool) -> list[str]:
    overrides = tiny_overrides(workspace["base"], os.path.join(workspace["root"], name), os.path.join(workspace["root"], f"cache_{name}"),
                               **{"training.max_steps": MAX_STEPS, "training.checkpoint_every": 3, "training.log_every": 1})
    return [sys.executable, "-m", "latentreason.cli", "train", "recipes/sort_words.yaml", *overrides, *(["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("faults")
    return {"root": str(root), "base": save_tiny_base(str(root / "base"))}


@pytest.fixture(scope="module")
def reference(workspace: dict[str, str]) -> dict:
    """The uninterrupted run: its weights and its evaluation."""
    subprocess.run(command(workspace, "reference", resume=False), cwd=REPO, env=ENV, check=True, capture_output=True, text=True)
    folder = os.path.join(workspace["root"], "reference")
    return {"weights": load_file(os.path.join(folder, "reasoner.safetensors")),
            "eval": json.loads(open(os.path.join(folder, "eval_results.json"), encoding="utf-8").read())}


def killed_and_resumed(workspace: dict[str, str], name: str, kills: int, seed: int) -> dict:
    """Start, SIGKILL at a random moment, resume, ... `kills` times; then resume to the end. Returns what the run saved.

    A kill moment is drawn per start: a fifth of them (and every one once the last step was logged) a random
    0.5-4 s after launch (imports, tokenizing, the feature cache, the final evaluation), the rest a random 0-0.3 s after the log line of a random optimizer step not reached
    yet (training, checkpoint writes; after the last step: evaluation and saving the adapter).
    """
    rng = random.Random(seed)
    survived, reached, starts = 0, 0, 0
    # A start that ends by itself before its kill moment (a fast machine finishing the last steps within the
    # 0-0.3 s wait) lands no kill: start again, so the count of kills does not depend on the machine's speed.
    while survived < kills and starts < 4 * kills:
        starts += 1
        process = subprocess.Popen(command(workspace, name, resume=True), cwd=REPO, env=ENV, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if rng.random() < 0.2 or reached >= MAX_STEPS:  # after the last step a restart logs no step: kill it by time
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            target = rng.randint(min(reached + 1, MAX_STEPS), MAX_STEPS)
            for line in process.stdout:
                step = re.match(r"step (\d+)/", line)
                if step:
                    reached = max(reached, int(step.group(1)))
                    if int(step.group(1)) >= target:
                        time.sleep(rng.uniform(0.0, 0.3))
                        break
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            survived += 1
        process.communicate()
    final = subprocess.run(command(workspace, name, resume=True), cwd=REPO, env=ENV, capture_output=True, text=True)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    folder = os.path.join(workspace["root"], name)
    return {"kills": survived, "weights": load_file(os.path.join(folder, "reasoner.safetensors")),
            "eval": json.loads(open(os.path.join(folder, "eval_results.json"), encoding="utf-8").read())}


def assert_same_run(resumed: dict, reference: dict) -> None:
    assert resumed["weights"].keys() == reference["weights"].keys()
    for name, tensor in reference["weights"].items():
        assert torch.equal(resumed["weights"][name], tensor), name
    assert resumed["eval"]["per_step"] == reference["eval"]["per_step"]


def test_three_kills_anywhere_lose_nothing(workspace: dict[str, str], reference: dict) -> None:
    resumed = killed_and_resumed(workspace, "killed", kills=3, seed=0)
    assert resumed["kills"] == 3
    assert_same_run(resumed, reference)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_twenty_more_kills_lose_nothing(workspace: dict[str, str], reference: dict, seed: int) -> None:
    resumed = killed_and_resumed(workspace, f"killed_{seed}", kills=5, seed=seed)
    assert resumed["kills"] == 5
    assert_same_run(resumed, reference)


# --- a full disk -----------------------------------------------------------------------------------
def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_save_pretrained_keeps_the_previous_adapter(tmp_path, monkeypatch) -> None:
    from conftest import reasoner_config, shared_backbone

    import latentreason.hub.save as hub_save
    from latentreason import attach_reasoner
    from latentreason.hub.files import read_weights
    from latentreason.storage import DiskFullError

    model = attach_reasoner(shared_backbone("bert"), reasoner_config())
    folder = tmp_path / "adapter"
    model.save_pretrained(folder)
    before = read_weights(folder)
    with torch.no_grad():
        for parameter in model.reasoner.parameters():
            parameter.add_(1.0)

    def partial_write(weights, path, metadata=None):
        open(path, "wb").write(b"\0" * 100)  # some bytes land, then the disk is full
        no_space()

    monkeypatch.setattr(hub_save, "save_file", partial_write)
    with pytest.raises(DiskFullError) as error:
        model.save_pretrained(folder)
    message = str(error.value)
    assert str(folder) in message and "bytes are needed" in message and "free" in message
    needed = int(re.search(r"about ([\d,]+) bytes", message).group(1).replace(",", ""))
    assert needed >= sum(t.numel() * t.element_size() for t in before.values())
    after = read_weights(folder)  # the previous adapter, whole
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no staging folder left behind


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch) -> None:
    from accelerate import Accelerator

    from latentreason.storage import DiskFullError
    from latentreason.training.checkpoints import latest_checkpoint, save_checkpoint

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(torch.nn.Linear(4, 4))
    first = save_checkpoint(accelerator, str(tmp_path), step=3, keep=2)
    monkeypatch.setattr(accelerator, "save_state", no_space)
    with pytest.raises(DiskFullError, match="step 6") as error:
        save_checkpoint(accelerator, str(tmp_path), step=6, keep=2)
    assert str(tmp_path / "checkpoints") in str(error.value)
    assert latest_checkpoint(str(tmp_path)) == first
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["step-3"]  # the partial one is gone


def test_a_full_disk_while_caching_features_names_the_cache_and_leaves_no_entry(tmp_path, monkeypatch) -> None:
    from conftest import reasoner_config, shared_backbone
    from test_features import encoded_dataset

    from latentreason import attach_reasoner
    from latentreason.features import FeatureCache
    from latentreason.storage import DiskFullError

    model, dataset = attach_reasoner(shared_backbone("bert"), reasoner_config()), encoded_dataset()
    cache = FeatureCache(tmp_path / "cache")
    monkeypatch.setattr(FeatureCache, "_compute", lambda *args, **kwargs: no_space())
    with pytest.raises(DiskFullError, match="feature cache entry") as error:
        cache.features_for(model, dataset, progress=False)
    tokens = sum(len(ids) for ids in dataset["input_ids"])
    assert str(tmp_path / "cache") in str(error.value)
    assert f"{tokens * model.backbone.hidden_size * 2:,d} bytes are needed" in str(error.value)  # float16 features
    assert list((tmp_path / "cache").iterdir()) == []  # no partial entry, nothing that a later run could read
