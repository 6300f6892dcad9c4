"""`/api/v1/queue`: which session runs now and which wait, in order."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.graph.executor import QueueState
from server.http.io import json_response, operation
from server.http.state import services


@operation("The running session and the queued ones, in order", tags=("sessions",), responses={200: QueueState})
async def queue_status(request: Request) -> Response:
    return json_response(services(request).executor.status())


routes = [Route("/queue", queue_status, methods=["GET"])]
