"""Start-up reconciliation: removes image files without records (and leftover temp files) and records without
files, and rebuilds missing thumbnails; in the background, so the server answers its first request at once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Set
from pathlib import Path

import msgspec

from server.config import Settings
from server.db import Database
from server.images import records
from server.images.files import TEMP_PREFIX, ImageFiles

log = logging.getLogger(__name__)

# Files younger than this on a shared root are never taken for leftovers: some process may still be writing them.
SHARED_ROOT_GRACE_S = 600.0

# Deletes the named images (record, then files) and returns the names deleted.
DeleteImages = Callable[[list[str]], Awaitable[list[str]]]


class ReconcileReport(msgspec.Struct, kw_only=True):
    files_removed: list[str] = []
    records_removed: list[str] = []
    thumbnails_rebuilt: list[str] = []
    strays_removed: list[str] = []


class Reconciler:
    def __init__(
        self, settings: Settings, files: ImageFiles, db: Database, *, pending: Set[str], delete: DeleteImages
    ) -> None:
        """`pending`: the live set of names whose files may be on disk before their record is committed; they
        are left alone."""
        self.settings = settings
        self.files = files
        self.db = db
        self.pending = pending
        self.delete = delete
        self._task: asyncio.Task[ReconcileReport] | None = None
        self.done = threading.Event()
        self.report: ReconcileReport | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run_logged(), name="images-reconcile")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run_logged(self) -> ReconcileReport:
        try:
            report = await self.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("image reconciliation failed; it runs again at the next start")
            report = ReconcileReport()
        self.report = report
        self.done.set()
        return report

    async def run(self) -> ReconcileReport:
        """Remove files without records (and leftover temp files), records without files; rebuild thumbnails."""
        report = ReconcileReport()
        images, thumbnails, strays = await asyncio.to_thread(self.files.listing)
        known = await records.all_names(self.db.read)
        # On a shared root (several servers and workers), another process may be writing right now.
        recent = _written_within(SHARED_ROOT_GRACE_S) if self.settings.shared_database else _never

        for path in strays:
            if recent(path):
                continue
            # A temp file of a write in progress carries its final name; everything else stray goes.
            if path.name.startswith(TEMP_PREFIX) and any(name in path.name for name in self.pending):
                continue
            if await asyncio.to_thread(self.files.remove_stray, path):
                report.strays_removed.append(path.name)

        for name in sorted((images | thumbnails) - known):
            # Pending first, then the record: a write still running, or one that committed since the listing,
            # is spared.
            if name in self.pending or recent(self.files.image_path(name)):
                continue
            if await records.image_exists(self.db.read, name):
                continue
            await asyncio.to_thread(self.files.delete, name)
            report.files_removed.append(name)

        missing = []
        for name in sorted(known - images):
            on_disk = await asyncio.to_thread(_is_regular_file, self.files.image_path(name))
            if not on_disk:
                missing.append(name)
        report.records_removed = await self.delete(missing)

        for name in sorted((known & images) - thumbnails):
            try:
                await asyncio.to_thread(self.files.write_thumbnail, name)
                report.thumbnails_rebuilt.append(name)
            except (OSError, ValueError) as exc:
                log.warning("could not rebuild the thumbnail of %s: %s", name, exc)

        for what, names in (
            ("files without a record", report.files_removed),
            ("records without a file", report.records_removed),
            ("stray entries", report.strays_removed),
            ("missing thumbnails rebuilt", report.thumbnails_rebuilt),
        ):
            if names:
                shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
                log.warning("image reconciliation: %d %s: %s", len(names), what, shown)
        return report


def _written_within(seconds: float) -> Callable[[Path], bool]:
    def recent(path: Path) -> bool:
        try:
            return time.time() - os.lstat(path).st_mtime < seconds
        except OSError:
            return False

    return recent


def _never(path: Path) -> bool:
    return False


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
