"""The queue in a shared PostgreSQL: sessions invoked on any server run on any worker (docs/api.md §Workers).
This module is the queue's side every server has (submit, cancel, status, reaping); the worker's side (claim,
lease, guarded saves) is server/graph/shared_worker.py.

The sessions table is the queue, as procrastinate, pgqueuer or Oban keep theirs. A worker claims the oldest
queued session with `SELECT ... FOR UPDATE SKIP LOCKED` and marks it running in the same transaction, with a
lease (`lease_owner`, `lease_expires_at`) that it renews while it works (every progress save, and a heartbeat
between). Every save of a running session is guarded by the lease, so a worker that lost its session can no
longer write it. Any process finds leases that ran out: the session goes back to the queue, first in line, at
most `max_attempts` times, then it is `failed` with the reason; what the lost try published is deleted.

Cancel sets `cancel_requested` and NOTIFYs `imagegraph_cancel`; the worker running the session stops before its
next step (the heartbeat reads the flag too, for a NOTIFY missed). `NOTIFY imagegraph_queue` wakes idle workers
and refreshes every server's queue status; both also poll, so a lost notification costs a second at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from server.clock import utc_now
from server.config import Settings
from server.events import Emit, QueueStatus, SessionCanceled, SessionComplete
from server.graph.executor import Executor, QueueState, SessionConflict, WorkerList
from server.graph.leases import QUEUE_CHANNEL, list_workers, reap_expired_leases
from server.graph.session import Session, SessionStore
from server.models.schema import ModelIdentifier
from server.tasks import stop_tasks

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.images.service import ImageService
    from server.models.catalogue import ModelCatalogue

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "imagegraph_cancel"
POLL_S = 1.0

_session_decoder = msgspec.json.Decoder(Session)
_encoder = msgspec.json.Encoder()


def main_model_key(session: Session) -> str | None:
    """The main model the graph names first (for affinity), or None."""
    for node in session.graph.nodes.values():
        model = getattr(node, "model", None)
        if isinstance(model, ModelIdentifier) and model.model_type == "main":
            return model.key
    return None


class SharedQueue(Executor):
    """The Executor's interface (submit, cancel, status, live) on the shared queue. SharedExecutor
    (server/graph/shared_worker.py) adds the worker that claims and runs sessions in this process."""

    def __init__(
        self,
        settings: Settings,
        emit: Emit,
        store: SessionStore,
        images: ImageService,
        models: ModelCatalogue,
        db: PostgresDatabase,
    ) -> None:
        super().__init__(settings, emit, store, images, models)
        self.db = db
        self._state = QueueState(running=None, pending=[])
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncpg.Connection | None = None
        self._claim_wake = asyncio.Event()
        self._status_wake = asyncio.Event()
        self._status_tasks: set[asyncio.Task[None]] = set()

    # life cycle

    async def start(self) -> None:
        await self._listen()
        await self._refresh_status()
        self._tasks.append(asyncio.create_task(self._maintain(), name="imagegraph-queue-maintenance"))

    async def stop(self) -> None:
        self._stopping = True
        self._claim_wake.set()
        await super().stop()
        await stop_tasks(self._tasks)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def _listen(self) -> None:
        channels: dict[str, Callable[..., None]] = {
            QUEUE_CHANNEL: self._queue_notified,
            CANCEL_CHANNEL: self._cancel_notified,
        }
        self._listener = await self.db.listen(channels, "the queue")

    def _queue_notified(self, *_: object) -> None:
        self._claim_wake.set()
        self._status_wake.set()

    def _cancel_notified(self, _conn: object, _pid: object, _channel: object, payload: object) -> None:
        if self._running is not None and self._running.id == payload:
            self._cancel.set()

    # the interface routes use

    def status(self) -> QueueState:
        state = self._state
        if self._running is not None and state.running is None:
            return QueueState(running=self._running.id, pending=[i for i in state.pending if i != self._running.id])
        return state

    async def submit(self, session_id: str, all_nodes: bool = True) -> Session:
        async with self.db.connection() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT data FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            if row is None:
                raise LookupError(session_id)
            session = _session_decoder.decode(row[0])
            if session.status in ("queued", "running"):
                raise SessionConflict(f"session {session_id} is already {session.status}")
            if session.status != "pending":
                # Finished: run again from the start. A pending one run part-way keeps its progress; the worker
                # that claims it continues it if it still holds the half-done run, else starts afresh.
                session.executed, session.results, session.errors = [], {}, {}
            session.status = "queued"
            session.queued_at = session.updated_at = utc_now()
            session.attempts = 0
            await conn.execute(
                "UPDATE sessions SET data = $1, updated_at = $2, cancel_requested = false, run_one_node = $3, "
                "model_key = $4, lease_owner = NULL, lease_expires_at = NULL WHERE id = $5",
                _encoder.encode(session).decode(),
                session.updated_at,
                not all_nodes,
                main_model_key(session),
                session_id,
            )
            await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, session_id)
        await self._queue_changed_shared()
        return session

    async def cancel(self, session_id: str) -> None:
        async with self.db.connection() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT data FROM sessions WHERE id = $1 FOR UPDATE", session_id)
            if row is None:
                raise LookupError(session_id)
            session = _session_decoder.decode(row[0])
            if session.status == "canceled":
                return
            if session.status == "running":
                await conn.execute("UPDATE sessions SET cancel_requested = true WHERE id = $1", session_id)
                await conn.execute("SELECT pg_notify($1, $2)", CANCEL_CHANNEL, session_id)
                if self._running is not None and self._running.id == session_id:
                    self._cancel.set()
                return
            if session.status != "queued":
                raise SessionConflict(
                    f"session {session_id} is {session.status}; only a queued or running one can be canceled"
                )
            session.status = "canceled"
            session.updated_at = utc_now()
            await conn.execute(
                "UPDATE sessions SET data = $1, updated_at = $2 WHERE id = $3",
                _encoder.encode(session).decode(),
                session.updated_at,
                session_id,
            )
            await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, session_id)
        self.emit(SessionCanceled(session_id=session_id))
        self.emit(SessionComplete(session_id=session_id, status="canceled"))
        await self._queue_changed_shared()

    # queue status: read from the table, refreshed when told and once a second

    async def _read_status(self) -> QueueState:
        rows = await self.db.pool.fetch(
            "SELECT id, status FROM sessions WHERE status IN ('queued', 'running') "
            "ORDER BY coalesce(queued_at, updated_at), rowid"
        )
        running = [row[0] for row in rows if row[1] == "running"]
        return QueueState(
            running=running[0] if running else None, pending=[row[0] for row in rows if row[1] == "queued"]
        )

    async def _refresh_status(self) -> bool:
        state = await self._read_status()
        changed = state != self._state
        self._state = state
        return changed

    async def _queue_changed_shared(self) -> None:
        """After this process changed the queue: read it back, tell this process's clients, wake the workers."""
        with contextlib.suppress(OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self._refresh_status()
        state = self.status()
        self.emit(QueueStatus(running=state.running, pending=state.pending))
        self._claim_wake.set()

    def _queue_changed(self) -> None:
        # The base executor calls this synchronously around a run (after the claim, after the final save): the
        # queue is read back in the background and announced as the database has it then.
        task = asyncio.get_running_loop().create_task(self._queue_changed_shared())
        self._status_tasks.add(task)
        task.add_done_callback(self._status_tasks.discard)

    async def _maintain(self) -> None:
        """Reap expired leases, mark silent workers lost, keep the queue status fresh."""
        next_reap = 0.0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_S):
                    await self._status_wake.wait()
            self._status_wake.clear()
            try:
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
                if loop.time() >= next_reap:
                    await self.reap()
                    next_reap = loop.time() + max(1.0, self.settings.lease_s / 3)
                await self._refresh_status()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("queue maintenance paused, the database is away: %s", exc)

    async def reap(self) -> list[str]:
        """Sessions whose lease ran out go back to the queue (or fail after max_attempts); what their lost try
        published is deleted. Returns their ids."""
        own = self._running.id if self._running is not None else None
        return await reap_expired_leases(self.db, self.settings, self.images, self.emit, own)

    async def workers(self) -> WorkerList:
        return await list_workers(self.db)
