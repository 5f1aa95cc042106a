"""One run per output folder: a lock file that names its holder, and takes over the lock of a killed run.

Two `latentreason train` runs writing checkpoints into the same folder would overwrite each other's
checkpoints and make every resume a gamble. The first run creates `OUTPUT_DIR/run.lock` (created
with O_EXCL, so two starting runs cannot both get it) holding its pid, host and the pid's start time;
a second run reads it and stops with an error naming the holder. A lock whose process is gone (killed
by the OOM killer, a pre-empted node, SIGKILL) is stale: the next run says so and takes it over.
A pid reused by an unrelated process is told apart by the process start time (Linux `/proc`).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder, hold_output_dir(folder):
    ...     pass   # train here; a second hold_output_dir(folder) from another process raises OutputDirInUseError
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LOCK_NAME = "run.lock"


class OutputDirInUseError(RuntimeError):
    """Another live run holds the output folder."""


def _process_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), or None where /proc does not tell."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5); the command name before ")" may hold spaces


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote `holder` still runs (on another host: assumed alive, it cannot be checked)."""
    if holder.get("host") != socket.gethostname():
        return True
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = holder.get("started")
    now = _process_start(pid)
    return started is None or now is None or started == now  # a different start time: the pid was reused


def _read(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable or half written: nobody can be shown to hold it
    return holder if isinstance(holder, dict) else None


def _create(path: Path) -> bool:
    """Create the lock file for this process; False if it exists already."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
    return True


def acquire(output_dir: str | os.PathLike) -> Path:
    """Take the lock of `output_dir` (created if missing); raises `OutputDirInUseError` if a live run holds it."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    for _ in range(3):  # a lock removed or taken over between our checks: look again
        if _create(path):
            return path
        holder = _read(path)
        if holder is not None and _alive(holder):
            raise OutputDirInUseError(
                f"{folder} is in use by another training run (pid {holder.get('pid')} on {holder.get('host')}, "
                f"since {holder.get('since', '?')}). Wait for it to finish or stop it, or set another training.output_dir. "
                f"If that run is gone, delete {path}."
            )
        described = f"pid {holder.get('pid')}, since {holder.get('since', '?')}" if holder else "unreadable"
        warnings.warn(f"Taking over the stale lock {path} ({described}): the run that held it is gone.", stacklevel=2)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    raise OutputDirInUseError(f"Could not take the lock {path}: other runs keep taking it. Set another training.output_dir.")


def release(path: Path) -> None:
    """Remove the lock if this process holds it."""
    holder = _read(path)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def hold_output_dir(output_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold `output_dir`'s lock for the duration of the block (see the module docstring)."""
    path = acquire(output_dir)
    try:
        yield path
    finally:
        release(path)
