"""Leases on running sessions, and the workers that hold them, in a shared PostgreSQL (server/graph/shared_queue.py
claims and renews; this module finds what ran out). Any server or worker may reap: rows are taken with
`FOR UPDATE SKIP LOCKED`, so two reapers never handle one session twice."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import msgspec

from server.clock import utc_now
from server.config import Settings
from server.events import Emit, SessionComplete
from server.graph.executor import WorkerInfo, WorkerList, WorkerState
from server.graph.session import FINISHED, Session

if TYPE_CHECKING:
    from server.db_postgres import PostgresDatabase
    from server.images.service import ImageService

log = logging.getLogger(__name__)

QUEUE_CHANNEL = "imagegraph_queue"
LOST_REASON = "its worker stopped answering {attempts} time(s) (max_attempts {max_attempts}); invoke it again"
_session_decoder = msgspec.json.Decoder(Session)
_encoder = msgspec.json.Encoder()


async def reap_expired_leases(
    db: PostgresDatabase, settings: Settings, images: ImageService, emit: Emit, own_session: str | None
) -> list[str]:
    """Sessions whose lease ran out go back to the queue (or fail after max_attempts); what their lost try
    published is deleted. Returns their ids."""
    reaped: list[tuple[Session, str | None]] = []
    async with db.connection() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT data, lease_owner FROM sessions WHERE status = 'running' "
            "AND (lease_expires_at IS NULL OR lease_expires_at < now()) FOR UPDATE SKIP LOCKED"
        )
        for data, owner in rows:
            session = _session_decoder.decode(data)
            if session.id == own_session:
                continue  # the caller's own: its heartbeat renews it
            if session.attempts >= settings.max_attempts:
                session.status = "failed"
                reason = LOST_REASON.format(attempts=session.attempts, max_attempts=settings.max_attempts)
                session.errors[session.executed[-1] if session.executed else session.graph.id] = reason
            else:
                session.status = "queued"  # queued_at is kept: first in line again
            session.updated_at = utc_now()
            await conn.execute(
                "UPDATE sessions SET data = $1, updated_at = $2, lease_owner = NULL, lease_expires_at = NULL "
                "WHERE id = $3",
                _encoder.encode(session).decode(),
                session.updated_at,
                session.id,
            )
            reaped.append((session, owner))
        await conn.execute(
            "UPDATE workers SET state = 'lost' WHERE state <> 'lost' "
            "AND last_seen < now() - make_interval(secs => lease_s)"
        )
        if reaped:
            await conn.execute("SELECT pg_notify($1, $2)", QUEUE_CHANNEL, "reaped")
    for session, owner in reaped:
        log.warning(
            "session %s lost its worker %s; %s",
            session.id,
            owner,
            "failed" if session.status == "failed" else "queued again",
        )
        await _remove_lost_images(db, images, session)
        if session.status in FINISHED:
            emit(SessionComplete(session_id=session.id, status=session.status))
    return [session.id for session, _ in reaped]


async def _remove_lost_images(db: PostgresDatabase, images: ImageService, session: Session) -> None:
    if session.started_at is None:
        return
    async with db.read.execute(
        "SELECT image_name FROM images WHERE session_id = ? AND created_at >= ?", (session.id, session.started_at)
    ) as cursor:
        names = [row[0] for row in await cursor.fetchall()]
    if names:
        await images.delete(names)


async def list_workers(db: PostgresDatabase) -> WorkerList:
    """Every worker that announced itself; one silent for longer than its lease shows `lost`."""
    rows = await db.pool.fetch(
        "SELECT name, device, state, session_id, models_loaded, last_seen, "
        "(last_seen < now() - make_interval(secs => lease_s)) AS silent FROM workers ORDER BY name"
    )
    return WorkerList(
        workers=[
            WorkerInfo(
                name=row["name"],
                device=row["device"],
                state="lost" if row["silent"] else cast(WorkerState, row["state"]),
                session_id=row["session_id"],
                models_loaded=msgspec.json.decode(row["models_loaded"]),
                last_seen=_iso(row["last_seen"]),
            )
            for row in rows
        ]
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")
