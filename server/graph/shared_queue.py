"""The queue in a shared PostgreSQL: sessions invoked on any server run on any worker (docs/api.md §Workers).

The sessions table is the queue, as procrastinate, pgqueuer or Oban keep theirs. A worker claims the oldest
queued session with `SELECT ... FOR UPDATE SKIP LOCKED` and marks it running in the same transaction, with a
lease (`lease_owner`, `lease_expires_at`) that it renews while it works (every progress save, and a heartbeat
between). Every save of a running session is guarded by the lease, so a worker that lost its session can no
longer write it. Any process finds leases that ran out: the session goes back to the queue, first in line, at
most `max_attempts` times, then it is `failed` with the reason; what the lost try published is deleted.

Cancel sets `cancel_requested` and NOTIFYs `imagegraph_cancel`; the worker running the session stops before its
next step (the heartbeat reads the flag too, for a NOTIFY missed). `NOTIFY imagegraph_queue` wakes idle workers
and refreshes every server's queue status; both also poll, so a lost notification costs a second at most.

Model affinity: a worker takes, among the first few queued, one whose main model it has loaded, unless the
first in line has waited AFFINITY_WAIT_S; so a session waits at most that long behind luckier ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg
import msgspec

from server.clock import utc_now
from server.config import Settings
from server.events import Emit, Event, ModelsChanged, QueueStatus, SessionCanceled, SessionComplete
from server.graph.context import RunServices
from server.graph.executor import Executor, QueueState, SessionConflict, WorkerList
from server.graph.leases import QUEUE_CHANNEL, list_workers, reap_expired_leases
from server.graph.model_identity import ModelIdentities
from server.graph.session import Session, SessionStore
from server.models.errors import ModelsUnavailable
from server.models.schema import ModelIdentifier

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.images.service import ImageService
    from server.models.catalogue import ModelCatalogue

log = logging.getLogger(__name__)

CANCEL_CHANNEL = "imagegraph_cancel"
# How long the first session in line may be passed over for one whose model a worker has loaded.
AFFINITY_WAIT_S = 10.0
# How many of the first queued sessions a claim looks at for affinity.
AFFINITY_WINDOW = 16
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


class SharedExecutor(Executor):
    """The Executor's interface (submit, cancel, status, live) on the shared queue; with `run_sessions`, also a
    worker that claims and runs sessions in this process."""

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
        self._lost_session = False
        self._status_tasks: set[asyncio.Task[None]] = set()
        self.identities = ModelIdentities(db, models)

    # life cycle

    async def start(self) -> None:
        await self._listen()
        await self._refresh_status()
        self._tasks.append(asyncio.create_task(self._maintain(), name="imagegraph-queue-maintenance"))
        if self.settings.run_sessions:
            await self._announce("idle")
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="imagegraph-heartbeat"))
            self._task = asyncio.create_task(self._work(), name="imagegraph-executor")

    async def stop(self) -> None:
        self._stopping = True
        self._claim_wake.set()
        await super().stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.settings.run_sessions:
            with contextlib.suppress(Exception):
                async with self.db.connection() as conn:
                    await conn.execute("DELETE FROM workers WHERE name = $1", self.name)
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()

    async def _listen(self) -> None:
        try:
            self._listener = await asyncpg.connect(self.db.url)
            await self._listener.add_listener(QUEUE_CHANNEL, self._queue_notified)
            await self._listener.add_listener(CANCEL_CHANNEL, self._cancel_notified)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("cannot LISTEN for the queue yet (polling instead): %s", exc)
            self._listener = None

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
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._status_wake.wait(), POLL_S)
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

    # the worker

    async def _announce(self, state: str) -> None:
        running = self._running.id if self._running is not None else None
        async with self.db.connection() as conn:
            await conn.execute(
                "INSERT INTO workers (name, device, state, session_id, models_loaded, lease_s) "
                "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO UPDATE SET device = excluded.device, "
                "state = excluded.state, session_id = excluded.session_id, models_loaded = excluded.models_loaded, "
                "lease_s = excluded.lease_s, last_seen = now()",
                self.name,
                self.device_name,
                state,
                running,
                _encoder.encode(self.models_loaded()).decode(),
                self.settings.lease_s,
            )

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(max(0.5, self.settings.lease_s / 3))
            try:
                await self._renew()
                await self._announce("busy" if self._running is not None else "idle")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("heartbeat missed, the database is away: %s", exc)

    async def _renew(self) -> None:
        session = self._running
        if session is None:
            return
        async with self.db.connection() as conn:
            row = await conn.fetchrow(
                "UPDATE sessions SET lease_expires_at = now() + make_interval(secs => $1) "
                "WHERE id = $2 AND lease_owner = $3 RETURNING cancel_requested",
                self.settings.lease_s,
                session.id,
                self.name,
            )
        if row is None:
            self._lose(session)
        elif row[0]:
            self._cancel.set()

    def _lose(self, session: Session) -> None:
        if self._running is session and not self._lost_session:
            log.warning("lost the lease on session %s; stopping it, another worker runs it", session.id)
            self._lost_session = True
            self._cancel.set()

    async def _work(self) -> None:
        services = RunServices(
            settings=self.settings,
            emit=self._emit_from_run,
            loader=self.loader,
            images=self.images,
            loop=asyncio.get_running_loop(),
        )
        await self.models.ready()
        while not self._stopping:
            try:
                session = await self._claim()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot claim a session, the database is away: %s", exc)
                session = None
            if session is None:
                self._claim_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._claim_wake.wait(), POLL_S)
                continue
            try:
                problem = await self.identities.problem(session)
                if problem is not None:
                    await self._refuse(session, *problem)
                    continue
                await self._run_session(session, services)
            except Exception:
                log.exception("the worker failed to run session %s", session.id)

    async def _claim(self) -> Session | None:
        loaded = set(self.models_loaded())
        async with self.db.connection() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT data, model_key, run_one_node FROM sessions WHERE status = 'queued' "
                "ORDER BY queued_at, rowid LIMIT $1 FOR UPDATE SKIP LOCKED",
                AFFINITY_WINDOW,
            )
            if not rows or self._stopping:
                return None
            with contextlib.suppress(ModelsUnavailable):
                self.models.reload()  # models.yaml as the servers last wrote it (unchanged bytes: no work)
            chosen = rows[0]
            head = _session_decoder.decode(rows[0][0])
            waited = (datetime.now(UTC) - datetime.fromisoformat(head.queued_at or head.updated_at)).total_seconds()
            if waited < AFFINITY_WAIT_S and rows[0][1] not in loaded:
                chosen = next((row for row in rows if row[1] in loaded), rows[0])
            session = head if chosen is rows[0] else _session_decoder.decode(chosen[0])
            parked = self._parked.pop(session.id, None)
            if parked is not None and parked.session.executed == session.executed:
                self._parked[session.id] = parked
            elif session.executed:
                session.executed, session.results, session.errors = [], {}, {}
            if chosen[2]:
                self._one_node.add(session.id)
            self._begin(session)
            self._lost_session = False
            session.updated_at = utc_now()
            try:
                await conn.execute(
                    "UPDATE sessions SET data = $1, updated_at = $2, lease_owner = $3, "
                    "lease_expires_at = now() + make_interval(secs => $4) WHERE id = $5",
                    _encoder.encode(session).decode(),
                    session.updated_at,
                    self.name,
                    self.settings.lease_s,
                    session.id,
                )
                await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, session.id)
            except BaseException:
                self._running = None  # rolled back: still queued, not ours
                self._idle.set()
                raise
        with contextlib.suppress(Exception):
            await self._announce("busy")
        return session

    async def _refuse(self, session: Session, node_id: str, reason: str) -> None:
        """Fail a claimed session without running it."""
        log.error("session %s refused: %s", session.id, reason)
        session.status = "failed"
        session.errors[node_id] = reason
        try:
            await self._store_final(session)
        finally:
            self._running = None
            self._idle.set()
        self.emit(SessionComplete(session_id=session.id, status="failed"))
        self._queue_changed()

    def on_event(self, event: Event) -> None:
        """A hub listener (servers): models changed on disk are recorded afresh at their next use."""
        if isinstance(event, ModelsChanged) and (event.updated or event.removed):
            task = asyncio.get_running_loop().create_task(self.identities.forget([*event.updated, *event.removed]))
            self._status_tasks.add(task)
            task.add_done_callback(self._status_tasks.discard)

    # saves of the running session: only while this worker holds its lease

    async def _store_progress(self, session: Session) -> None:
        await self._guarded_save(session, final=False)

    async def _store_final(self, session: Session) -> None:
        await self._guarded_save(session, final=True)

    async def _guarded_save(self, session: Session, *, final: bool) -> None:
        if self._lost_session:
            return
        session.updated_at = utc_now()
        lease = (
            "lease_owner = NULL, lease_expires_at = NULL, cancel_requested = false, run_one_node = false"
            if final
            else "lease_expires_at = now() + make_interval(secs => $3)"
        )
        async with self.db.connection() as conn:
            status = await conn.execute(
                f"UPDATE sessions SET data = $1, updated_at = $2, {lease} WHERE id = $4 AND lease_owner = $5 "
                "AND $3::float8 IS NOT NULL",
                _encoder.encode(session).decode(),
                session.updated_at,
                self.settings.lease_s,
                session.id,
                self.name,
            )
            if final:
                await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, session.id)
        if status.endswith(" 0"):
            self._lose(session)

    def _announce_end(self, session: Session) -> bool:
        if self._lost_session:
            self._lost_session = False
            return False
        self._claim_wake.set()
        return True

    async def workers(self) -> WorkerList:
        return await list_workers(self.db)
