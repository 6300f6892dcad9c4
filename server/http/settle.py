"""On a shared database, an answer waits for the events its request caused to reach this server's WebSocket
hub (server/ws/event_log.py `settled`): a client that got `200` to a PATCH finds its `image_updated` already
on the socket, as with SQLite, where events are published before the route returns."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class EventsSettledMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        event_log = getattr(scope["app"].state, "event_log", None) if scope["type"] == "http" else None
        if event_log is None:
            await self.app(scope, receive, send)
            return

        async def send_after_events(message: Message) -> None:
            if message["type"] == "http.response.start":
                await event_log.settled()
            await send(message)

        await self.app(scope, receive, send_after_events)
