"""PostgreSQL through asyncpg: a pool of connections, the same numbered migrations (server/migrations/postgresql),
and the `?` placeholders of the shared SQL turned into `$1, $2...`.

Reads take any pooled connection (READ COMMITTED: each statement sees what was committed before it began, as
SQLite's reader does). Writes of this process take turns behind one lock, like SQLite's single writer, so the
code written for SQLite keeps its meaning; writers of other processes meet in PostgreSQL's row locks, which
the queue (server/graph/shared_queue.py) takes explicitly."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from server import db as db_module
from server.clock import utc_now
from server.db import Database, Rows, TextNotStorable

log = logging.getLogger(__name__)

# One number for every process that migrates this database: the first takes it, the others wait, then find
# nothing left to do.
_MIGRATION_LOCK = 0x1A6E_0001
# SQLite's planner hint; PostgreSQL plans for itself.
_INDEXED_BY = re.compile(r"\s+INDEXED BY \w+")
_RETURNS_ROWS = re.compile(r"^\s*(SELECT|WITH|VALUES)\b|\bRETURNING\b", re.IGNORECASE)


@functools.lru_cache(maxsize=2048)
def translate(sql: str) -> str:
    """`?` placeholders (outside quoted text) become `$n`; SQLite-only hints are dropped."""
    out: list[str] = []
    number = 0
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return _INDEXED_BY.sub("", "".join(out))


def _rowcount(status: str) -> int:
    """asyncpg's command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0") as a row count."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else -1


async def _run(conn: asyncpg.Connection, sql: str, parameters: Sequence[Any]) -> tuple[list[Any], int]:
    if any(isinstance(value, str) and "\x00" in value for value in parameters):
        raise TextNotStorable  # SQLite would keep it; asyncpg would fail the whole transaction with an error
    query = translate(sql)
    if _RETURNS_ROWS.search(query):
        rows = await conn.fetch(query, *parameters)
        return list(rows), len(rows)
    return [], _rowcount(await conn.execute(query, *parameters))


class PgConnection:
    """One connection inside a transaction, used as the SQLite writer is (`execute(sql, params)`)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Rows:
        return Rows(lambda: _run(self.connection, sql, parameters))


class PgReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Rows:
        async def run() -> tuple[list[Any], int]:
            async with self.pool.acquire() as conn:
                return await _run(conn, sql, parameters)

        return Rows(run)


def redacted(url: str) -> str:
    """The URL without its password, for logs and /app/config."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, max_connections: int = 10) -> None:
        self.url = url
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._write_lock: asyncio.Lock | None = None

    def describe(self) -> str:
        return f"postgresql ({redacted(self.url)})"

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self) -> None:
        self._write_lock = asyncio.Lock()
        # Connections that broke (the server restarted) are dropped by the pool and replaced on the next acquire.
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.max_connections)
        await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @property
    def read(self) -> PgReader:
        return PgReader(self.pool)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[PgConnection]:
        if self._write_lock is None:
            raise RuntimeError("database is not open")
        async with self._write_lock, self.pool.acquire() as conn, conn.transaction():
            yield PgConnection(conn)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for the queue's own transactions (no process-wide turn-taking)."""
        async with self.pool.acquire() as conn:
            yield conn

    async def listen(self, channels: Mapping[str, Callable[..., None]], what: str) -> asyncpg.Connection | None:
        """A connection of its own that LISTENs on `channels` (name -> callback); None, with a warning, while the
        database cannot be reached: the caller polls meanwhile and tries again."""
        try:
            connection = await asyncpg.connect(self.url)
            for channel, callback in channels.items():
                await connection.add_listener(channel, callback)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot LISTEN for %s yet (polling instead): %s", what, exc)
            return None
        return connection

    async def migrate(self) -> list[int]:
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
            try:
                return await self._migrate(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)

    async def _migrate(self, conn: asyncpg.Connection) -> list[int]:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(number INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
        )
        done = {row[0] for row in await conn.fetch("SELECT number FROM schema_migrations")}
        pending = [item for item in db_module.migration_files("postgresql") if item[0] not in done]
        if not pending:
            return []
        now = utc_now()
        async with conn.transaction():
            for number, name, sql in pending:
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (number, name, applied_at) VALUES ($1, $2, $3)", number, name, now
                )
        for number, name, _ in pending:
            log.info("applied migration %04d_%s", number, name)
        return [number for number, _, _ in pending]
