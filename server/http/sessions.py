"""`/api/v1/sessions/*`: create (validate) a session from a graph, read it, queue it, cancel it."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.graph.executor import Executor, SessionConflict
from server.graph.graph import Edge, GraphInput
from server.graph.references import check_graph
from server.graph.registry import AnyNode
from server.graph.session import Session, SessionPage, SessionStore
from server.graph.validation import Problem
from server.http.errors import ApiError, ErrorItem, not_found
from server.http.io import Operation, decode_body, json_response, operation
from server.http.state import services
from server.images.schema import Offset

TAGS = ("sessions",)


class PageQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    offset: Offset = 0
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50


class CreateQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # The saved workflow the graph comes from: each image the session saves carries its name and layout.
    workflow_id: str | None = None


class InvokeQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # false: run only the next node (with all its iterations); the session stays `pending` until the last.
    all: bool = True


class NewGraph(msgspec.Struct, kw_only=True):
    """A graph as POST /sessions/ takes it (documented in OpenAPI): one without an `id` is given a new one."""

    id: str | None = None
    nodes: dict[str, AnyNode] = {}
    edges: list[Edge] = []


def _documents_body(body_type: Any):
    """Publish `body_type` as the request body in OpenAPI while the route decodes the body itself: a graph is
    checked node by node so every problem is reported, which one msgspec decode cannot do."""

    def decorate(endpoint):
        spec: Operation = endpoint.__operation__
        endpoint.__operation__ = msgspec.structs.replace(spec, body=body_type)
        return endpoint

    return decorate


def _store(request: Request) -> SessionStore:
    return services(request).sessions


def _executor(request: Request) -> Executor:
    return services(request).executor


def _invalid(problems: list[Problem]) -> ApiError:
    errors = [ErrorItem(loc=["body", *problem.loc], msg=problem.msg) for problem in problems]
    more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}, listed in `errors`)"
    return ApiError(422, f"The graph is invalid: {problems[0].msg}" + (more if len(problems) > 1 else ""), errors)


@_documents_body(NewGraph)
@operation(
    "Create a session from a graph (validated); `workflow_id` names the saved workflow it comes from",
    tags=TAGS,
    query=CreateQuery,
    responses={201: Session, 422: None},
)
async def create_session(request: Request, query: CreateQuery) -> Response:
    data = await decode_body(request, GraphInput)
    svc = services(request)
    graph, problems = await check_graph(data, svc.models, svc.images)
    if query.workflow_id is not None and not await svc.workflows.exists(query.workflow_id):
        msg = f"there is no saved workflow {query.workflow_id[:80]!r}; GET /api/v1/workflows/ lists them"
        error = _invalid(problems) if problems else ApiError(422, f"`workflow_id`: {msg}")
        error.errors.append(ErrorItem(loc=["query", "workflow_id"], msg=msg))
        raise error
    if graph is None:
        raise _invalid(problems)
    session = SessionStore.new(graph, workflow_id=query.workflow_id)
    await svc.sessions.save(session)
    return json_response(session, 201, headers={"Location": f"/api/v1/sessions/{session.id}"})


@operation("List sessions, newest first", tags=TAGS, query=PageQuery, responses={200: SessionPage})
async def list_sessions(request: Request, query: PageQuery) -> Response:
    items, total = await _store(request).page(query.offset, query.limit)
    executor = _executor(request)
    items = [executor.live(item.id) or item for item in items]
    return json_response(SessionPage(items=items, offset=query.offset, limit=query.limit, total=total))


@operation("A session: status, executed nodes, results, errors", tags=TAGS, responses={200: Session, 404: None})
async def get_session(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    live = _executor(request).live(session_id)
    if live is not None:
        return json_response(live)
    raw = await _store(request).get_raw(session_id)
    if raw is None:
        raise not_found("Session", session_id)
    # Stored JSON goes out as it is: no decode and re-encode of a large graph.
    return Response(raw, media_type="application/json")


@operation(
    "Queue a session (FIFO) to run to the end, or with all=false its next node only; 409 while queued or running",
    tags=TAGS,
    query=InvokeQuery,
    responses={202: Session, 404: None, 409: None},
)
async def invoke_session(request: Request, query: InvokeQuery) -> Response:
    session_id = request.path_params["session_id"]
    try:
        session = await _executor(request).submit(session_id, all_nodes=query.all)
    except LookupError:
        raise not_found("Session", session_id) from None
    except SessionConflict as exc:
        raise ApiError(409, f"{exc}; cancel it or wait for it to finish") from None
    return json_response(session, 202)


@operation(
    "Cancel: a queued session leaves the queue, a running one stops before its next step",
    tags=TAGS,
    responses={202: None, 404: None, 409: None},
)
async def cancel_session(request: Request) -> Response:
    session_id = request.path_params["session_id"]
    try:
        await _executor(request).cancel(session_id)
    except LookupError:
        raise not_found("Session", session_id) from None
    except SessionConflict as exc:
        raise ApiError(409, str(exc)) from None
    return Response(status_code=202)


routes = [
    Route("/sessions/", create_session, methods=["POST"]),
    Route("/sessions/", list_sessions, methods=["GET"]),
    Route("/sessions/{session_id}", get_session, methods=["GET"]),
    Route("/sessions/{session_id}/invoke", invoke_session, methods=["PUT"]),
    Route("/sessions/{session_id}/invoke", cancel_session, methods=["DELETE"]),
]
