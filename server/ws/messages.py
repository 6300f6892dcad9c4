"""What a client may send on `/ws` (docs/api.md §WebSocket): subscribe, unsubscribe, ping."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

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
