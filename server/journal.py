"""The server's terminal lines about work: one when a session starts, one when it ends (how long, how many
steps at what speed, which images, or why it failed), one per model part loaded. People read these while
they work (ComfyUI's "Prompt executed in 3.2 seconds"); the journal writes them from the event stream, as
a listener of the hub, so no producer has to."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from server.events import (
    Event,
    GeneratorProgress,
    ImageCreated,
    InvocationError,
    ModelLoadCompleted,
    ModelLoadStarted,
    SessionComplete,
    SessionStarted,
)

log = logging.getLogger("imagegraph")


@dataclass
class _Run:
    started: float
    steps: int = 0
    step_seconds: float = 0.0
    last_step: tuple[int, int] | None = None
    last_step_at: float | None = None
    images: list[str] = field(default_factory=list)
    error: str | None = None


def short(session_id: str) -> str:
    return session_id[:8]


class Journal:
    """Called with every published event (`EventHub.add_listener`)."""

    def __init__(self) -> None:
        self._runs: dict[str, _Run] = {}
        self._loads: dict[tuple[str, str | None], float] = {}

    def __call__(self, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, SessionStarted):
            self._runs[event.session_id] = _Run(started=now)
            log.info("session %s started", short(event.session_id))
        elif isinstance(event, GeneratorProgress):
            run = self._runs.get(event.session_id)
            if run is not None:
                if run.last_step_at is not None and event.step > 1:
                    run.step_seconds += now - run.last_step_at
                    run.steps += 1
                run.last_step, run.last_step_at = (event.step, event.total_steps), now
        elif isinstance(event, ImageCreated) and event.image.session_id in self._runs:
            self._runs[event.image.session_id].images.append(event.image.image_name)
        elif isinstance(event, InvocationError) and event.session_id in self._runs:
            self._runs[event.session_id].error = f"node {event.source_node_id}: {event.error}"
        elif isinstance(event, SessionComplete):
            run = self._runs.pop(event.session_id, None)
            if run is not None:
                log.info("session %s %s", short(event.session_id), self._outcome(event.status, run, now))
        elif isinstance(event, ModelLoadStarted):
            self._loads[(event.model.key, event.submodel)] = now
        elif isinstance(event, ModelLoadCompleted):
            began = self._loads.pop((event.model.key, event.submodel), None)
            took = f" in {now - began:.2f} s" if began is not None else ""
            log.info("loaded %s (%s)%s", event.model.key, event.submodel or "whole model", took)

    def progress(self, session_id: str) -> tuple[int, int] | None:
        """The last step the session reported, (step, total), if it is running and reported one."""
        run = self._runs.get(session_id)
        return None if run is None else run.last_step

    @staticmethod
    def _outcome(status: str, run: _Run, now: float) -> str:
        took = f"{now - run.started:.1f} s"
        if status == "failed":
            return f"failed after {took}: {run.error or 'see the session errors'}"
        if status == "canceled":
            at = f" at step {run.last_step[0]}/{run.last_step[1]}" if run.last_step else ""
            return f"canceled after {took}{at}"
        speed = ""
        if run.steps and run.step_seconds > 0:
            speed = f", {run.steps + 1} steps at {run.steps / run.step_seconds:.1f} it/s"
        images = ""
        if run.images:
            shown = ", ".join(run.images[:4]) + (f" and {len(run.images) - 4} more" if len(run.images) > 4 else "")
            images = f": {len(run.images)} image{'s' if len(run.images) != 1 else ''} ({shown})"
        return f"{status} in {took}{speed}{images}"
