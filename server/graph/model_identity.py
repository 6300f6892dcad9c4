"""What a worker checks before it runs a session on a shared root: that every model file the graph names is the
file the other processes read under that name. Machines mount the root separately, and a stale or different
copy behind one mount would make that worker's images quietly differ from the rest.

A model's identity is its size and a hash of its first and last MiB (for a folder: of each file's name, size
and ends), cheap enough for multi-GB files. The first process to use a model records it in the `model_identities`
table; a process that finds another identity refuses the session, naming the file. When a server's sync sees a
model change on disk (`models_changed` with it updated or removed), the record goes, and the next use records
the new file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from server.graph.session import Session
from server.models.schema import ModelIdentifier

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.models.catalogue import ModelCatalogue

END_BYTES = 1024**2


def _hash_ends(digest: hashlib.blake2b, path: Path, size: int) -> None:
    with open(path, "rb") as handle:
        digest.update(handle.read(END_BYTES))
        if size > 2 * END_BYTES:
            handle.seek(size - END_BYTES)
            digest.update(handle.read(END_BYTES))


def _files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and ".cache" not in p.parts)


def signature(path: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of every file: when none of them moved, the identity has not either."""
    return tuple((str(item), (st := item.stat()).st_size, st.st_mtime_ns) for item in _files(path))


def file_identity(path: Path) -> str:
    """`<bytes>:<hash>` of a model file or folder."""
    digest = hashlib.blake2b(digest_size=16)
    if path.is_dir():
        total = 0
        for item in _files(path):
            size = item.stat().st_size
            total += size
            digest.update(f"{item.relative_to(path).as_posix()}\0{size}\0".encode())
            _hash_ends(digest, item, size)
        return f"{total}:{digest.hexdigest()}"
    size = path.stat().st_size
    _hash_ends(digest, path, size)
    return f"{size}:{digest.hexdigest()}"


def named_models(session: Session) -> Iterator[tuple[str, ModelIdentifier]]:
    """(node id, model) for every model a node of the graph names."""
    for node_id, node in session.graph.nodes.items():
        for field in node.__struct_fields__:
            value = getattr(node, field, None)
            values = value if isinstance(value, list) else [value]
            for item in values:
                if isinstance(item, ModelIdentifier):
                    yield node_id, item


class ModelIdentities:
    def __init__(self, db: PostgresDatabase, models: ModelCatalogue) -> None:
        self.db = db
        self.models = models
        # signature -> identity: a file is hashed once while it stays as it is.
        self._known: dict[tuple[tuple[str, int, int], ...], str] = {}

    async def _identity(self, path: Path) -> str:
        seen = await asyncio.to_thread(signature, path)
        if seen not in self._known:
            self._known[seen] = await asyncio.to_thread(file_identity, path)
        return self._known[seen]

    async def problem(self, session: Session) -> tuple[str, str] | None:
        """(node id, why) for the first model of the session whose file is not the recorded one; else None. A
        model that is not registered, or whose file is missing, is left to the node to report."""
        for node_id, model in named_models(session):
            try:
                path = self.models.absolute_path(self.models.existing(model.key))
                identity = await self._identity(path)
            except Exception:
                continue
            async with self.db.connection() as conn:
                await conn.execute(
                    "INSERT INTO model_identities (key, identity) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                    model.key,
                    identity,
                )
                recorded = await conn.fetchval("SELECT identity FROM model_identities WHERE key = $1", model.key)
            if recorded != identity:
                return node_id, (
                    f"model {model.key}: {path} on worker {os.uname().nodename} is not the file the other processes "
                    f"use (size:hash {identity}, recorded {recorded}); make the shared root the same on every "
                    "machine, or run /api/v1/models/sync on a server if the model was replaced"
                )
        return None

    async def forget(self, keys: list[str]) -> None:
        """Models changed on disk: the next use records their new files."""
        if keys:
            async with self.db.connection() as conn:
                await conn.execute("DELETE FROM model_identities WHERE key = ANY($1::text[])", keys)
