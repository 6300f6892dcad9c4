"""A1111's model hashes: the sha256 of a checkpoint file, and its "short hash", the first 10 hex digits, which
A1111 writes as `Model hash:` and clients match models by. A diffusers folder has no one file to hash: its hash
is the sha256 of each of its files in the order of their path inside the folder, each fed as the path (POSIX),
a NUL byte, then its bytes; A1111 cannot load such a folder, so no client holds another hash for one.

Hashing a 7 GB checkpoint takes seconds to minutes, so no request waits for it: asking for a model's hash
queues it to be computed in a thread, one file at a time, and answers null until it is known. A hash is
remembered with the path, size and mtime of every file it covers (in `<models>/.cache/a1111_hashes.json`, so a
restart does not hash again); a file that changes gets hashed again the next time it is asked for."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import msgspec

from server.fileio import atomic_write
from server.graph.model_identity import signature

log = logging.getLogger(__name__)

CHUNK = 4 * 1024**2
SHORT = 10


class Stopped(Exception):
    """The hash was abandoned (the server is stopping)."""


def short(sha256: str | None) -> str | None:
    return sha256[:SHORT] if sha256 else None


def _files(path: Path) -> list[tuple[str, Path]]:
    if not path.is_dir():
        return [("", path)]
    found = [p for p in path.rglob("*") if p.is_file() and ".cache" not in p.relative_to(path).parts]
    return sorted((p.relative_to(path).as_posix(), p) for p in found)


def sha256_of(path: Path, stop: threading.Event | None = None) -> str:
    """The hash as the module's docstring defines it (blocking: call it in a thread)."""
    digest = hashlib.sha256()
    folder = path.is_dir()
    for name, item in _files(path):
        if folder:
            digest.update(name.encode() + b"\0")
        with open(item, "rb") as handle:
            while block := handle.read(CHUNK):
                if stop is not None and stop.is_set():
                    raise Stopped
                digest.update(block)
    return digest.hexdigest()


def stamp_of(path: Path) -> str | None:
    """What changes when any file under `path` does (size, mtime, name); None when it is not there."""
    try:
        return hashlib.blake2b(repr(signature(path)).encode(), digest_size=16).hexdigest()
    except OSError:
        return None


class Entry(msgspec.Struct):
    stamp: str
    sha256: str


class ModelHashes:
    def __init__(self, cache_path: Path) -> None:
        self.cache_path = cache_path
        self._known: dict[str, Entry] | None = None
        self._pending: dict[str, str] = {}  # path -> stamp, in the order asked
        self._worker: asyncio.Task[None] | None = None

    async def known(self, paths: Sequence[Path]) -> list[str | None]:
        """The sha256 of each path where known for its files as they are now; the others (when they exist) are
        queued to be hashed in the background, and are None."""
        stamps = await asyncio.to_thread(self._stamps, paths)
        assert self._known is not None
        found: list[str | None] = []
        for path, stamp in zip(paths, stamps, strict=True):
            entry = self._known.get(str(path))
            if entry is not None and entry.stamp == stamp:
                found.append(entry.sha256)
                continue
            found.append(None)
            if stamp is not None and str(path) not in self._pending:
                self._pending[str(path)] = stamp
        if self._pending and (self._worker is None or self._worker.done()):
            self._worker = asyncio.get_running_loop().create_task(self._work())
        return found

    async def settled(self) -> None:
        """Until the queue is empty (for tests and benchmarks)."""
        while self._worker is not None and not self._worker.done():
            await asyncio.shield(self._worker)

    def _stamps(self, paths: Sequence[Path]) -> list[str | None]:
        if self._known is None:
            self._known = self._load()
        return [stamp_of(path) for path in paths]

    def _load(self) -> dict[str, Entry]:
        try:
            return msgspec.json.decode(self.cache_path.read_bytes(), type=dict[str, Entry])
        except FileNotFoundError:
            return {}
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("model hashes: %s is unreadable (%s); hashing again", self.cache_path, exc)
            return {}

    async def _work(self) -> None:
        stop = threading.Event()
        try:
            while self._pending:
                path, stamp = next(iter(self._pending.items()))
                try:
                    digest = await asyncio.to_thread(self._hash, Path(path), stamp, stop)
                finally:
                    self._pending.pop(path, None)
                if digest is not None:
                    assert self._known is not None
                    self._known[path] = Entry(stamp=stamp, sha256=digest)
                    await asyncio.to_thread(self._save)
        finally:
            stop.set()  # a cancelled worker (the server stopping) leaves its thread at the next block

    def _hash(self, path: Path, stamp: str, stop: threading.Event) -> str | None:
        try:
            digest = sha256_of(path, stop)
        except OSError as exc:
            log.warning("model hashes: cannot read %s: %s", path, exc)
            return None
        # A file that changed while it was read has no hash yet: it is queued again when next asked for.
        return digest if stamp_of(path) == stamp else None

    def _save(self) -> None:
        assert self._known is not None
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.cache_path, msgspec.json.encode(self._known))
        except OSError as exc:
            log.warning("model hashes: cannot write %s: %s", self.cache_path, exc)
