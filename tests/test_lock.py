"""The output-folder lock: a live holder stops a second run, a killed holder's lock is taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from test_training import REPO

from latentreason.lock import LOCK_NAME, OutputDirInUseError, _process_start, acquire, hold_output_dir, release


def write_lock(folder, pid: int, started: str | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": started, "since": "then"}))


def test_a_live_holder_stops_a_second_run_and_release_frees_it(tmp_path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path, sleeper.pid, _process_start(sleeper.pid))
        with pytest.raises(OutputDirInUseError, match=f"pid {sleeper.pid}") as error:
            acquire(tmp_path)
        assert "training.output_dir" in str(error.value) and str(tmp_path) in str(error.value)
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == sleeper.pid  # the holder's lock is untouched
    finally:
        sleeper.kill()
        sleeper.wait()
    with pytest.warns(UserWarning, match="stale lock"):  # now its holder is gone
        path = acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] != sleeper.pid
    release(path)
    assert not path.exists()


def test_the_same_folder_cannot_be_held_twice(tmp_path) -> None:
    with hold_output_dir(tmp_path) as path:
        with pytest.raises(OutputDirInUseError):
            acquire(tmp_path)
        assert path.exists()
    assert not path.exists()
    with hold_output_dir(tmp_path):  # free again after the first hold ends
        pass


def test_a_reused_pid_or_an_unreadable_lock_is_stale(tmp_path) -> None:
    write_lock(tmp_path, os.getpid(), "not-my-start-time")  # our pid, but another process's start time: reused
    with pytest.warns(UserWarning, match="stale"):
        release(acquire(tmp_path))
    (tmp_path / LOCK_NAME).write_text("{half a record")
    with pytest.warns(UserWarning, match="unreadable"):
        release(acquire(tmp_path))


def test_release_never_removes_another_holders_lock(tmp_path) -> None:
    write_lock(tmp_path, 1, None)  # pid 1 on this host: alive
    release(tmp_path / LOCK_NAME)
    assert (tmp_path / LOCK_NAME).exists()


def test_a_second_train_into_a_held_folder_is_a_clear_cli_error(tmp_path) -> None:
    """`latentreason train` into a folder a live run holds: exit status 2, one line naming the holder, no traceback."""
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path / "run", sleeper.pid, _process_start(sleeper.pid))
        result = subprocess.run([sys.executable, "-m", "latentreason.cli", "train", "recipes/parity.yaml",
                                 f"training.output_dir={tmp_path / 'run'}"], capture_output=True, text=True,
                                cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        sleeper.kill()
        sleeper.wait()
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"pid {sleeper.pid}" in result.stderr and "in use by another training run" in result.stderr
