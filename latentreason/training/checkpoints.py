"""Resumable checkpoints: `accelerator.save_state` into `checkpoints/step-N`, written atomically.

A checkpoint is first written to `checkpoints/.tmp-step-N` and then renamed to `step-N` with
`os.replace` (atomic on one file system), so a crash mid-write leaves only a `.tmp-*` folder that
is never loaded. `latest_checkpoint` returns the newest complete `step-N`.
"""

from __future__ import annotations

import os
import re
import shutil

from accelerate import Accelerator

from ..storage import explain_disk_full, folder_bytes

CHECKPOINTS_DIR = "checkpoints"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(output_dir: str) -> list[str]:
    """Complete checkpoints of a run, oldest first."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    if not os.path.isdir(root):
        return []
    steps = sorted((int(match.group(1)), name) for name in os.listdir(root) if (match := _STEP.match(name)))
    return [os.path.join(root, name) for _, name in steps]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint of a run, or None."""
    found = checkpoint_dirs(output_dir)
    return found[-1] if found else None


def save_checkpoint(accelerator: Accelerator, output_dir: str, step: int, keep: int) -> str:
    """Save the full training state (all processes take part) and keep the newest `keep` checkpoints."""
    root = os.path.join(output_dir, CHECKPOINTS_DIR)
    final = os.path.join(root, f"step-{step}")
    staging = os.path.join(root, f".tmp-step-{step}")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)  # left over from a crash
        os.makedirs(staging)
    accelerator.wait_for_everyone()
    previous = latest_checkpoint(output_dir)
    # A checkpoint is about as large as the one before it (or at least what was written of this one).
    with explain_disk_full(root, f"the checkpoint of step {step}", lambda: max(folder_bytes(previous or staging), folder_bytes(staging))):
        try:
            accelerator.save_state(staging)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # give back what the partial write took
            raise
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.exists(final):  # the same step saved again (a resumed run): move the old one out of the way first
            stale = os.path.join(root, f".old-step-{step}")
            shutil.rmtree(stale, ignore_errors=True)
            os.replace(final, stale)
            shutil.rmtree(stale)
        os.replace(staging, final)
        for old in checkpoint_dirs(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
