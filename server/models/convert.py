"""Checkpoint -> diffusers folder, fully offline, and moving finished folders into place.

diffusers' single-file loader does the conversion (`server.models.single_file`); we only make sure it never
reaches for the network (a local config folder, a local legacy yaml) and that the result appears at its
destination whole or not at all."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def convert_checkpoint(
    checkpoint: Path,
    original_config: Path | None,
    config_dir: Path,
    work_dir: Path,
    prediction_type: str | None = None,
) -> Path:
    """Write the diffusers form of `checkpoint` into a new folder under `work_dir` and return it. The folder's
    scheduler predicts `prediction_type` (the registered model's) when given. Blocking (torch): run it off the
    event loop."""
    from server.models.single_file import load_pipeline_from_single_file

    pipe: Any = load_pipeline_from_single_file(
        checkpoint, original_config, config_dir, None, prediction_type=prediction_type
    )
    out = Path(tempfile.mkdtemp(prefix="convert-", dir=work_dir)) / "model"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def place(source: Path, target: Path) -> None:
    """Move a finished file or folder to `target` atomically: a rename when both are on one file system,
    else a copy beside the target under a hidden name, then a rename. Raises FileExistsError if taken."""
    if target.exists():
        raise FileExistsError(target)
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copy2(source, tmp)
        os.rename(tmp, target)
    except BaseException:
        remove(tmp)
        raise
    remove(source)


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
