"""The workflow library: named graphs with the editor's drawing of them, in the `workflows` table.

A workflow's `graph` is stored as the JSON of the validated Graph and its `layout` ({node_id: {x, y}}) as JSON
or NULL; reads hand both out as raw JSON (msgspec.Raw) without decoding them. Names are unique regardless of
case: `name_key` (the name case-folded) carries a UNIQUE constraint, so two requests racing for one name
cannot both win."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import msgspec

from server.clock import utc_now
from server.db import NO_NUL, Database, integrity_errors
from server.graph.graph import Graph
from server.graph.validation import Problem

# Far beyond any canvas a person draws on, and small enough that no client chokes on the numbers.
Coordinate = Annotated[float, msgspec.Meta(ge=-1e7, le=1e7)]
# No NUL character: PostgreSQL's text cannot hold one, and both engines answer alike.
WorkflowName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, msgspec.Meta(max_length=10_000, pattern=NO_NUL)]


class Position(msgspec.Struct):
    """Where the editor draws a node: its top-left corner in canvas units."""

    x: Coordinate
    y: Coordinate


Layout = dict[str, Position]


class Workflow(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str
    graph: Graph
    # null: the editor lays the graph out itself when it opens it.
    layout: Layout | None
    created_at: str
    updated_at: str


class WorkflowSummary(msgspec.Struct, kw_only=True):
    """A workflow as the library lists it: everything but the graph and its layout."""

    id: str
    name: str
    description: str
    node_count: int
    created_at: str
    updated_at: str


class WorkflowPage(msgspec.Struct, kw_only=True):
    items: list[WorkflowSummary]
    offset: int
    limit: int
    total: int


class _StoredWorkflow(msgspec.Struct, kw_only=True):
    """A Workflow with its graph and layout as the raw JSON the table holds: encoded as it is."""

    id: str
    name: str
    description: str
    graph: msgspec.Raw
    layout: msgspec.Raw | None
    created_at: str
    updated_at: str


class _WorkflowChunk(msgspec.Struct):
    """The `imagegraph_workflow` PNG chunk: which workflow an image came from and how it was drawn."""

    id: str
    name: str
    layout: msgspec.Raw | None


class NameTaken(Exception):
    """Another workflow already has this name (compared case-insensitively)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"a workflow named {name!r} already exists (names are compared ignoring case)")
        self.name = name


_encoder = msgspec.json.Encoder()
_COLUMNS = "id, name, description, graph, layout, created_at, updated_at"


def name_key(name: str) -> str:
    return name.strip().casefold()


def layout_problems(graph: Graph, layout: Layout | None) -> list[Problem]:
    """A layout may only place nodes the graph has (a node without a place is laid out by the editor)."""
    if layout is None:
        return []
    return [
        Problem(loc=("layout", node_id), msg=f"the layout places {node_id!r}, which is not a node of the graph")
        for node_id in layout
        if node_id not in graph.nodes
    ]


def _like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _stored(row: Any) -> _StoredWorkflow:
    return _StoredWorkflow(
        id=row[0],
        name=row[1],
        description=row[2],
        graph=msgspec.Raw(row[3].encode()),
        layout=None if row[4] is None else msgspec.Raw(row[4].encode()),
        created_at=row[5],
        updated_at=row[6],
    )


def _is_name_clash(exc: Exception) -> bool:
    # SQLite names the column (workflows.name_key), PostgreSQL the constraint (workflows_name_key_key).
    return "workflows.name_key" in str(exc) or "workflows_name_key" in str(exc)


class WorkflowStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, name: str, description: str, graph: Graph, layout: Layout | None) -> _StoredWorkflow:
        """Store a new workflow; NameTaken if the name is in use."""
        now = utc_now()
        row = (
            str(uuid.uuid4()),
            name.strip(),
            description,
            _encoder.encode(graph).decode(),
            None if layout is None else _encoder.encode(layout).decode(),
            now,
            now,
        )
        try:
            async with self.db.write() as conn:
                await conn.execute(
                    f"INSERT INTO workflows ({_COLUMNS}, name_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row, name_key(name)),
                )
        except integrity_errors() as exc:
            if _is_name_clash(exc):
                raise NameTaken(name.strip()) from None
            raise
        return _stored(row)

    async def replace(
        self, workflow_id: str, name: str, description: str, graph: Graph, layout: Layout | None
    ) -> _StoredWorkflow:
        """Replace name, description, graph and layout; LookupError if unknown, NameTaken if the new name is
        another workflow's."""
        try:
            async with self.db.write() as conn:
                cursor = await conn.execute(
                    "UPDATE workflows SET name = ?, name_key = ?, description = ?, graph = ?, layout = ?, "
                    "updated_at = ? WHERE id = ?",
                    (
                        name.strip(),
                        name_key(name),
                        description,
                        _encoder.encode(graph).decode(),
                        None if layout is None else _encoder.encode(layout).decode(),
                        utc_now(),
                        workflow_id,
                    ),
                )
                if cursor.rowcount == 0:
                    raise LookupError(workflow_id)
                async with conn.execute(f"SELECT {_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,)) as rows:
                    row = await rows.fetchone()
        except integrity_errors() as exc:
            if _is_name_clash(exc):
                raise NameTaken(name.strip()) from None
            raise
        return _stored(row)

    async def get(self, workflow_id: str) -> _StoredWorkflow | None:
        async with self.db.read.execute(f"SELECT {_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _stored(row)

    async def exists(self, workflow_id: str) -> bool:
        async with self.db.read.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)) as cursor:
            return await cursor.fetchone() is not None

    async def delete(self, workflow_id: str) -> bool:
        async with self.db.write() as conn:
            cursor = await conn.execute("DELETE FROM workflows WHERE id = ?", (workflow_id,))
            return cursor.rowcount > 0

    async def page(self, q: str, offset: int, limit: int) -> tuple[list[WorkflowSummary], int]:
        """Recently changed first; `q` keeps the workflows whose name contains it, ignoring case."""
        where: str = ""
        params: tuple[str, ...] = ()
        if q.strip():
            where, params = " WHERE name_key LIKE ? ESCAPE '\\'", (_like_pattern(name_key(q)),)
        # Page and total in one statement, so from one snapshot (as the image list does).
        sql = (
            f"SELECT id, name, description, {self.db.sql.json_count('graph', 'nodes')}, created_at, updated_at, "
            f"(SELECT count(*) FROM workflows{where}) FROM workflows{where} "
            "ORDER BY updated_at DESC, id LIMIT ? OFFSET ?"
        )
        async with self.db.read.execute(sql, (*params, *params, limit, offset)) as cursor:
            rows = await cursor.fetchall()
        if rows:
            total = rows[0][-1]
        else:
            async with self.db.read.execute(f"SELECT count(*) FROM workflows{where}", params) as cursor:
                (total,) = await cursor.fetchone()
        items = [
            WorkflowSummary(
                id=row[0], name=row[1], description=row[2], node_count=row[3], created_at=row[4], updated_at=row[5]
            )
            for row in rows
        ]
        return items, total

    async def chunk(self, workflow_id: str) -> str | None:
        """The JSON of the `imagegraph_workflow` chunk for an image this workflow made; None if it is gone."""
        async with self.db.read.execute(
            "SELECT id, name, layout FROM workflows WHERE id = ?", (workflow_id,)
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        layout = None if row[2] is None else msgspec.Raw(row[2].encode())
        return _encoder.encode(_WorkflowChunk(id=row[0], name=row[1], layout=layout)).decode()
