"""How a route or the WebSocket endpoint reaches the services of the app it runs in."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from server.services import Services


def services(connection: HTTPConnection) -> Services:
    return connection.app.state.services
