"""The image service: keeps files and records consistent, and is the one place images are written or removed.

Order of a write: PNG + thumbnail to temp names, fsync, rename; then the record in one transaction; only then
the caller hears back and `image_created` goes out. A crash before the commit leaves files without a record,
which the start-up reconciliation removes; so a reader sees either nothing or a whole image."""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from server.clock import utc_now
from server.config import Settings
from server.db import Database, Queryable
from server.events import Emit, ImageCreated, ImageDeleted, ImageUpdated
from server.images import records
from server.images.boards import Boards
from server.images.cache import CachedFile, FileCache, cached_file
from server.images.embedded import stripped_graph_json
from server.images.errors import AttemptLost, ImageNotFound, UnknownBoard
from server.images.files import PNG_COMPRESS_LEVEL, UPLOAD_PNG_COMPRESS_LEVEL, ImageFiles, StagedPng, WrittenImage
from server.images.metadata import is_json
from server.images.names import is_image_name, new_image_name, thumbnail_name
from server.images.png_layout import SIGNATURE as PNG_SIGNATURE
from server.images.reconcile import Reconciler, ReconcileReport
from server.images.schema import ImageCategory, ImageDTO, ImageMetadata, ImagePatch, ListImagesQuery
from server.images.upload import decode_upload

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

PATCHABLE = ("image_category", "is_intermediate", "board_id", "starred", "session_id")


# The graph of a session, accumulators removed, as raw JSON (or None): how `/metadata` finds a generated image's
# graph without knowing where sessions are kept.
GraphOf = Callable[[str], Awaitable[msgspec.Raw | None]]
# The `imagegraph_workflow` chunk (JSON) for images of a session that came from a saved workflow, or None.
WorkflowOf = Callable[[str], Awaitable[str | None]]
# Whether the try that runs this session may still publish its images, asked inside the transaction that would
# insert the record (on a shared database: the worker still holds the session's lease).
PublishGuard = Callable[[Queryable, str], Awaitable[bool]]


