"""The worker's side of the shared queue (server/graph/shared_queue.py): claim, lease, guarded saves.

A worker claims the oldest queued session with `SELECT ... FOR UPDATE SKIP LOCKED` and marks it running in the
same transaction, with a lease it renews while it works (every progress save, and a heartbeat between). Every
save of the running session is conditional on the lease: a worker that lost its session cannot write it.

Model affinity: a worker takes, among the first AFFINITY_WINDOW queued, one whose main model it has loaded,
unless the first in line has waited AFFINITY_WAIT_S; so a session waits at most that long behind luckier ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import asyncpg

from server.clock import utc_now
from server.config import Settings
from server.db import Queryable
from server.events import Emit, Event, ModelsChanged, SessionComplete
from server.graph.leases import QUEUE_CHANNEL
from server.graph.model_identity import ModelIdentities
from server.graph.session import Session, SessionStore
from server.graph.shared_queue import POLL_S, SharedQueue, _encoder, _session_decoder
from server.models.errors import ModelsUnavailable

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.images.service import ImageService, PublishGuard
    from server.models.catalogue import ModelCatalogue

log = logging.getLogger(__name__)

# How long the first session in line may be passed over for one whose model a worker has loaded.
AFFINITY_WAIT_S = 10.0
# How many of the first queued sessions a claim looks at for affinity.
AFFINITY_WINDOW = 16


def affinity_pick(queue: list[tuple[str, str | None]], loaded: set[str], now: datetime) -> int:
    """Which of the first queued sessions ((queued_at, main model key), oldest first) a worker that has `loaded`
    takes: the oldest, unless it has waited less than AFFINITY_WAIT_S and a later one's model is loaded here."""
    queued_at, model = queue[0]
    if model in loaded or (now - datetime.fromisoformat(queued_at)).total_seconds() >= AFFINITY_WAIT_S:
        return 0
    return next((index for index, (_, key) in enumerate(queue) if key in loaded), 0)


class SharedExecutor(SharedQueue):
    """The shared queue, and with `run_sessions` a worker that claims and runs sessions in this process."""

    def __init__(
        self,
        settings: Settings,
        emit: Emit,
        store: SessionStore,
        images: ImageService,
        models: ModelCatalogue,
        db: PostgresDatabase,
    ) -> None:
        super().__init__(settings, emit, store, images, models, db)
        self._lost_session = False
        self.identities = ModelIdentities(db, models)

    async def start(self) -> None:
        await super().start()
        if self.settings.run_sessions:
            await self._announce("idle")
            self._tasks.append(asyncio.create_task(self._heartbeat(), name="imagegraph-heartbeat"))
            self._task = asyncio.create_task(self._work(), name="imagegraph-executor")

    async def stop(self) -> None:
        await super().stop()
        if self.settings.run_sessions:
            with contextlib.suppress(Exception):
                async with self.db.connection() as conn:
                    await conn.execute("DELETE FROM workers WHERE name = $1", self.name)

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

    def _publish_guard(self) -> PublishGuard:
        return self._may_publish

    async def _may_publish(self, conn: Queryable, session_id: str) -> bool:
        """Whether an image of this session may be published: only while this worker's lease on it holds, so a
        worker cut off from the database publishes nothing once its lease has run out. FOR SHARE keeps the
        reaper off the session until the image's transaction ends; it then deletes the image with the rest of
        the lost try."""
        async with conn.execute(
            "SELECT 1 FROM sessions WHERE id = ? AND lease_owner = ? AND lease_expires_at > now() FOR SHARE",
            (session_id, self.name),
        ) as cursor:
            holds = await cursor.fetchone() is not None
        if not holds and self._running is not None and self._running.id == session_id:
            self._lose(self._running)
        return holds

    def _lose(self, session: Session) -> None:
        if self._running is session and not self._lost_session:
            log.warning("lost the lease on session %s; stopping it, another worker runs it", session.id)
            self._lost_session = True
            self._cancel.set()

    async def _work(self) -> None:
        services = self._run_services()
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
                    async with asyncio.timeout(POLL_S):
                        await self._claim_wake.wait()
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
                "SELECT data, model_key, run_one_node, coalesce(queued_at, updated_at) FROM sessions WHERE status = 'queued' "
                "ORDER BY queued_at, rowid LIMIT $1 FOR UPDATE SKIP LOCKED",
                AFFINITY_WINDOW,
            )
            if not rows or self._stopping:
                return None
            with contextlib.suppress(ModelsUnavailable):
                self.models.reload()  # models.yaml as the servers last wrote it (unchanged bytes: no work)
            chosen = rows[affinity_pick([(row[3], row[1]) for row in rows], loaded, datetime.now(UTC))]
            session = _session_decoder.decode(chosen[0])
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
