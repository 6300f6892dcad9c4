"""What concurrent requests read: every commit made before a read is in it, and one answer is one snapshot.
Both were found by the load test (test_load.py) and are pinned here without timing: the overlap that load
produces by chance is built on purpose."""

from __future__ import annotations

import asyncio

from server.db_sqlite import SQLiteDatabase
from server.graph.standard import txt2img_graph
from server.images.records import list_images
from server.images.schema import ListImagesQuery


def test_a_read_sees_every_earlier_commit_while_other_reads_are_unfinished(tmp_path):
    async def scenario() -> tuple[int, list[int]]:
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        try:
            async with db.write() as conn:
                await conn.execute("CREATE TABLE t (id INTEGER)")
                await conn.execute("INSERT INTO t VALUES (1), (2)")
            # Another request's read, started and not yet fetched: under load there is always one. SQLite held
            # the reader's snapshot open for it, so reads that started later missed what was committed since
            # (a session created, then 404 to its invoke).
            async with db.read.execute("SELECT id FROM t ORDER BY id") as unfinished:
                async with db.write() as conn:
                    await conn.execute("INSERT INTO t VALUES (3)")
                async with db.read.execute("SELECT count(*) FROM t") as cursor:
                    (count,) = await cursor.fetchone()
                earlier = [row[0] for row in await unfinished.fetchall()]
            return count, earlier
        finally:
            await db.close()

    count, earlier = asyncio.run(scenario())
    assert count == 3
    assert earlier == [1, 2]  # the unfinished read answers as of when it started


def test_a_page_of_images_and_its_total_come_from_one_snapshot(tmp_path):
    async def scenario() -> tuple[int, int]:
        db = SQLiteDatabase(tmp_path / "x.db")
        await db.open()
        try:
            async with db.write() as conn:
                for i in range(5):
                    await conn.execute(
                        "INSERT INTO images (image_name, image_category, width, height, created_at, updated_at, "
                        "is_intermediate, starred) VALUES (?, 'user', 8, 8, ?, ?, 0, 0)",
                        (f"{i:08d}-0000-4000-8000-000000000000.png", f"2026-01-0{i + 1}", f"2026-01-0{i + 1}"),
                    )
            items, total = await list_images(DeleteAfterFirstStatement(db), ListImagesQuery(limit=50))
            return len(items), total
        finally:
            await db.close()

    count, total = asyncio.run(scenario())
    # Both as before the delete: never a page of 5 rows with a total of 2.
    assert (count, total) == (5, 5)


class DeleteAfterFirstStatement:
    """The real reader, with another client's delete of three images committed right after the first statement
    read through it (what concurrent requests do by chance)."""

    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db
        self.statements = 0

    def execute(self, sql: str, parameters=()):
        self.statements += 1
        rows = self.db.read.execute(sql, parameters)
        return _After(self._delete(), rows) if self.statements == 2 else rows

    async def _delete(self) -> None:
        async with self.db.write() as conn:
            await conn.execute("DELETE FROM images WHERE rowid <= 3")


class _After:
    """Awaitable and async context manager: runs `first`, then gives the rows of the statement."""

    def __init__(self, first, rows) -> None:
        self.first = first
        self.rows = rows

    async def _run(self):
        await self.first
        return await self.rows

    def __await__(self):
        return self._run().__await__()

    async def __aenter__(self):
        return await self._run()

    async def __aexit__(self, *exc: object) -> None:
        return None


def test_the_queue_never_looks_empty_while_a_session_waits_to_run(settings, tiny_model_files):
    """Between taking the next session off the queue and marking it running, the executor reads it from the
    database; the queue answered `{"running": null, "pending": []}` meanwhile, so a client waiting for an empty
    queue stopped waiting before the last session ran (found by the load test). Here a slow read holds the
    database reader exactly then."""
    from server.events import SessionComplete
    from tests.graph.conftest import generation_app

    with generation_app(settings, tiny_model_files) as (client, events):
        model = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
        first, second = (
            client.post("/api/v1/sessions/", json=txt2img_graph(model, "x", width=64, height=64, steps=1000)).json()[
                "id"
            ]
            for _ in range(2)
        )
        for session_id in (first, second):
            assert client.put(f"/api/v1/sessions/{session_id}/invoke").status_code == 202
        assert client.get("/api/v1/queue").json() == {"running": first, "pending": [second]}

        db = client.app.state.services.db

        async def slow_read() -> None:
            # Seconds of work on the reader's one thread: every read queued after it waits.
            sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30000000) SELECT count(*) FROM c"
            async with db.read.execute(sql) as cursor:
                await cursor.fetchone()

        reading = client.portal.start_task_soon(slow_read)
        client.delete(f"/api/v1/sessions/{first}/invoke")
        events.wait_for(lambda e: isinstance(e, SessionComplete) and e.session_id == first)
        queue = client.get("/api/v1/queue").json()
        client.delete(f"/api/v1/sessions/{second}/invoke")
        reading.result(timeout=120)
    assert queue in ({"running": None, "pending": [second]}, {"running": second, "pending": []})
