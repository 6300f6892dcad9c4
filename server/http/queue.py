"""`/api/v1/queue`: which session runs now and which wait, in order; `/api/v1/workers`: who runs them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.graph.executor import QueueState, WorkerList
from server.http.io import json_response, operation
from server.http.state import services


@operation("The running session and the queued ones, in order", tags=("sessions",), responses={200: QueueState})
async def queue_status(request: Request) -> Response:
    return json_response(services(request).executor.status())


@operation(
    "The processes that run sessions: this server's own, and on a shared database every `imagegraph worker`",
    tags=("sessions",),
    responses={200: WorkerList},
)
async def list_workers(request: Request) -> Response:
    return json_response(await services(request).executor.workers())


routes = [Route("/queue", queue_status, methods=["GET"]), Route("/workers", list_workers, methods=["GET"])]
