"""Migrations are applied once; ItemStorage stores JSON documents and gives back the exact stored string."""

import asyncio

import msgspec
import pytest

from server.db import ItemStorage, migration_files
from server.db_sqlite import SQLiteDatabase


class Doc(msgspec.Struct):
    id: str
    title: str
    tags: list[str] = []


def run(coro):
    return asyncio.run(coro)


def test_migrations_are_applied_once(tmp_path):
    async def scenario():
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        async with db.read.execute("SELECT number FROM schema_migrations ORDER BY number") as cursor:
            first = [row[0] for row in await cursor.fetchall()]
        await db.close()
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        again = await db.migrate()
        async with db.read.execute("SELECT count(*) FROM schema_migrations") as cursor:
            (count,) = await cursor.fetchone()
        async with db.read.execute("PRAGMA journal_mode") as cursor:
            (mode,) = await cursor.fetchone()
        await db.close()
        return first, again, count, mode

    first, again, count, mode = run(scenario())
    assert first == [number for number, _, _ in migration_files()]
    assert again == []
    assert count == len(first)
    assert mode == "wal"


def test_item_storage_round_trip_and_raw(tmp_path):
    async def scenario():
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        store = ItemStorage(db, "sessions", Doc)
        await store.set("a", Doc(id="a", title="first", tags=["x"]))
        await store.set("b", Doc(id="b", title="second"))
        got = await store.get("a")
        raw = await store.get_raw("a")
        missing = await store.get("nope"), await store.get_raw("nope")
        await store.set("a", Doc(id="a", title="first, edited"))
        edited = await store.get("a")
        page, total = await store.list(offset=0, limit=1)
        deleted = await store.delete("b"), await store.delete("b")
        after, total_after = await store.list()
        await db.close()
        return got, raw, missing, edited, page, total, deleted, after, total_after

    got, raw, missing, edited, page, total, deleted, after, total_after = run(scenario())
    assert got == Doc(id="a", title="first", tags=["x"])
    assert raw == '{"id":"a","title":"first","tags":["x"]}'
    assert missing == (None, None)
    assert edited.title == "first, edited"
    assert total == 2 and page == [Doc(id="b", title="second")]  # newest first
    assert deleted == (True, False)
    assert [d.id for d in after] == ["a"] and total_after == 1


def test_failed_write_is_rolled_back(tmp_path):
    async def scenario():
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        with pytest.raises(RuntimeError):
            async with db.write() as conn:
                await conn.execute(
                    "INSERT INTO sessions (id, data, created_at, updated_at) VALUES ('z', '{}', 'now', 'now')"
                )
                raise RuntimeError("boom")
        async with db.read.execute("SELECT count(*) FROM sessions") as cursor:
            (count,) = await cursor.fetchone()
        await db.close()
        return count

    assert run(scenario()) == 0


def test_a_failing_migration_applies_none_of_the_pending_ones(tmp_path, monkeypatch):
    import sqlite3

    import server.db

    good = (9001, "good", "CREATE TABLE good_one (id INTEGER);")
    bad = (9002, "bad", "CREATE TABLE broken (;")
    monkeypatch.setattr(server.db, "migration_files", lambda dialect="sqlite": [*migration_files(dialect), good, bad])

    async def scenario():
        db = SQLiteDatabase(tmp_path / "x.db")
        with pytest.raises(Exception, match="syntax error"):
            await db.open()
        await db.close()

    run(scenario())
    with sqlite3.connect(tmp_path / "x.db") as conn:
        applied = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert applied == 0
    assert "good_one" not in tables and "sessions" not in tables
