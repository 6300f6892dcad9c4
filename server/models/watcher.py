"""Watching the autoimport folders, the models folder and models.yaml, and running a sync when they change.

watchfiles groups a burst of changes (a copy, an unzip) into one batch, so one batch is one sync. The
watcher never dies of an error: it logs, waits a moment and watches again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.tasks import stop_tasks

log = logging.getLogger(__name__)

# Names of files that are still being written by a downloader, an editor or our own atomic writes.
TEMP_SUFFIXES = (".part", ".tmp", ".crdownload", ".partial", ".download", "~", ".swp")
# How long watchfiles waits for quiet before handing over a batch (ms); keeps drop-to-listed under 1 s.
STEP_MS = 100


class ModelWatcher:
    def __init__(
        self,
        folders: list[Path],
        models_yaml: Path,
        on_change: Callable[[], Awaitable[object]],
    ) -> None:
        self.folders = folders
        self.models_yaml = models_yaml
        self.on_change = on_change
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()  # set once the watches are in place (tests wait for it)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="model-watcher")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await stop_tasks([self._task])

    def relevant(self, change: object, path: str) -> bool:
        """Changes worth a sync: model files and folders, and models.yaml; not hidden or temporary names."""
        p = Path(path)
        if p.parent == self.models_yaml.parent:
            return p.name == self.models_yaml.name
        for folder in self.folders:
            if p == folder or folder in p.parents:
                parts = p.relative_to(folder).parts
                if any(part.startswith(".") for part in parts):
                    return False
                return not p.name.lower().endswith(TEMP_SUFFIXES)
        return False

    async def _run(self) -> None:
        from watchfiles import awatch

        paths = [*self.folders, self.models_yaml.parent]
        while not self._stop.is_set():
            try:
                for path in paths:
                    path.mkdir(parents=True, exist_ok=True)
                batches = awatch(*paths, watch_filter=self.relevant, step=STEP_MS, stop_event=self._stop)
                # The first step of the generator puts the watches in place before it waits in a thread:
                # only then is a change certain to be seen, so only then is the watcher `ready`.
                pending = asyncio.ensure_future(anext(batches))
                await asyncio.sleep(0)
                self.ready.set()
                while True:
                    try:
                        changes = await pending
                    except StopAsyncIteration:
                        return
                    log.debug("model folders changed: %d paths", len(changes))
                    await self.on_change()
                    pending = asyncio.ensure_future(anext(batches))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("model watcher failed; watching again in 1 s")
                await asyncio.sleep(1.0)
                # The batch that failed (watchfiles cannot hand over a name that is not UTF-8, say) may have
                # held real changes too: look at the folders once rather than miss them.
                try:
                    await self.on_change()
                except Exception:
                    log.exception("model sync after a watcher failure failed")
