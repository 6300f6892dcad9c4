"""Sessions (InvokeAI's GraphExecutionState): a validated graph, its status, and what running it produced.
Stored as JSON through ItemStorage in the `sessions` table."""

from __future__ import annotations

import uuid
from typing import Literal

import msgspec

from server.clock import utc_now
from server.db import Database, ItemStorage
from server.graph.graph import Graph
from server.graph.registry import AnyOutput
from server.images.embedded import session_graph_raw

SessionStatus = Literal["pending", "queued", "running", "completed", "failed", "canceled"]
FINISHED: tuple[str, ...] = ("completed", "failed", "canceled")


class Session(msgspec.Struct, kw_only=True):
    id: str
    graph: Graph
    status: SessionStatus = "pending"
    # Executed node ids: a node under an `iterate` runs once per item, as `<node>#<index>`.
    executed: list[str] = []
    results: dict[str, AnyOutput] = {}
    # node id -> what went wrong; a failure not tied to a node (a crash) is under the node that was running.
    errors: dict[str, str] = {}
    # The saved workflow the graph came from (POST /sessions/?workflow_id=): its images carry its name and layout.
    workflow_id: str | None = None
    created_at: str
    updated_at: str
    # When it was last queued: the queue's order, kept when a stopping server puts its running session back.
    queued_at: str | None = None
    # Who ran it last (a worker's name), when that run began, and how many tries this invocation took: a try
    # ends early when its worker is lost, and the session then goes back to the queue (docs/api.md §Workers).
    worker: str | None = None
    started_at: str | None = None
    attempts: int = 0


class SessionPage(msgspec.Struct, kw_only=True):
    items: list[Session]
    offset: int
    limit: int
    total: int


class _WorkflowId(msgspec.Struct):
    workflow_id: str | None = None


_workflow_id = msgspec.json.Decoder(_WorkflowId)


class SessionStore:
    """Sessions by id. `updated_at` of a queued session is when it was queued: restart re-queues in that order."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.items: ItemStorage[Session] = ItemStorage(db, "sessions", Session)
        self._encoder = msgspec.json.Encoder()

    @staticmethod
    def new(graph: Graph, workflow_id: str | None = None) -> Session:
        now = utc_now()
        return Session(id=str(uuid.uuid4()), graph=graph, workflow_id=workflow_id, created_at=now, updated_at=now)

    async def save(self, session: Session) -> None:
        session.updated_at = utc_now()
        await self.items.set(session.id, session)

    async def get(self, session_id: str) -> Session | None:
        return await self.items.get(session_id)

    async def get_raw(self, session_id: str) -> str | None:
        return await self.items.get_raw(session_id)

    async def workflow_id_of(self, session_id: str) -> str | None:
        """The saved workflow a session came from, read from its stored JSON alone."""
        raw = await self.items.get_raw(session_id)
        return None if raw is None else _workflow_id.decode(raw).workflow_id

    async def graph_of(self, session_id: str) -> msgspec.Raw | None:
        """The session's graph as its images embed it (accumulators removed), raw; None for no such session."""
        raw = await self.items.get_raw(session_id)
        return None if raw is None else session_graph_raw(raw)

    async def page(self, offset: int, limit: int) -> tuple[list[Session], int]:
        return await self.items.list(offset, limit)

    async def ids_with_status(self, status: str) -> list[str]:
        """Ids of sessions in `status`, in queue order (when they were queued; before `queued_at` was kept,
        their last change)."""
        async with self.db.read.execute(
            "SELECT id FROM sessions WHERE status = ? "
            f"ORDER BY coalesce({self.db.sql.json_text('data', 'queued_at')}, updated_at), rowid",
            (status,),
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    def encode(self, session: Session) -> bytes:
        return self._encoder.encode(session)
