"""A full disk, said plainly: which folder, how many bytes were needed, and that nothing earlier was lost.

Every writer in latentreason (the adapter folder, checkpoints, the feature cache) writes into a staging
folder and renames it into place, so a write that fails leaves the previous complete state as it was.
`explain_disk_full` turns the bare `OSError: [Errno 28] No space left on device` of such a write into
an error that says where, how much, and what to do.

    >>> with explain_disk_full("runs/x", "the adapter", needed_bytes=10_000):   # doctest: +SKIP
    ...     write_everything()
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


class DiskFullError(OSError):
    """A write ran out of disk space; the message names the folder and the bytes it needed."""


def folder_bytes(path: str | os.PathLike) -> int:
    """Bytes of the files under `path` (0 when it does not exist)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file()) if path.is_dir() else 0


def free_bytes(path: str | os.PathLike) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


@contextlib.contextmanager
def explain_disk_full(folder: str | os.PathLike, what: str, needed_bytes: int | Callable[[], int]) -> Iterator[None]:
    """Re-raise ENOSPC inside the block as a `DiskFullError` naming `folder`, the bytes needed and the fix."""
    try:
        yield
    except OSError as error:
        if error.errno != errno.ENOSPC or isinstance(error, DiskFullError):
            raise
        needed = needed_bytes() if callable(needed_bytes) else needed_bytes
        raise DiskFullError(
            errno.ENOSPC,
            f"No space left on the disk of {folder} while writing {what}: about {needed:,d} bytes are needed, "
            f"{free_bytes(folder):,d} are free. Nothing written before was lost (the previous {what}, if any, still loads). "
            "Free some space or write to a disk with room, then run again (training: with --resume).",
        ) from error
