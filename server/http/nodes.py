"""`/api/v1/nodes/`: every node type with its inputs and outputs, what UIs and scripts build graphs from."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.graph.registry import NodeCatalogue, catalogue
from server.http.io import json_response, operation

_body: bytes | None = None


@operation(
    "Every node type: inputs (type, default, limits, choices, wiring) and outputs",
    tags=("nodes",),
    responses={200: NodeCatalogue},
)
async def list_nodes(request: Request) -> Response:
    global _body
    if _body is None:  # fixed for the life of the process
        _body = bytes(json_response(catalogue()).body)
    return Response(_body, media_type="application/json")


routes = [Route("/nodes/", list_nodes, methods=["GET"])]
