"""Finding model files and folders on disk: `/models/search` below any folder, and the candidates that
sync considers in the models folder and the autoimport folders.

One `os.scandir` per directory and nothing else: the file type comes from the directory entry, and only
symlinks cost a `stat` (to follow them, and to recognise a loop by (st_dev, st_ino))."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from stat import S_ISDIR

from server.models.model_files import FOLDER_MARKERS, MODEL_SUFFIXES
from server.models.paths import inside
from server.models.schema import BASE_MODELS, MODEL_TYPES

log = logging.getLogger(__name__)
_warned: set[str] = set()


def nameable(path: str) -> bool:
    """Whether `path` can be given to a client: a name that is not valid UTF-8 (Python holds its bytes as
    lone surrogates) cannot go into JSON or models.yaml, so such files and folders are passed over."""
    if path.isascii():
        return True
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        if path not in _warned:
            _warned.add(path)
            log.warning("skipping %r: its name is not valid UTF-8; rename it to use it", path)
        return False
    return True


def search(folder: str | os.PathLike[str], allowed: Sequence[str] | None = None) -> list[str]:
    """Every model file (by extension) and model folder (holding a diffusers marker file) below
    `folder`, sorted. Hidden entries are skipped, model folders are not descended into, and a directory
    reached twice (a symlink loop, or two links to one place) is walked once. With `allowed` (real paths of
    folders), a symlink whose target lies outside all of them is not followed."""
    top = os.path.abspath(folder)
    found: list[str] = []
    stat = os.stat(top)
    seen = {(stat.st_dev, stat.st_ino)}
    _walk(top, stat.st_dev, seen, found, allowed)
    found.sort()
    return found


def _walk(
    folder: str, device: int, seen: set[tuple[int, int]], found: list[str], allowed: Sequence[str] | None
) -> None:
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return  # unreadable folders are skipped, like a plain os.walk does
    subfolders: list[tuple[str, int]] = []
    files: list[str] = []
    for entry in entries:
        name = entry.name
        if name in FOLDER_MARKERS:
            found.append(folder)  # a model folder: itself is the result, its contents are not
            return
        if name[0] == "." or not nameable(entry.path):
            continue
        try:
            if entry.is_symlink():
                if allowed is not None and not inside(os.path.realpath(entry.path), allowed):
                    continue
                target = entry.stat()  # follows the link; raises for a dangling one
                if S_ISDIR(target.st_mode):
                    identity = (target.st_dev, target.st_ino)
                    if identity not in seen:
                        seen.add(identity)
                        subfolders.append((entry.path, target.st_dev))
                    continue
            elif entry.is_dir(follow_symlinks=False):
                # d_ino from the directory listing: no stat needed for plain folders.
                identity = (device, entry.inode())
                if identity not in seen:
                    seen.add(identity)
                    subfolders.append((entry.path, device))
                continue
        except OSError:
            continue
        if name.lower().endswith(MODEL_SUFFIXES):
            files.append(entry.path)
    found.extend(files)
    for path, dev in subfolders:
        _walk(path, dev, seen, found, allowed)


class Candidate:
    """A file or folder sync may register, with what its location says about it."""

    __slots__ = ("hint_base", "hint_type", "path")

    def __init__(self, path: str, hint_base: str | None, hint_type: str | None) -> None:
        self.path = path
        self.hint_base = hint_base
        self.hint_type = hint_type


def candidates(models_dir: Path, autoimport_dir: Path, allowed: Sequence[str] | None = None) -> Iterator[Candidate]:
    """Direct children of `models/<base>/<type>/`, and everything `search` finds below `autoimport/<type>/`;
    with `allowed`, none reached through a symlink to somewhere outside those folders."""
    for base in BASE_MODELS:
        for model_type in MODEL_TYPES:
            folder = models_dir / base / model_type
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                if entry.name[0] == "." or not nameable(entry.path):
                    continue
                if allowed is not None and entry.is_symlink() and not inside(os.path.realpath(entry.path), allowed):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    continue
                if is_dir or entry.name.lower().endswith(MODEL_SUFFIXES):
                    yield Candidate(entry.path, base, model_type)
    for model_type in MODEL_TYPES:
        folder = autoimport_dir / model_type
        if not folder.is_dir():
            continue
        for path in search(folder, allowed):
            if path != str(folder):
                yield Candidate(path, None, model_type)
