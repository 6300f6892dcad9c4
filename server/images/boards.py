"""Boards: named groups of images (an image is on at most one board, through `images.board_id`)."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from server.clock import utc_now
from server.db import Database, Queryable
from server.events import Emit, ImageUpdated
from server.images import records
from server.images.errors import BoardNotFound, UnknownImage
from server.images.names import is_image_name
from server.images.schema import BoardDeleted, BoardDTO, BoardPatch

# Deletes the named images (records and files), answering the names it deleted: the image service's `delete`.
DeleteImages = Callable[[list[str]], Awaitable[list[str]]]

# The cover is the one chosen with PATCH, else the board's newest image; the count reads images_board.
_SELECT = """
SELECT b.board_id, b.board_name, b.created_at, b.updated_at,
       COALESCE(b.cover_image_name,
                (SELECT i.image_name FROM images i WHERE i.board_id = b.board_id
                 ORDER BY i.created_at DESC LIMIT 1)),
       (SELECT count(*) FROM images i WHERE i.board_id = b.board_id)
FROM boards b
"""


def _to_dto(row: Any) -> BoardDTO:
    return BoardDTO(
        board_id=row[0],
        board_name=row[1],
        created_at=row[2],
        updated_at=row[3],
        cover_image_name=row[4],
        image_count=row[5],
    )


class Boards:
    def __init__(self, db: Database, emit: Emit, delete_images: DeleteImages) -> None:
        self.db = db
        self.emit = emit
        self.delete_images = delete_images

    async def exists(self, board_id: str, conn: Queryable | None = None) -> bool:
        async with (conn or self.db.read).execute("SELECT 1 FROM boards WHERE board_id = ?", (board_id,)) as cursor:
            return await cursor.fetchone() is not None

    async def create(self, board_name: str) -> BoardDTO:
        board_id = str(uuid.uuid4())
        now = utc_now()
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO boards (board_id, board_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (board_id, board_name.strip(), now, now),
            )
        return BoardDTO(
            board_id=board_id,
            board_name=board_name.strip(),
            created_at=now,
            updated_at=now,
            cover_image_name=None,
            image_count=0,
        )

    async def get(self, board_id: str, conn: Queryable | None = None) -> BoardDTO | None:
        async with (conn or self.db.read).execute(_SELECT + " WHERE b.board_id = ?", (board_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else _to_dto(row)

    async def list(self, offset: int, limit: int) -> tuple[list[BoardDTO], int]:
        async with self.db.read.execute(
            _SELECT + " ORDER BY b.created_at DESC, b.rowid DESC LIMIT ? OFFSET ?", (limit, offset)
        ) as cursor:
            rows = await cursor.fetchall()
        async with self.db.read.execute("SELECT count(*) FROM boards") as cursor:
            (total,) = await cursor.fetchone()
        return [_to_dto(row) for row in rows], total

    async def all(self) -> builtins.list[BoardDTO]:
        async with self.db.read.execute(_SELECT + " ORDER BY b.created_at DESC, b.rowid DESC") as cursor:
            return [_to_dto(row) for row in await cursor.fetchall()]

    async def update(self, board_id: str, patch: BoardPatch) -> BoardDTO:
        """Rename and/or set the cover; BoardNotFound for an unknown board, UnknownImage for a bad cover."""
        changes: dict[str, Any] = {}
        if patch.board_name is not msgspec.UNSET:
            changes["board_name"] = patch.board_name.strip()
        if patch.cover_image_name is not msgspec.UNSET:
            changes["cover_image_name"] = patch.cover_image_name
        async with self.db.write() as conn:
            cover = changes.get("cover_image_name")
            if cover is not None and not (is_image_name(cover) and await records.image_exists(conn, cover)):
                raise UnknownImage(cover)
            if changes:
                assignments = ", ".join([*(f"{column} = ?" for column in changes), "updated_at = ?"])
                await conn.execute(
                    f"UPDATE boards SET {assignments} WHERE board_id = ?", (*changes.values(), utc_now(), board_id)
                )
            dto = await self.get(board_id, conn)
        if dto is None:
            raise BoardNotFound(board_id)
        return dto

    async def delete(self, board_id: str, *, include_images: bool) -> BoardDeleted:
        """Delete a board; its images are deleted too, or stay with no board. BoardNotFound if unknown."""
        if not await self.exists(board_id):
            raise BoardNotFound(board_id)
        deleted_images: list[str] = []
        if include_images:
            deleted_images = await self.delete_images(await self.image_names(board_id))
        now = utc_now()
        async with self.db.write() as conn:
            released = await records.names_where(conn, "board_id = ?", (board_id,))
            await conn.execute("UPDATE images SET board_id = NULL, updated_at = ? WHERE board_id = ?", (now, board_id))
            cursor = await conn.execute("DELETE FROM boards WHERE board_id = ?", (board_id,))
            if cursor.rowcount == 0:
                raise BoardNotFound(board_id)
            updated = [dto for name in released if (dto := await records.get_image(conn, name)) is not None]
        for dto in updated:
            self.emit(ImageUpdated(image=dto))
        return BoardDeleted(board_id=board_id, deleted_images=deleted_images)

    async def image_names(self, board_id: str) -> builtins.list[str]:
        return await records.names_where(self.db.read, "board_id = ?", (board_id,))
