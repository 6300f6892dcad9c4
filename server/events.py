"""Every event the server announces, one Struct each, tagged by `type` (docs/api.md §WebSocket), and `Emit`, the
one way a producer announces one.

Producers (the executor, the runner, the model loader and manager, the image service, boards) receive an `emit`
callable in their constructor and know nothing of who listens: `app.py` passes the WebSocket hub's `emit`, a
test may pass a list's `append`. Whoever publishes stamps `seq` and `timestamp`; producers leave the defaults."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from server.images.schema import ImageDTO
from server.models.schema import ModelIdentifier

log = logging.getLogger(__name__)


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    seq: int = 0
    timestamp: str = ""


Emit = Callable[[Event], None]


def on_loop(loop: asyncio.AbstractEventLoop | None, loop_thread: int | None, handle: Emit, event: Event) -> None:
    """`handle(event)` on the loop's thread: at once when already there (or before a loop is bound), else handed
    over without waiting. After the loop closed (a worker finishing a step at shutdown) nobody is left to tell."""
    if loop is None or threading.get_ident() == loop_thread:
        handle(event)
        return
    try:
        loop.call_soon_threadsafe(handle, event)
    except RuntimeError:
        log.debug("dropped %s emitted after the event loop closed", type(event).__name__)


class SessionStarted(Event, tag="session_started"):
    session_id: str


class SessionComplete(Event, tag="session_complete"):
    session_id: str
    status: str


class SessionCanceled(Event, tag="session_canceled"):
    session_id: str


class NodeEvent(Event, kw_only=True):
    """What every event about one node's execution names: `node_id` is the execution (`<node>#<index>` under an
    `iterate`), `source_node_id` the node of the graph it comes from."""

    session_id: str
    node_id: str
    source_node_id: str


class InvocationStarted(NodeEvent, tag="invocation_started"):
    node_type: str


class ProgressImage(msgspec.Struct):
    width: int
    height: int
    dataURL: str


class GeneratorProgress(NodeEvent, tag="generator_progress"):
    step: int
    total_steps: int
    progress_image: ProgressImage | None = None


class InvocationComplete(NodeEvent, tag="invocation_complete"):
    result: dict[str, Any]
    # True when the output was reused from the node cache instead of being computed.
    cached: bool = False


class InvocationError(NodeEvent, tag="invocation_error"):
    error_type: str
    error: str


class ImageCreated(Event, tag="image_created"):
    image: ImageDTO


class ImageUpdated(Event, tag="image_updated"):
    image: ImageDTO


class ImageDeleted(Event, tag="image_deleted"):
    image_name: str


class ModelLoadStarted(Event, tag="model_load_started"):
    session_id: str | None
    model: ModelIdentifier
    submodel: str | None = None


class ModelLoadCompleted(Event, tag="model_load_completed"):
    session_id: str | None
    model: ModelIdentifier
    submodel: str | None = None


class ModelsChanged(Event, tag="models_changed"):
    added: list[str]
    removed: list[str]
    updated: list[str]


class QueueStatus(Event, tag="queue_status"):
    running: str | None
    pending: list[str]


class Pong(Event, tag="pong"):
    pass


class ResyncRequired(Event, tag="resync_required"):
    pass


ServerEvent = (
    SessionStarted
    | SessionComplete
    | SessionCanceled
    | InvocationStarted
    | GeneratorProgress
    | InvocationComplete
    | InvocationError
    | ImageCreated
    | ImageUpdated
    | ImageDeleted
    | ModelLoadStarted
    | ModelLoadCompleted
    | ModelsChanged
    | QueueStatus
    | Pong
    | ResyncRequired
)
