"""The path rules every model operation asks: which folders the server may look in (`search_roots`), what a
client's path must look like, and which files may ever be deleted (only those inside `models/`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from server.models.errors import BadModelRequest, PathNotAllowed, PathNotFound

# Longer names fail every file system call with ENAMETOOLONG (Linux NAME_MAX and PATH_MAX).
NAME_MAX = 255
PATH_MAX = 4096


def normpath(path: str | os.PathLike[str]) -> str:
    """Absolute and normalised, without resolving symlinks (cheap: no system call)."""
    return os.path.normpath(os.path.abspath(path))


def inside(path: str, tops: Sequence[str]) -> bool:
    """Whether the real path `path` is one of the real folders `tops` or below one."""
    return any(path == top or path.startswith(top.rstrip(os.sep) + os.sep) for top in tops)


def strictly_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether `path` lies below `folder` (not `folder` itself), comparing normalised paths."""
    return normpath(path).startswith(normpath(folder) + os.sep)


def usable(path: Path, what: str) -> Path:
    """`path` if the operating system can look it up; a client's name too long for the file system is a
    mistake in the request (BadModelRequest), not a server failure."""
    raw = os.fsencode(path)
    if len(raw) >= PATH_MAX or any(len(name) > NAME_MAX for name in raw.split(b"/")):
        raise BadModelRequest(
            f"{what} is too long for the file system (at most {NAME_MAX} bytes a name, {PATH_MAX - 1} in all)"
        )
    return path


class PathRules:
    def __init__(self, root: Path, models_dir: Path, search_roots: Sequence[str]) -> None:
        self.root = root
        self.models_dir = models_dir
        self.search_roots = list(search_roots)

    def allowed_folders(self) -> list[str] | None:
        """Real paths of the root and the `search_roots` folders, or None when that setting is empty (anywhere)."""
        if not self.search_roots:
            return None
        return [os.path.realpath(os.path.expanduser(folder)) for folder in [str(self.root), *self.search_roots]]

    def check_allowed(self, path: Path, what: str) -> None:
        """PathNotAllowed unless `path` is inside the root or a `search_roots` folder (when that setting is used)."""
        allowed = self.allowed_folders()
        if allowed is None or inside(os.path.realpath(path), allowed):
            return
        raise PathNotAllowed(
            f"{what} {path} is outside the folders this server may use (search_roots: {', '.join(self.search_roots)})"
        )

    def absolute_input(self, value: str, what: str) -> Path:
        """A client's path: absolute (after `~`), normalised, and short enough for the file system."""
        path = Path(os.path.expanduser(value))
        if not path.is_absolute():
            raise BadModelRequest(f"{what} must be an absolute path on the server, not {value!r}")
        return usable(Path(normpath(path)), what)

    def existing_dir(self, value: str | None, default: Path, what: str) -> Path:
        """The destination folder a client names (allowed, existing), or `default`, created if need be."""
        if value is None:
            default.mkdir(parents=True, exist_ok=True)
            return default
        folder = self.absolute_input(value, what)
        self.check_allowed(folder, what)
        if not folder.is_dir():
            raise PathNotFound(f"{what} {folder} is not a folder")
        return folder

    def owned(self, path: str | os.PathLike[str]) -> bool:
        """Whether the server owns `path`: it lies inside the models folder, so it may move or delete it."""
        return strictly_inside(path, self.models_dir)
