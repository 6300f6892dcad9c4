"""The database behind every record, one interface with two engines: SQLite through aiosqlite (the embedded
default, server/db_sqlite.py) and PostgreSQL through asyncpg (several servers and workers sharing one database,
server/db_postgres.py). The SQL stays visible in the modules that own each table; it is written once, with `?`
placeholders, in the dialect both engines speak, and `Database.sql` names the few spots where they differ.

Every engine gives the same two things: `read` (SELECTs that see only committed data) and `write()` (one
transaction, committed when the block ends, rolled back if it raises)."""

from __future__ import annotations

import functools
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any, Generic, Literal, Protocol, TypeVar

import msgspec

from server.clock import utc_now

T = TypeVar("T", bound=msgspec.Struct)
Dialect = Literal["sqlite", "postgresql"]
_MIGRATION_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_MIGRATION_PACKAGES: dict[str, str] = {"sqlite": "server.migrations", "postgresql": "server.migrations.postgresql"}


# A msgspec pattern for text either engine can store: no NUL character (PostgreSQL's text cannot hold one).
NO_NUL = r"^[^\x00]*$"


class TextNotStorable(ValueError):
    """A value holds a NUL character (U+0000), which PostgreSQL's text cannot hold: refused before the query."""

    def __init__(self) -> None:
        super().__init__("a text value holds a NUL character (U+0000), which cannot be stored or looked up")


def migration_files(dialect: Dialect = "sqlite") -> list[tuple[int, str, str]]:
    """(number, name, sql) for every `NNNN_name.sql` of the engine's migrations, in order. The two engines'
    migrations keep the same numbers, so a schema version means the same tables on both."""
    found = []
    for entry in resources.files(_MIGRATION_PACKAGES[dialect]).iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [number for number, _, _ in found]
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"two migrations share a number: {numbers}")
    return found


def integrity_errors() -> tuple[type[Exception], ...]:
    """What a broken UNIQUE or foreign-key constraint raises, whichever engine."""
    try:
        import asyncpg
    except ImportError:
        return (sqlite3.IntegrityError,)
    return (sqlite3.IntegrityError, asyncpg.IntegrityConstraintViolationError)


class Cursor(Protocol):
    """A statement's result: rows (fetchone/fetchall/async for) and, for a write, how many rows it changed."""

    rowcount: int

    async def fetchone(self) -> Any: ...

    async def fetchall(self) -> list[Any]: ...


class Queryable(Protocol):
    """What SQL helpers need of a connection: the writer inside a transaction, or the reader. `execute` is
    awaited for its Cursor, or entered (`async with conn.execute(...) as cursor`)."""

    def execute(self, sql: str, parameters: Sequence[Any] = ...) -> Any: ...


class Rows:
    """The rows of one finished statement; awaitable, or an async context manager, like aiosqlite's cursor.
    `run` fetches them all at once (the statement is done before anyone reads a row); for a write it also
    gives the number of rows changed."""

    def __init__(self, run: Callable[[], Awaitable[tuple[list[Any], int]]]) -> None:
        self._runner = run
        self._rows: list[Any] = []
        self._next = 0
        self.rowcount = -1

    async def _run(self) -> Rows:
        rows, self.rowcount = await self._runner()
        self._rows = list(rows)
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


class SqlDialect:
    """The few expressions the two engines spell differently, for the modules that write SQL."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect

    def json_text(self, column: str, key: str) -> str:
        """The text value under `key` of a JSON text column (NULL when absent)."""
        if self.dialect == "sqlite":
            return f"json_extract({column}, '$.{key}')"
        return f"(({column})::jsonb ->> '{key}')"

    def json_count(self, column: str, key: str) -> str:
        """How many entries the JSON object (or array) under `key` of a JSON text column has."""
        if self.dialect == "sqlite":
            return f"(SELECT count(*) FROM json_each({column}, '$.{key}'))"
        return (
            f"(CASE jsonb_typeof(({column})::jsonb -> '{key}') WHEN 'object' THEN "
            f"(SELECT count(*) FROM jsonb_object_keys(({column})::jsonb -> '{key}')) "
            f"WHEN 'array' THEN jsonb_array_length(({column})::jsonb -> '{key}') ELSE 0 END)"
        )


class Database(ABC):
    """One engine's connections. Subclasses: SQLiteDatabase, PostgresDatabase."""

    dialect: Dialect

    @property
    def sql(self) -> SqlDialect:
        return SqlDialect(self.dialect)

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply the migrations not yet applied."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def migrate(self) -> list[int]:
        """Apply the pending migrations in one transaction; return the numbers applied."""

    @property
    @abstractmethod
    def read(self) -> Queryable:
        """For SELECTs: each statement sees only committed data, all that was committed before it started."""

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[Any]:
        """One transaction: committed when the block ends, rolled back if it raises. Writers of one process
        take turns, as SQLite's single writer does, so a read-modify-write inside one block is never interleaved
        with another of the same process."""

    def describe(self) -> str:
        """Where the data is, for logs (no password)."""
        return self.dialect


class ItemStorage(Generic[T]):
    """JSON documents of one Struct type keyed by id, in a table `(id, data, created_at, updated_at)`."""

    def __init__(self, db: Database, table: str, item_type: type[T]) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"bad table name {table!r}")
        self.db = db
        self.table = table
        self._item_type = item_type
        self._encoder = msgspec.json.Encoder()

    @functools.cached_property
    def _decoder(self) -> msgspec.json.Decoder[T]:
        # Built on first use: msgspec compiles a decoder for the whole type tree, tens of milliseconds for a
        # session, which the server need not spend before it answers its first request.
        return msgspec.json.Decoder(self._item_type)

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
