"""One root folder, one server: what `imagegraph serve` checks and takes before anything touches the root.

With SQLite, two servers on one root would each recover the other's "running" session as crashed and run the
other's queue. So the root is checked first (a folder we can write, with room to spare), then an exclusive
`flock` on `<root>/.lock` is taken for the life of the process; the kernel releases it when the process ends,
however it ends. The lock file says who holds it (pid, address), so a second server can name the first."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path

LOCK_NAME = ".lock"
# Below this, refuse to start: an image, a model sync or a SQLite commit would soon fail half-way.
MIN_FREE_BYTES = 64 * 1024**2


class RootProblem(Exception):
    """The root cannot be used; the message is one line naming it and why."""


def check_root(root: Path) -> None:
    """A folder (or one that can be created) that this process can write, with at least MIN_FREE_BYTES free."""
    if root.exists() and not root.is_dir():
        raise RootProblem(f"bad setting `root`: {root} is a file, not a folder")
    existing = root
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise RootProblem(f"bad setting `root`: {existing} is a file, so {root} cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is" if existing == root else f"cannot be created: {existing} is"
        raise RootProblem(f"bad setting `root`: {root} {what} not writable by this user")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise RootProblem(
            f"bad setting `root`: only {free // 1024**2} MiB free on the disk of {root}; "
            f"at least {MIN_FREE_BYTES // 1024**2} MiB are needed"
        )


def holder(root: Path) -> dict[str, object] | None:
    """Who holds the root's lock, as its lock file says (read without taking or creating anything)."""
    try:
        data = json.loads((root / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(info: dict[str, object] | None) -> str:
    if not info:
        return "another imagegraph server"
    return f"another imagegraph server (pid {info.get('pid')}, {info.get('url')})"


class RootLock:
    """Held from `acquire` until the process exits (or `release`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path = root / LOCK_NAME
        self._fd: int | None = None

    def acquire(self, url: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RootProblem(
                f"{describe(holder(self.root))} is already using {self.root}; stop it first, or give this one "
                "another --root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "url": url}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