class ImageService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        emit: Emit,
        graph_of: GraphOf | None = None,
        workflow_of: WorkflowOf | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.emit = emit
        self.graph_of = graph_of
        self.workflow_of = workflow_of
        self.files = ImageFiles(settings.images_dir, settings.thumbnails_dir)
        self.cache = FileCache(settings.image_cache_bytes)
        self.boards = Boards(db, emit, self.delete)
        # Names whose files may be on disk before their record is committed; reconciliation leaves them alone.
        self._pending: set[str] = set()
        # Bumped by every deletion, so a file read that raced a deletion is not put back into the cache.
        self._deletions = 0
        self.reconciler = Reconciler(settings, self.files, db, pending=self._pending, delete=self.delete)

    # Lifecycle

    async def start(self) -> None:
        """Reconcile in the background, so the server answers its first request at once."""
        self.reconciler.start()

    async def stop(self) -> None:
        await self.reconciler.stop()

    @property
    def reconciled(self) -> threading.Event:
        """Set once start-up reconciliation has finished (or failed)."""
        return self.reconciler.done

    @property
    def reconcile_report(self) -> ReconcileReport | None:
        """What start-up reconciliation did; None until it has finished."""
        return self.reconciler.report

    async def reconcile(self) -> ReconcileReport:
        """Remove files without records (and leftover temp files), records without files; rebuild thumbnails."""
        return await self.reconciler.run()

    # Writing

    async def save(
        self,
        image: Image.Image,
        *,
        category: ImageCategory = "general",
        is_intermediate: bool = False,
        session_id: str | None = None,
        node_id: str | None = None,
        board_id: str | None = None,
        metadata: str | None = None,
        graph: str | None = None,
        guard: PublishGuard | None = None,
    ) -> ImageDTO:
        """Store a generated image. `metadata` (CoreMetadata) and `graph` are raw JSON strings, embedded as
        tEXt `invokeai_metadata` / `invokeai_graph` (accumulator nodes stripped from the graph, here only); a
        session from a saved workflow adds `imagegraph_workflow` (the workflow's id, name and layout).
        `guard` (a run on a shared queue): AttemptLost, and nothing kept, when it says the run lost its session."""
        chunks: dict[str, str] = {}
        if metadata is not None:
            if not is_json(metadata):
                raise ValueError("metadata must be a JSON string")
            chunks["invokeai_metadata"] = metadata
            infotext = _a1111_parameters(metadata)
            if infotext is not None:
                chunks["parameters"] = infotext
        if graph is not None:
            graph = stripped_graph_json(graph)
            chunks["invokeai_graph"] = graph
        workflow = await self._workflow_of(session_id) if session_id is not None else None
        if workflow is not None:
            chunks["imagegraph_workflow"] = workflow
        return await self._store(
            image,
            chunks,
            category=category,
            is_intermediate=is_intermediate,
            session_id=session_id,
            node_id=node_id,
            board_id=board_id,
            metadata=metadata,
            # The session row holds the graph of a generated image; keep our own copy only when there is none.
            graph=graph if session_id is None else None,
            workflow=workflow,
            guard=guard,
        )

    async def _workflow_of(self, session_id: str) -> str | None:
        """The `imagegraph_workflow` JSON for an image of this session: None unless it came from a saved
        workflow that still exists. An unreadable session costs the chunk, never the image."""
        if self.workflow_of is None:
            return None
        try:
            return await self.workflow_of(session_id)
        except msgspec.DecodeError:
            log.warning("session %s holds no readable workflow_id", session_id)
            return None

    async def upload(
        self, data: bytes, *, category: ImageCategory = "user", is_intermediate: bool = False, board_id: str | None
    ) -> ImageDTO:
        """Store an uploaded PNG/JPEG/WebP as PNG (a clean PNG as the bytes sent); raises UploadRejected
        (413/415) or UnknownBoard."""
        if board_id is not None and not await self.boards.exists(board_id):
            raise UnknownBoard(board_id)
        name = new_image_name()
        # Pending from here: reconciliation spares the staged temporary file as it spares a write in progress.
        self._pending.add(name)
        # A PNG's bytes go to disk while it decodes; decoding then says whether they are the ones stored.
        staged = self.files.stage_png(name, data) if data.startswith(PNG_SIGNATURE) else None
        try:
            decoded = await asyncio.to_thread(decode_upload, data)
            if staged is not None and not (decoded.keepable and await asyncio.wrap_future(staged.job) is not None):
                await asyncio.to_thread(self.files.discard, staged)
                staged = None
        except BaseException:
            self._pending.discard(name)
            if staged is not None:
                await asyncio.to_thread(self.files.discard, staged)
            raise
        try:
            return await self._store(
                decoded.image,
                decoded.metadata.chunks,
                name=name,
                staged=staged,
                compress_level=UPLOAD_PNG_COMPRESS_LEVEL,
                category=category,
                is_intermediate=is_intermediate,
                session_id=None,
                node_id=None,
                board_id=board_id,
                metadata=decoded.metadata.metadata,
                graph=decoded.metadata.graph,
                workflow=decoded.metadata.workflow,
            )
        finally:
            decoded.image.close()

    async def _store(self, image: Image.Image, chunks: dict[str, str], **fields: Any) -> ImageDTO:
        # Shielded: a caller that gives up (client gone, session canceled) does not leave half a write behind;
        # the image is finished and announced, or rolled back.
        return await asyncio.shield(self._write(image, chunks, **fields))

    async def _write(
        self,
        image: Image.Image,
        chunks: dict[str, str],
        *,
        name: str | None = None,
        staged: StagedPng | None = None,
        compress_level: int = PNG_COMPRESS_LEVEL,
        category: ImageCategory,
        is_intermediate: bool,
        session_id: str | None,
        node_id: str | None,
        board_id: str | None,
        metadata: str | None,
        graph: str | None,
        workflow: str | None,
        guard: PublishGuard | None = None,
    ) -> ImageDTO:
        """`staged`: the upload's own bytes, already on disk under a temporary name, to store as they are (a
        clean upload); otherwise `image` is encoded with `chunks` at `compress_level`."""
        name = name or new_image_name()
        self._pending.add(name)
        try:
            written: WrittenImage = await asyncio.to_thread(
                self.files.write, name, image, chunks, staged=staged, compress_level=compress_level
            )
            now = utc_now()
            record = records.ImageRecord(
                image_name=name,
                image_category=category,
                width=written.width,
                height=written.height,
                created_at=now,
                updated_at=now,
                is_intermediate=is_intermediate,
                session_id=session_id,
                node_id=node_id,
                board_id=board_id,
                starred=False,
            )
            try:
                async with self.db.write() as conn:
                    if board_id is not None and not await self.boards.exists(board_id, conn):
                        raise UnknownBoard(board_id)
                    if session_id is not None and guard is not None and not await guard(conn, session_id):
                        raise AttemptLost(session_id)
                    await records.insert_image(conn, record, metadata, graph, workflow)
            except BaseException:
                await asyncio.to_thread(self.files.delete, name)
                raise
        finally:
            self._pending.discard(name)
        # Freshly written images are the ones clients ask for next.
        self.cache.put(name, cached_file(written.png.data, "image/png", written.png.mtime, written.png.size))
        self.cache.put(
            thumbnail_name(name),
            cached_file(written.thumbnail.data, "image/webp", written.thumbnail.mtime, written.thumbnail.size),
        )
        dto = records.to_dto(msgspec.structs.astuple(record))
        self.emit(ImageCreated(image=dto))
        return dto

    async def update(self, image_name: str, patch: ImagePatch) -> ImageDTO:
        """Apply the fields the patch sets; ImageNotFound for an unknown image, UnknownBoard for a bad board."""
        if not is_image_name(image_name):
            raise ImageNotFound(image_name)
        changes = {field: getattr(patch, field) for field in PATCHABLE if getattr(patch, field) is not msgspec.UNSET}
        async with self.db.write() as conn:
            board_id = changes.get("board_id")
            if board_id is not None and not await self.boards.exists(board_id, conn):
                raise UnknownBoard(board_id)
            if changes and not await records.update_image(conn, image_name, changes, utc_now()):
                raise ImageNotFound(image_name)
            dto = await records.get_image(conn, image_name)
        if dto is None:
            raise ImageNotFound(image_name)
        if changes:
            self.emit(ImageUpdated(image=dto))
        return dto

    async def delete(self, image_names: list[str]) -> list[str]:
        """Delete the named images that exist (record first, then files); return the names deleted."""
        candidates = [name for name in dict.fromkeys(image_names) if is_image_name(name)]
        if not candidates:
            return []
        async with self.db.write() as conn:
            deleted = await records.delete_images(conn, candidates)
        self._deletions += 1
        for name in deleted:
            self.cache.evict(name)
            self.cache.evict(thumbnail_name(name))
        # Files go after the commit: a crash in between leaves files without a record, which start-up removes.
        await asyncio.to_thread(self._delete_files, deleted)
        for name in deleted:
            self.emit(ImageDeleted(image_name=name))
        return deleted

    def _delete_files(self, names: list[str]) -> None:
        for name in names:
            self.files.delete(name)

    async def clear_intermediates(self) -> int:
        names = await records.names_where(self.db.read, "is_intermediate = 1")
        return len(await self.delete(names))

    # Reading

    async def get_dto(self, image_name: str) -> ImageDTO | None:
        if not is_image_name(image_name):
            return None
        return await records.get_image(self.db.read, image_name)

    async def list(self, query: ListImagesQuery) -> tuple[list[ImageDTO], int]:
        return await records.list_images(self.db.read, query)

    async def open_image(self, image_name: str) -> Image.Image:
        """A decoded copy of a stored image; ImageNotFound if there is no such image."""
        item = await self.get_file(image_name, thumbnail=False)

        def decode() -> Image.Image:
            from PIL import Image

            with Image.open(io.BytesIO(item.body)) as image:
                image.load()
                return image.copy()

        return await asyncio.to_thread(decode)

    async def get_file(self, image_name: str, *, thumbnail: bool) -> CachedFile:
        """The PNG or thumbnail, from memory when it is there; ImageNotFound for a name we did not issue."""
        if not is_image_name(image_name):
            raise ImageNotFound(image_name)
        key = thumbnail_name(image_name) if thumbnail else image_name
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        deletions = self._deletions
        if not await records.image_exists(self.db.read, image_name):
            raise ImageNotFound(image_name)
        path = self.files.thumbnail_path(image_name) if thumbnail else self.files.image_path(image_name)
        try:
            data = await asyncio.to_thread(self.files.read, path)
        except FileNotFoundError:
            if not thumbnail:
                raise ImageNotFound(image_name) from None
            # A thumbnail lost on disk is rebuilt from its image rather than answered 404.
            try:
                await asyncio.to_thread(self.files.write_thumbnail, image_name)
                data = await asyncio.to_thread(self.files.read, path)
            except (FileNotFoundError, OSError, ValueError):
                raise ImageNotFound(image_name) from None
        item = cached_file(data.data, "image/webp" if thumbnail else "image/png", data.mtime, data.size)
        if deletions == self._deletions:
            self.cache.put(key, item)
        return item

    async def metadata(self, image_name: str) -> ImageMetadata:
        """The stored metadata and the graph (the session's, accumulators removed), as raw JSON."""
        if not is_image_name(image_name):
            raise ImageNotFound(image_name)
        session_id, metadata, graph, workflow = await records.get_metadata(self.db.read, image_name)
        graph_raw: msgspec.Raw | None = None
        if session_id is not None and self.graph_of is not None:
            try:
                graph_raw = await self.graph_of(session_id)
            except msgspec.DecodeError:
                log.warning("session %s holds no readable graph", session_id)
        if graph_raw is None and graph is not None:
            graph_raw = msgspec.Raw(graph)
        if graph_raw is None and session_id is not None:
            # The session is gone: the graph embedded in the PNG is the only copy left.
            graph_raw = await self._graph_from_file(image_name)
        return ImageMetadata(
            metadata=None if metadata is None else msgspec.Raw(metadata),
            graph=graph_raw,
            workflow=None if workflow is None else msgspec.Raw(workflow),
        )

    async def _graph_from_file(self, image_name: str) -> msgspec.Raw | None:
        try:
            item = await self.get_file(image_name, thumbnail=False)
        except ImageNotFound:
            return None

        def read_chunk() -> str | None:
            from PIL import Image

            with Image.open(io.BytesIO(item.body)) as image:
                text = getattr(image, "text", {}).get("invokeai_graph")
            return text if isinstance(text, str) and is_json(text) else None

        text = await asyncio.to_thread(read_chunk)
        return None if text is None else msgspec.Raw(text)


def _a1111_parameters(metadata: str) -> str | None:
    """The A1111 infotext a CoreMetadata JSON carries, if any."""
    if '"parameters"' not in metadata:
        return None
    value = msgspec.json.decode(metadata).get("parameters")
    return value if isinstance(value, str) else None
