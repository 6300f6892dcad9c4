"""Durable file writes: a reader (or a restart after a crash) sees the old file or the new one, never a mix."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def atomic_write(path: Path, data: bytes, temp_name: str | None = None) -> os.stat_result:
    """Write to a temporary name beside `path` (default `.<name>.<pid>.tmp`), fsync, rename, fsync the folder."""
    temp = path.with_name(temp_name or f".{path.name}.{os.getpid()}.tmp")
    write_synced(temp, data)
    return publish(temp, path)


def write_synced(temp: Path, data: bytes) -> None:
    """The first half of an atomic write: `data` under the temporary name, on disk (removed again on failure)."""
    try:
        with open(temp, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def publish(temp: Path, path: Path) -> os.stat_result:
    """The second half: rename the synced temporary file to `path` and make the rename durable."""
    try:
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return os.stat(path)


def fsync_dir(folder: Path) -> None:
    # A rename is durable only once the directory entry is on disk.
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def publish_folder(target: Path) -> Iterator[Path]:
    """Yield a private temporary folder beside `target`; when the block succeeds it is renamed to `target`,
    so nobody ever sees a half-built folder. If another caller published `target` first, theirs is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # anything but "another caller won the race" is a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
