"""`imagegraph worker`: the executor alone, on a shared PostgreSQL (docs/api.md §Workers). It claims queued
sessions, runs them on its device with the models of the shared root, writes images into the root's one
folder, and emits events into the database, from where every server relays them. No HTTP, no model sync, no
image reconciliation: the servers own those."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from server.app import build_services
from server.config import Settings
from server.db_postgres import PostgresDatabase
from server.events import Event
from server.graph.shared_worker import SharedExecutor
from server.journal import Journal
from server.ws.event_log import EventLog
from server.ws.hub import EventHub

log = logging.getLogger("imagegraph")


async def run_worker(settings: Settings) -> None:
    """Run sessions until SIGINT or SIGTERM; the session in flight goes back to the queue, first in line."""
    settings.create_layout()
    db = PostgresDatabase(settings.database)
    await db.open()
    event_log = EventLog(db, hub=None, retention=settings.ws_replay_events)
    journal = Journal()

    def emit(event: Event) -> None:
        event_log.emit(event)
        with contextlib.suppress(Exception):
            journal(event)

    services = build_services(settings, db, EventHub(), emit)
    executor = services.executor
    assert isinstance(executor, SharedExecutor)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(db.close)
        await event_log.start()
        stack.push_async_callback(event_log.stop)
        await services.models.start_reading()
        await executor.start()
        stack.push_async_callback(executor.stop)
        log.info("imagegraph worker %s ready on %s (%s)", executor.name, executor.device_name, db.describe())
        await stop.wait()
        log.info("imagegraph worker %s stopping", executor.name)
