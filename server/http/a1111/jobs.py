"""A1111 requests as jobs of our queue: each image is one session, queued with the rest (FIFO, so concurrent
A1111 clients are served in the order they asked), cancellable through the same path as every session, and
watched through the events every session emits. What `/progress`, `/interrupt` and `/skip` act on is the job that
is running now, as in A1111 (which runs one request at a time)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec

from server.events import Event, GeneratorProgress, SessionComplete
from server.graph.executor import SessionConflict
from server.graph.graph import GraphInput
from server.graph.references import check_graph
from server.graph.session import SessionStore
from server.graph.standard import GenerationSettings, build_graph
from server.services import Services


class JobFailed(Exception):
    """A session of the job ended in an error; the message is the node's."""


@dataclass
class Job:
    session_ids: list[str]
    started: float = field(default_factory=time.monotonic)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    done: int = 0
    step: int = 0
    steps: int = 0
    preview: str | None = None
    interrupted: bool = False
    skipped: bool = False


@dataclass
class JobResult:
    # Per image, in order: the final image's name, or None for one that was skipped or interrupted.
    image_names: list[str | None]
    session_ids: list[str]


class Jobs:
    """The A1111 jobs of one server: queued in request order, followed through the event hub."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.jobs: list[Job] = []
        self._finished: dict[str, asyncio.Future[str]] = {}
        self._submit = asyncio.Lock()
        services.events.add_listener(self._on_event)

    def _on_event(self, event: Event) -> None:
        # Listeners run on the event loop's thread: futures may be set here directly.
        if isinstance(event, SessionComplete):
            future = self._finished.pop(event.session_id, None)
            if future is not None and not future.done():
                future.set_result(event.status)
            job = self._job_of(event.session_id)
            if job is not None:
                job.done += 1
                job.step = job.steps = 0
        elif isinstance(event, GeneratorProgress):
            job = self._job_of(event.session_id)
            if job is not None:
                job.step, job.steps = event.step, event.total_steps
                if event.progress_image is not None:
                    job.preview = event.progress_image.dataURL

    def _job_of(self, session_id: str) -> Job | None:
        return next((job for job in self.jobs if session_id in job.session_ids), None)

    @property
    def current(self) -> Job | None:
        return self.jobs[0] if self.jobs else None

    async def generate(self, settings: list[GenerationSettings]) -> JobResult:
        """Queue one standard-graph session per settings, wait for all of them; JobFailed when one fails."""
        return await self.run([build_graph(item) for item in settings], ("region_paste", "paste", "decode"))

    async def run(self, graphs: list[dict[str, Any]], final_nodes: tuple[str, ...]) -> JobResult:
        """Queue one session per graph, wait for all of them; each image is the first of `final_nodes` there is."""
        svc = self.services
        sessions = []
        for item in graphs:
            graph, problems = await check_graph(msgspec.convert(item, GraphInput), svc.models, svc.images)
            if graph is None:
                raise JobFailed("; ".join(problem.msg for problem in problems))
            sessions.append(SessionStore.new(graph))
        job = Job(session_ids=[session.id for session in sessions])
        loop = asyncio.get_running_loop()
        waits = {session.id: loop.create_future() for session in sessions}
        async with self._submit:  # one request's images stay together in the queue
            self._finished.update(waits)
            self.jobs.append(job)
            try:
                for session in sessions:
                    await svc.sessions.save(session)
                    await svc.executor.submit(session.id)
            except BaseException:
                self._forget(job)
                raise
        try:
            statuses = [await waits[session.id] for session in sessions]
        finally:
            self._forget(job)
        names: list[str | None] = []
        for session, status in zip(sessions, statuses, strict=True):
            stored = await svc.sessions.get(session.id)
            if status == "failed" and stored is not None:
                raise JobFailed(_first_error(stored.errors))
            names.append(
                _final_image(stored.results, final_nodes) if stored is not None and status == "completed" else None
            )
        return JobResult(image_names=names, session_ids=job.session_ids)

    def _forget(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        for session_id in job.session_ids:
            self._finished.pop(session_id, None)

    async def interrupt(self) -> None:
        """Stop the running job: its running image stops at the next step, its queued ones leave the queue."""
        job = self.current
        if job is None:
            return
        job.interrupted = True
        for session_id in job.session_ids:
            await self._cancel(session_id)

    async def skip(self) -> None:
        """Stop the image being made now; the job goes on with its next one."""
        job = self.current
        running = self.services.executor.status().running
        if job is not None and running in job.session_ids:
            job.skipped = True
            await self._cancel(running)

    async def _cancel(self, session_id: str) -> None:
        try:
            await self.services.executor.cancel(session_id)
        except (LookupError, SessionConflict):
            pass  # finished meanwhile: nothing to stop


def _first_error(errors: dict[str, str]) -> str:
    return next(iter(errors.values()), "the generation failed")


def _final_image(results: dict[str, Any], final_nodes: tuple[str, ...]) -> str | None:
    for node_id in final_nodes:
        result = results.get(node_id)
        image = getattr(result, "image", None)
        if image is None and isinstance(result, dict):
            image = result.get("image")
        if image is not None:
            return image["image_name"] if isinstance(image, dict) else image.image_name
    return None
