"""SQLite through aiosqlite: WAL mode, numbered migrations, and ItemStorage for JSON documents.

One connection writes (behind a lock, in explicit transactions) and one reads, so a reader never sees
another task's half-done transaction and readers never wait on the write lock."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import aiosqlite
import msgspec

from server.clock import utc_now

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")


def migration_files() -> list[tuple[int, str, str]]:
    """(number, name, sql) for every `server/migrations/NNNN_name.sql`, in order."""
    found = []
    for entry in resources.files("server.migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


class Queryable(Protocol):
    """What SQL helpers need of a connection: the writer inside a transaction, or the reader."""

    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...


class Database:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock: asyncio.Lock | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = asyncio.Lock()
        self._writer = await self._connect()
        await self.migrate()
        self._reader = await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit we acknowledged survives power loss, not only a process crash.
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        return conn

    async def close(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                await conn.close()
        self._reader = self._writer = None

    @property
    def read(self) -> ReadConnection:
        """The connection for SELECTs; it only ever sees committed data, and all that was committed before the
        statement started."""
        if self._reader is None:
            raise RuntimeError("database is not open")
        return ReadConnection(self._reader)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction on the writer: committed when the block ends, rolled back if it raises."""
        if self._writer is None or self._write_lock is None:
            raise RuntimeError("database is not open")
        async with self._write_lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet recorded, in order, in one transaction; return the numbers applied."""
        assert self._writer is not None
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with self._writer.execute("SELECT number FROM schema_migrations") as cursor:
            done = {row[0] for row in await cursor.fetchall()}
        pending = [(number, name, sql) for number, name, sql in migration_files() if number not in done]
        if not pending:
            return []
        # All pending migrations as one script in one transaction: one round trip and one durable commit on a
        # first start, and a crash (or a failing statement) leaves the schema as it was.
        now = utc_now()
        parts = ["BEGIN IMMEDIATE;"]
        for number, name, sql in pending:
            parts += [
                sql,
                f"INSERT INTO schema_migrations (number, name, applied_at) VALUES ({number}, '{name}', '{now}');",
            ]
        parts.append("COMMIT;")
        assert self._write_lock is not None
        async with self._write_lock:
            try:
                await self._writer.executescript("\n".join(parts))
            except BaseException:
                if self._writer.in_transaction:
                    await self._writer.execute("ROLLBACK")
                raise
        for number, name, _ in pending:
            log.info("applied migration %04d_%s", number, name)
        applied = [number for number, _, _ in pending]
        return applied


class ReadConnection:
    """The reader, one whole statement at a time: `execute` runs the statement to its end in a single call on
    the connection's thread and hands back its rows, used like aiosqlite's cursor (`async with
    db.read.execute(sql, params) as cursor: await cursor.fetchone()`).

    Why not the bare connection: SQLite keeps a connection's read transaction - its snapshot of the database -
    open for as long as any of its statements is unfinished. Shared by concurrent requests, aiosqlite's execute
    and fetch (two calls) let one request's statement start before another's finished, on and on under load, so
    the reader went on seeing the database as it was when the overlap began: a session just created answered
    404 to its invoke (tests/reliability/test_load.py)."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Rows:
        return Rows(self.connection, sql, parameters)


class Rows:
    """The rows of one finished statement; awaitable, or an async context manager, like aiosqlite's cursor."""

    def __init__(self, connection: aiosqlite.Connection, sql: str, parameters: Sequence[Any]) -> None:
        self._run_args = (connection, sql, parameters)
        self._rows: list[Any] = []
        self._next = 0

    async def _run(self) -> Rows:
        connection, sql, parameters = self._run_args
        self._rows = list(await connection.execute_fetchall(sql, parameters))
        return self

    def __await__(self):
        return self._run().__await__()

    async def __aenter__(self) -> Rows:
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    async def fetchall(self) -> list[Any]:
        rows, self._next = self._rows[self._next :], len(self._rows)
        return rows

    def __aiter__(self) -> Rows:
        return self

    async def __anext__(self) -> Any:
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


class ItemStorage(Generic[T]):
    """JSON documents of one Struct type keyed by id, in a table `(id, data, created_at, updated_at)`."""

    def __init__(self, db: Database, table: str, item_type: type[T]) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"bad table name {table!r}")
        self.db = db
        self.table = table
        self._decoder = msgspec.json.Decoder(item_type)
        self._encoder = msgspec.json.Encoder()

    async def get_raw(self, item_id: str) -> str | None:
        """The stored JSON string exactly as written, without decoding it."""
        async with self.db.read.execute(f"SELECT data FROM {self.table} WHERE id = ?", (item_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def get(self, item_id: str) -> T | None:
        raw = await self.get_raw(item_id)
        return None if raw is None else self._decoder.decode(raw)

    async def set(self, item_id: str, item: T) -> None:
        data = self._encoder.encode(item).decode()
        now = utc_now()
        async with self.db.write() as conn:
            await conn.execute(
                f"INSERT INTO {self.table} (id, data, created_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET data = excluded.data, updated_at = excluded.updated_at",
                (item_id, data, now, now),
            )

    async def delete(self, item_id: str) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute(f"DELETE FROM {self.table} WHERE id = ?", (item_id,))
            return cursor.rowcount > 0

    async def list(self, offset: int = 0, limit: int = 50) -> tuple[list[T], int]:
        """A page of items, newest first, and the total count."""
        async with self.db.read.execute(
            f"SELECT data FROM {self.table} ORDER BY created_at DESC, id LIMIT ? OFFSET ?", (limit, offset)
        ) as cursor:
            rows = await cursor.fetchall()
        async with self.db.read.execute(f"SELECT count(*) FROM {self.table}") as cursor:
            (total,) = await cursor.fetchone()
        return [self._decoder.decode(row[0]) for row in rows], total
