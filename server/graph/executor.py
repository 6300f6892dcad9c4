"""The session queue and the worker that runs it.

What routes use is small on purpose - `submit`, `cancel`, `status`, `live`, events out through the hub - so
that the queue could move to another process or machine (Ray, Redis streams...) without touching nodes or
routes. Here the queue is an in-process FIFO whose truth is the session status in SQLite: queued sessions
are found again at start-up, and one found `running` was interrupted by a crash and is marked `failed`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Literal

import msgspec

from server.clock import utc_now
from server.config import Settings
from server.events import (
    Emit,
    Event,
    GeneratorProgress,
    QueueStatus,
    SessionCanceled,
    SessionComplete,
    SessionStarted,
)
from server.graph.cache import NodeCache
from server.graph.context import Canceled, RunServices
from server.graph.graph import topological_order
from server.graph.runner import SessionFailed, SessionRun
from server.graph.session import FINISHED, Session, SessionStore
from server.models.devices import guess_device
from server.models.loader import ModelLoader
from server.tasks import stop_tasks

if TYPE_CHECKING:
    from server.images.service import ImageService, PublishGuard
    from server.models.catalogue import ModelCatalogue

log = logging.getLogger(__name__)

CRASH_REASON = "The server stopped while this session was running; invoke it again to run it from the start"
# How long a stopping server waits for the node in flight to notice it was canceled.
STOP_WAIT_S = 10.0
# How often a running session's progress (executed nodes, results) is stored, at most.
PROGRESS_SAVE_INTERVAL_S = 0.5
# Sessions run one node at a time (`all=false`) keep their tensors between invokes; this many at most.
MAX_PARKED = 8


class QueueState(msgspec.Struct):
    running: str | None
    pending: list[str]


WorkerState = Literal["idle", "busy", "lost"]


class WorkerInfo(msgspec.Struct, kw_only=True):
    """One process that runs sessions, as GET /api/v1/workers lists it."""

    name: str
    device: str
    state: WorkerState
    session_id: str | None
    # Main models (and others) with parts in its model cache: a session for one of them runs there first.
    models_loaded: list[str]
    last_seen: str


class WorkerList(msgspec.Struct, kw_only=True):
    workers: list[WorkerInfo]


class SessionConflict(Exception):
    """The session is in a state that does not allow the request (already queued, nothing to cancel...)."""


class Executor:
    def __init__(
        self, settings: Settings, emit: Emit, store: SessionStore, images: ImageService, models: ModelCatalogue
    ) -> None:
        self.settings = settings
        self.emit = emit
        self.store = store
        self.images = images
        self.models = models
        self.loader = ModelLoader(models, settings, emit)
        self.cache = NodeCache(settings.node_cache_entries)
        # One thread does all torch work, so models and the device are never used from two threads.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="imagegraph-worker")
        self._pending: deque[str] = deque()
        # Sessions queued to run only their next node, and the runs such sessions left half done.
        self._one_node: set[str] = set()
        self._parked: OrderedDict[str, SessionRun] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self._running: Session | None = None
        self._run: SessionRun | None = None
        self._cancel = threading.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._save_task: asyncio.Task[None] | None = None
        self._dirty = False
        self._finishing = asyncio.Event()
        # Set while no session runs; the last step the running one reported, for the stop summary.
        self._idle = asyncio.Event()
        self._idle.set()
        self._step: tuple[int, int] | None = None
        # This process's name as `Session.worker` and in GET /api/v1/workers.
        self.name = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"

    @property
    def device_name(self) -> str:
        """The device generation runs on: torch's answer once it ran, a cheap guess before."""
        if self.loader.device is not None:
            return str(self.loader.device.type)
        return guess_device(self.settings.device)

    # lifecycle

    async def start(self) -> None:
        for session_id in await self.store.ids_with_status("running"):
            session = await self.store.get(session_id)
            if session is not None:
                session.status = "failed"
                session.errors[_interrupted_node(session)] = CRASH_REASON
                await self.store.save(session)
                log.warning("session %s was running when the server stopped; marked failed", session_id)
        self._pending.extend(await self.store.ids_with_status("queued"))
        if self._pending:
            log.info("%d queued session(s) found; running them", len(self._pending))
        self._task = asyncio.create_task(self._work(), name="imagegraph-executor")

    async def stop(self) -> None:
        """A clean stop: the running session stops before its next step and goes back to the queue, first in
        line, as it was; the queue is kept for the next start, in its order."""
        self._stopping = True
        self._cancel.set()
        running = self._running
        log.info("stopping: %s", self._stop_summary())
        if running is not None:
            # Let it wind down through the normal path (it is saved `queued` again) before anything is cancelled.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_WAIT_S):
                    await self._idle.wait()
        if self._task is not None:
            await stop_tasks([self._task])
        # Let the node in flight reach its next cancel check (one step) while the image service and the
        # database it may be using are still open; a step that takes longer is left to finish on its own.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_WAIT_S):
                await asyncio.to_thread(self._pool.shutdown, wait=True, cancel_futures=True)

    def _stop_summary(self) -> str:
        running_id = self._running.id if self._running is not None else None
        waiting = len([i for i in self.status().pending if i != running_id])  # status(): the shared queue's too
        queued = f"{waiting} queued" if waiting else "nothing else queued"
        if self._running is None:
            return f"{waiting} session(s) queued; they run at the next start" if waiting else "the queue is empty"
        at = f" at step {self._step[0]}/{self._step[1]}" if self._step is not None else ""
        return f"session {self._running.id} interrupted{at}, {queued}; {'they run' if waiting else 'it runs'} first at the next start"

    # the interface routes use

    def models_loaded(self) -> list[str]:
        return sorted({str(key[0]) for key in self.loader.cache.cached_keys()})

    async def workers(self) -> WorkerList:
        """Who runs sessions: on SQLite, this process alone."""
        running = self._running.id if self._running is not None else None
        me = WorkerInfo(
            name=self.name,
            device=self.device_name,
            state="busy" if running else "idle",
            session_id=running,
            models_loaded=self.models_loaded(),
            last_seen=utc_now(),
        )
        return WorkerList(workers=[me])

    def status(self) -> QueueState:
        return QueueState(running=self._running.id if self._running else None, pending=list(self._pending))

    def live(self, session_id: str) -> Session | None:
        """The running session as it is in memory now (its stored copy lags by a write)."""
        return self._running if self._running is not None and self._running.id == session_id else None

    async def submit(self, session_id: str, all_nodes: bool = True) -> Session:
        """Queue a session: to run to the end, or (`all_nodes` False) to run its next node only. A session run
        part-way continues where it stopped; a finished one runs again from the start.
        LookupError: unknown; SessionConflict: already queued or running."""
        async with self._lock:
            session = await self.store.get(session_id)
            if session is None:
                raise LookupError(session_id)
            if session.status in ("queued", "running") or session_id in self._pending or self.live(session_id):
                raise SessionConflict(f"session {session_id} is already {session.status}")
            parked = self._parked.get(session_id)
            if session.status != "pending" or parked is None or parked.session.executed != session.executed:
                # Start afresh: finished, never run, or its half-done run is gone (evicted, or a restart).
                self._parked.pop(session_id, None)
                session.executed, session.results, session.errors = [], {}, {}
            session.status = "queued"
            session.queued_at = utc_now()
            session.attempts = 0
            await self.store.save(session)
            self._pending.append(session_id)
            if all_nodes:
                self._one_node.discard(session_id)
            else:
                self._one_node.add(session_id)
        self._queue_changed()
        self._wakeup.set()
        return session

    async def cancel(self, session_id: str) -> None:
        """Take a queued session off the queue, or stop a running one before its next step."""
        async with self._lock:
            if self.live(session_id) is not None:
                self._cancel.set()
                return
            session = await self.store.get(session_id)
            if session is None:
                raise LookupError(session_id)
            if session.status == "canceled":
                return
            if session_id not in self._pending:
                raise SessionConflict(
                    f"session {session_id} is {session.status}; only a queued or running one can be canceled"
                )
            self._pending.remove(session_id)
            self._one_node.discard(session_id)
            self._parked.pop(session_id, None)
            session.status = "canceled"
            await self.store.save(session)
        self.emit(SessionCanceled(session_id=session_id))
        self.emit(SessionComplete(session_id=session_id, status="canceled"))
        self._queue_changed()

    # the worker loop

    def _queue_changed(self) -> None:
        state = self.status()
        self.emit(QueueStatus(running=state.running, pending=state.pending))

    def _run_services(self) -> RunServices:
        """What a run's nodes reach (models, images, events), on this loop."""
        return RunServices(
            settings=self.settings,
            emit=self._emit_from_run,
            loader=self.loader,
            images=self.images,
            loop=asyncio.get_running_loop(),
            publish_guard=self._publish_guard(),
        )

    def _publish_guard(self) -> PublishGuard | None:
        """None: one process owns the queue, a run never loses its session to another."""
        return None

    async def _work(self) -> None:
        services = self._run_services()
        await self.models.ready()  # sessions name models: wait until models.yaml has been read
        while not self._stopping:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._stopping:
                return  # what is queued stays queued, for the next start
            try:
                await self._next(services)
            except Exception:  # e.g. the database failing: log it, keep serving the queue
                log.exception("the executor failed to run a session")

    def _emit_from_run(self, event: Event) -> None:
        if isinstance(event, GeneratorProgress) and self._running is not None:
            self._step = (event.step, event.total_steps)
        self.emit(event)

    async def _next(self, services: RunServices) -> None:
        async with self._lock:
            # Read first, then take it off the queue and mark it running with no await in between: `status()`
            # must never show it neither pending nor running (an empty queue while it is yet to run).
            session_id = self._pending[0]
            try:
                session = await self.store.get(session_id)
            finally:
                self._pending.popleft()  # also when the read fails: the queue goes on without it
            if session is None or session.status != "queued":
                return
            self._begin(session)
        # Stored behind the work, not before it: a crash before it lands leaves the session queued, and it
        # simply runs again after the restart.
        self._changed()
        await self._run_session(session, services)

    def _begin(self, session: Session) -> None:
        """`session` is this executor's running one from now on."""
        session.status = "running"
        session.worker = self.name
        session.attempts += 1
        session.started_at = utc_now()
        self._cancel.clear()
        self._running = session
        self._step = None
        self._idle.clear()

    async def _run_session(self, session: Session, services: RunServices) -> None:
        self._queue_changed()
        self.emit(SessionStarted(session_id=session.id))
        try:
            await self._execute(session, services)
        finally:
            self._running = None
            self._run = None
            self._idle.set()
            self._queue_changed()
        if not self._announce_end(session):
            return
        # Announced once stored and off the queue: whoever hears it finds the final state everywhere.
        if session.status == "canceled":
            self.emit(SessionCanceled(session_id=session.id))
        if session.status in FINISHED:
            self.emit(SessionComplete(session_id=session.id, status=session.status))

    async def _execute(self, session: Session, services: RunServices) -> None:
        run = self._parked.pop(session.id, None)
        if run is not None:
            run.session = session  # the stored copy, now `running`; same graph and progress
        else:
            run = SessionRun(session, services, self.cache, self._pool, self._cancel, self._changed)
        self._run = run
        one_node = session.id in self._one_node
        self._one_node.discard(session.id)
        try:
            await run.run(max_nodes=1 if one_node else None)
            if run.finished:
                session.status = "completed"
            else:
                session.status = "pending"
                self._parked[session.id] = run
                while len(self._parked) > MAX_PARKED:
                    self._parked.popitem(last=False)
        except Canceled:
            # A server shutting down puts its session back in the queue: it runs again after the restart.
            session.status = "queued" if self._stopping else "canceled"
        except SessionFailed:
            session.status = "failed"
        except asyncio.CancelledError:
            session.status = "queued"
            await asyncio.shield(self._final_save(session))
            raise
        except Exception as exc:  # a bug in the runner itself: fail the session, keep the server going
            log.exception("session %s failed", session.id)
            session.status = "failed"
            session.errors[run.current or session.id] = f"{type(exc).__name__}: {exc}"
        await self._final_save(session)

    # write-behind: progress is saved while the worker computes; the final state is saved before it is announced

    def _changed(self) -> None:
        self._dirty = True
        if self._save_task is None or self._save_task.done():
            self._save_task = asyncio.get_running_loop().create_task(self._flush())

    def _announce_end(self, session: Session) -> bool:
        """Whether this executor announces how the session ended (not when it lost the session to another)."""
        return True

    async def _store_progress(self, session: Session) -> None:
        await self.store.save(session)

    async def _store_final(self, session: Session) -> None:
        await self.store.save(session)

    async def _flush(self) -> None:
        while self._dirty and self._running is not None:
            self._dirty = False
            await self._store_progress(self._running)
            # At most a few saves a second: each is an fsync, and a small model's whole image takes less
            # time than a handful of them. The final save does not wait for this pause.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_SAVE_INTERVAL_S):
                    await self._finishing.wait()

    async def _final_save(self, session: Session) -> None:
        if self._save_task is not None:
            self._finishing.set()
            with contextlib.suppress(Exception):
                await self._save_task
            self._finishing.clear()
        self._dirty = False
        await self._store_final(session)


def _interrupted_node(session: Session) -> str:
    """The node that was running when the server stopped: the first one in order that did not finish."""
    done = {node_id.split("#", 1)[0] for node_id in session.executed}
    for node_id in topological_order(session.graph):
        if node_id not in done:
            return node_id
    return session.executed[-1] if session.executed else session.graph.id
