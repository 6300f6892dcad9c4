"""SQLite through aiosqlite: WAL mode, numbered migrations, one writer and one reader.

One connection writes (behind a lock, in explicit transactions) and one reads, so a reader never sees
another task's half-done transaction and readers never wait on the write lock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from server import db as db_module
from server.clock import utc_now
from server.db import Database, Rows

log = logging.getLogger(__name__)


class SQLiteDatabase(Database):
    dialect = "sqlite"

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
        pending = [
            (number, name, sql) for number, name, sql in db_module.migration_files("sqlite") if number not in done
        ]
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
        async def run() -> tuple[list[Any], int]:
            return list(await self.connection.execute_fetchall(sql, parameters)), -1

        return Rows(run)
