"""`/ws`: one connection per client; subscribe / unsubscribe / ping in, events out (docs/api.md §WebSocket).

Each connection runs two tasks: a reader that applies the client's messages to its `Subscriber`, and a pump
that sends the subscriber's queued frames. The token and Origin checks happen before we get here
(server/http/security.py), and keep-alive pings are uvicorn's (`ws_heartbeat_s`): a peer that stops answering
is disconnected, which ends both tasks and drops its queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from server.http.state import services
from server.ws.hub import EventHub
from server.ws.messages import ClientRequest, Ping, Subscribe, Unsubscribe
from server.ws.subscriber import Subscriber

log = logging.getLogger(__name__)

# Events not tied to a session are queued from the moment a client connects, but sent only after its first
# message has been applied (or after this grace if it sends none), so that a reconnecting client's `since`
# replay comes before them and the stream it sees stays in seq order.
FIRST_MESSAGE_GRACE_S = 0.5
# How long we wait for a close frame to leave when the peer has stopped reading.
CLOSE_TIMEOUT_S = 5.0
UNSUPPORTED_DATA = 1003
INVALID_PAYLOAD = 1007
_decoder = msgspec.json.Decoder(ClientRequest)


class WebSocketEndpoint:
    """A plain ASGI app rather than a Starlette `websocket_session` function, so the pump sends through the bare
    ASGI `send`: frames are the hot path, and each wrapper layer costs about as much as the hub's work per frame."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _serve(WebSocket(scope, receive, send), send)


websocket_endpoint = WebSocketEndpoint()


async def _serve(websocket: WebSocket, send: Send) -> None:
    hub = services(websocket).events
    await websocket.accept()
    subscriber = hub.connect()
    started = asyncio.Event()
    grace = asyncio.get_running_loop().call_later(FIRST_MESSAGE_GRACE_S, started.set)
    tasks = (
        asyncio.create_task(_pump(send, subscriber, started)),
        asyncio.create_task(_read(websocket, hub, subscriber, started)),
        asyncio.create_task(subscriber.closed.wait()),
    )
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        grace.cancel()
        hub.disconnect(subscriber)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if subscriber.close_code is not None:
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await websocket.close(subscriber.close_code, _truncate(subscriber.close_reason))


async def _pump(send: Send, subscriber: Subscriber, started: asyncio.Event) -> None:
    await started.wait()
    while True:
        frame = subscriber.next_frame()
        if frame is None:
            await subscriber.wait()
            continue
        await send({"type": "websocket.send", "text": frame})


async def _read(websocket: WebSocket, hub: EventHub, subscriber: Subscriber, started: asyncio.Event) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            subscriber.fail(UNSUPPORTED_DATA, "send JSON text frames, not binary ones")
            return
        try:
            request = _decoder.decode(text)
        except msgspec.ValidationError as exc:
            subscriber.fail(INVALID_PAYLOAD, f"invalid message: {exc}")
            return
        except msgspec.DecodeError:
            subscriber.fail(INVALID_PAYLOAD, "invalid message: not JSON")
            return
        if isinstance(request, Subscribe):
            hub.subscribe(subscriber, request.sessions, request.since)
        elif isinstance(request, Unsubscribe):
            hub.unsubscribe(subscriber, request.sessions)
        elif isinstance(request, Ping):
            hub.pong(subscriber)
        started.set()


def _truncate(reason: str, limit: int = 123) -> str:
    """A close reason is at most 123 bytes of UTF-8."""
    encoded = reason.encode()
    return reason if len(encoded) <= limit else encoded[: limit - 3].decode(errors="ignore") + "..."
