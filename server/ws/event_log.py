"""Events through a shared PostgreSQL: what every server and worker emits goes into the `events` table, and
every server relays the table, in `seq` order, to its own WebSocket hub.

Writing: events wait in an outbox and go in batches, one transaction each, under an advisory lock, numbered by
the `event_seq` sequence and announced with `NOTIFY imagegraph_events`. The lock makes commit order the `seq`
order, so a reader that sees event N has every event before it: no gap, and each server's `seq` is the same
number for the same event. Relaying: a server LISTENs (and polls once a second, for a NOTIFY lost while the
database was away), reads what follows the last seq it relayed, and publishes it to its hub as it is; `since`
replays from the hub's ring, which starts filled from the table, so a client may reconnect to any server.

A progress preview is a few KB of PNG in a data URL: it goes into the table with the rest; the NOTIFY carries
only a number, far below PostgreSQL's 8000-byte payload limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from server.clock import utc_now
from server.events import Event, ServerEvent, on_loop
from server.tasks import stop_tasks

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.ws.hub import EventHub

log = logging.getLogger(__name__)

EVENTS_CHANNEL = "imagegraph_events"
_EVENT_LOCK = 0x1A6E_0002
# How often a relay reads the table without being told to (a NOTIFY missed while reconnecting).
POLL_S = 1.0
# Rows read per relay query; more simply take another round.
RELAY_BATCH = 1_000
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(ServerEvent)


class EventLog:
    """`emit` (any thread) for this process's producers; with a hub, also the relay into it."""

    def __init__(self, db: PostgresDatabase, hub: EventHub | None, retention: int) -> None:
        self.db = db
        self.hub = hub
        self.retention = retention
        self._outbox: list[Event] = []
        self._outbox_ready = asyncio.Event()
        self._relay_wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self._relayed = 0
        self._written_since_trim = 0
        self._stopping = False
        # For `settled`: events queued, events written, and (written count, last seq) of recent batches.
        self._queued = 0
        self._written = 0
        self._batches: deque[tuple[int, int]] = deque(maxlen=256)
        self._progress = asyncio.Condition()

    # writing

    def emit(self, event: Event) -> None:
        """Queue an event for the table. Never blocks; from another thread it is handed to the loop."""
        on_loop(self._loop, self._loop_thread, self._queue, event)

    def _queue(self, event: Event) -> None:
        self._outbox.append(event)
        self._queued += 1
        self._outbox_ready.set()

    async def settled(self, timeout_s: float = 2.0) -> None:
        """Until every event queued so far is stored and relayed to this server's hub: the HTTP layer awaits
        this before it answers, so a client that got the answer finds the events it caused on the WebSocket,
        as it does on SQLite. Gives up after `timeout_s` (the database away): the events still follow."""
        target = self._queued

        def done() -> bool:
            seq = self._batch_seq(target)
            return seq is not None and self._relayed >= seq

        if self.hub is None or done():
            return
        async with self._progress:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._progress.wait_for(done)

    def _batch_seq(self, count: int) -> int | None:
        """The seq by which the first `count` events queued were all stored; None while some are not."""
        if count == 0:
            return 0
        if self._written < count:
            return None
        for written, seq in self._batches:
            if written >= count:
                return seq
        return self._batches[-1][1] if self._batches else 0

    async def _notify_progress(self) -> None:
        async with self._progress:
            self._progress.notify_all()

    async def _write_loop(self) -> None:
        while not (self._stopping and not self._outbox):
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                await self._write(batch)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                # The database is away: keep the events, in order, and try again shortly.
                log.warning("could not store %d event(s), retrying: %s", len(batch), exc)
                self._outbox = batch + self._outbox
                await asyncio.sleep(0.5)

    async def _write(self, batch: list[Event]) -> None:
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _EVENT_LOCK)
            numbers = await conn.fetch("SELECT nextval('event_seq') FROM generate_series(1, $1)", len(batch))
            rows = []
            for event, seq in zip(batch, sorted(row[0] for row in numbers), strict=True):
                event.seq = seq
                event.timestamp = utc_now()
                rows.append((seq, getattr(event, "session_id", None), _encoder.encode(event).decode()))
            await conn.executemany("INSERT INTO events (seq, session_id, frame) VALUES ($1, $2, $3)", rows)
            await conn.execute("SELECT pg_notify($1, $2)", EVENTS_CHANNEL, str(rows[-1][0]))
            self._written_since_trim += len(rows)
            if self._written_since_trim >= 1_000:
                # Bounded retention: keep the newest `retention` events (at least 10,000, as the hub's ring).
                await conn.execute("DELETE FROM events WHERE seq <= $1", rows[-1][0] - self.retention)
                self._written_since_trim = 0
        self._written += len(rows)
        self._batches.append((self._written, rows[-1][0]))
        # This server's relay need not wait for its own NOTIFY to come back.
        self._relay_wake.set()
        await self._notify_progress()

    # relaying

    async def _start_relay(self) -> None:
        assert self.hub is not None
        async with self.db.connection() as conn:
            rows = await conn.fetch("SELECT seq, frame FROM events ORDER BY seq DESC LIMIT $1", self.retention)
            last = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM events")
        history = [(_decoder.decode(frame), frame) for _, frame in reversed(rows)]
        self.hub.resume_from(history, last)
        self._relayed = last
        await self._listen()

    async def _listen(self) -> None:
        self._listener = await self.db.listen({EVENTS_CHANNEL: self._notified}, "events")

    def _notified(self, *_: object) -> None:
        self._relay_wake.set()

    async def _relay_loop(self) -> None:
        assert self.hub is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._relay_wake.wait()
            self._relay_wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                await self._relay_new()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("event relay paused, the database is away: %s", exc)
                await asyncio.sleep(POLL_S)

    async def _relay_new(self) -> None:
        assert self.hub is not None
        while True:
            rows = await self.db.pool.fetch(
                "SELECT seq, frame FROM events WHERE seq > $1 ORDER BY seq LIMIT $2", self._relayed, RELAY_BATCH
            )
            for seq, frame in rows:
                self.hub.publish_numbered(_decoder.decode(frame), frame)
                self._relayed = seq
            if rows:
                await self._notify_progress()
            if len(rows) < RELAY_BATCH:
                return

    # life cycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        if self.hub is not None:
            await self._start_relay()
            self._tasks.append(asyncio.create_task(self._relay_loop(), name="imagegraph-event-relay"))
        self._tasks.append(asyncio.create_task(self._write_loop(), name="imagegraph-event-writer"))

    async def stop(self) -> None:
        """Store what is still in the outbox, then stop writing and relaying."""
        self._stopping = True
        self._outbox_ready.set()
        writer = self._tasks[-1] if self._tasks else None
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5.0):
                    await asyncio.shield(writer)
        await stop_tasks(self._tasks)
        self._tasks = []
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
