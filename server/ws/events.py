"""Every event the server sends on `/ws`, one Struct each, tagged by `type` (../shared/API.md §WebSocket), and
the messages a client may send.

The hub stamps `seq` and `timestamp` when it publishes an event; producers leave them at their defaults."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from server.images.schema import ImageDTO
from server.models.schema import ModelIdentifier


class Event(msgspec.Struct, tag_field="type", kw_only=True):
    seq: int = 0
    timestamp: str = ""


class SessionStarted(Event, tag="session_started"):
    session_id: str


class SessionComplete(Event, tag="session_complete"):
    session_id: str
    status: str


class SessionCanceled(Event, tag="session_canceled"):
    session_id: str


class InvocationStarted(Event, tag="invocation_started"):
    session_id: str
    node_id: str
    source_node_id: str
    node_type: str


class ProgressImage(msgspec.Struct):
    width: int
    height: int
    dataURL: str


class GeneratorProgress(Event, tag="generator_progress"):
    session_id: str
    node_id: str
    source_node_id: str
    step: int
    total_steps: int
    progress_image: ProgressImage | None = None


class InvocationComplete(Event, tag="invocation_complete"):
    session_id: str
    node_id: str
    source_node_id: str
    result: dict[str, Any]
    # True when the output was reused from the node cache instead of being computed.
    cached: bool = False


class InvocationError(Event, tag="invocation_error"):
    session_id: str
    node_id: str
    source_node_id: str
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


# Client -> server messages. Unknown fields are refused so a typo (`sinse`) is an error, not a silent no-op.
SessionIds = list[str] | Literal["*"]


class ClientMessage(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    pass


class Subscribe(ClientMessage, tag="subscribe"):
    sessions: SessionIds
    # Replay every retained event after this seq that the subscription covers, then go live.
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None


class Unsubscribe(ClientMessage, tag="unsubscribe"):
    sessions: SessionIds


class Ping(ClientMessage, tag="ping"):
    pass


ClientRequest = Subscribe | Unsubscribe | Ping
