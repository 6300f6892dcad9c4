"""`/api/v1/workflows/*`: the workflow library. A workflow's graph is validated exactly as POST /sessions/
validates one (every problem at once, as a 422); names are unique ignoring case (409)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.db import NO_NUL
from server.graph.graph import Graph, GraphInput
from server.graph.references import check_graph
from server.graph.validation import Problem
from server.graph.workflows import (
    Description,
    Layout,
    NameTaken,
    Position,
    Workflow,
    WorkflowName,
    WorkflowPage,
    WorkflowStore,
    layout_problems,
)
from server.http.errors import ApiError, ErrorItem, not_found
from server.http.io import decode_body, json_response, operation
from server.http.sessions import NewGraph
from server.http.state import services
from server.images.schema import Offset, PageLimit

TAGS = ("workflows",)


class ListWorkflowsQuery(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    # Keeps the workflows whose name contains `q`, ignoring case.
    q: Annotated[str, msgspec.Meta(max_length=200, pattern=NO_NUL)] = ""
    offset: Offset = 0
    limit: PageLimit = 50


class WorkflowBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What POST and PUT take: the whole workflow (PUT replaces every field)."""

    name: WorkflowName
    description: Description = ""
    graph: NewGraph
    layout: Layout | None = None


class _WorkflowInput(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """WorkflowBody as it is decoded: the graph's outer shape only, so that validation can report every problem
    in it rather than msgspec's first."""

    name: WorkflowName
    description: Description = ""
    graph: GraphInput
    # Checked entry by entry, so a bad position is reported under its node id (msgspec names no dict key).
    layout: dict[str, Any] | None = None


def _documented_body(body_type: Any):
    """Publish `body_type` as the request body while the route decodes `_WorkflowInput` itself."""

    def decorate(endpoint):
        endpoint.__operation__ = msgspec.structs.replace(endpoint.__operation__, body=body_type)
        return endpoint

    return decorate


def _store(request: Request) -> WorkflowStore:
    return services(request).workflows


async def _checked(request: Request) -> tuple[_WorkflowInput, Graph, Layout | None]:
    body = await decode_body(request, _WorkflowInput)
    problems: list[Problem] = []
    if not body.name.strip():
        problems.append(Problem(loc=("name",), msg="must not be blank"))
    svc = services(request)
    graph, graph_errors = await check_graph(body.graph, svc.models, svc.images)
    problems += [Problem(loc=("graph", *problem.loc), msg=problem.msg) for problem in graph_errors]
    layout: Layout | None = None
    if body.layout is not None:
        layout = {}
        for node_id, value in body.layout.items():
            try:
                layout[node_id] = msgspec.convert(value, Position)
            except msgspec.ValidationError as exc:
                reason, _, path = str(exc).partition(" - at `$")
                field = path.strip("`.").split(".")[0] if path else ""
                problems.append(Problem(loc=("layout", node_id, *([field] if field else [])), msg=reason))
    if graph is not None:
        problems += layout_problems(graph, layout)
    if problems:
        raise _invalid(problems)
    assert graph is not None
    return body, graph, layout


def _invalid(problems: list[Problem]) -> ApiError:
    first = problems[0]
    if first.loc[0] == "graph":
        detail = f"The graph is invalid: {first.msg}"
    else:
        detail = f"`{'.'.join(map(str, first.loc))}` {first.msg}"
    if len(problems) > 1:
        detail += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}, listed in `errors`)"
    return ApiError(422, detail, [ErrorItem(loc=["body", *problem.loc], msg=problem.msg) for problem in problems])


def _conflict(exc: NameTaken) -> ApiError:
    return ApiError(409, f"{exc}; choose another name", [ErrorItem(loc=["body", "name"], msg=str(exc))])


@operation(
    "List saved workflows, recently changed first, without their graphs (`q` matches the name, ignoring case)",
    tags=TAGS,
    query=ListWorkflowsQuery,
    responses={200: WorkflowPage},
)
async def list_workflows(request: Request, *, query: ListWorkflowsQuery) -> Response:
    items, total = await _store(request).page(query.q, query.offset, query.limit)
    return json_response(WorkflowPage(items=items, offset=query.offset, limit=query.limit, total=total))


@_documented_body(WorkflowBody)
@operation(
    "Save a new workflow; its graph is validated as for sessions (422); 409 if the name is taken (ignoring case)",
    tags=TAGS,
    responses={201: Workflow, 409: None, 422: None},
)
async def create_workflow(request: Request) -> Response:
    body, graph, layout = await _checked(request)
    try:
        stored = await _store(request).create(body.name, body.description, graph, layout)
    except NameTaken as exc:
        raise _conflict(exc) from None
    return json_response(stored, 201, headers={"Location": f"/api/v1/workflows/{stored.id}"})


@operation("One workflow with its graph and layout", tags=TAGS, responses={200: Workflow, 404: None})
async def get_workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    stored = await _store(request).get(workflow_id)
    if stored is None:
        raise not_found("Workflow", workflow_id)
    return json_response(stored)


@_documented_body(WorkflowBody)
@operation(
    "Replace a workflow's name, description, graph and layout; 404 unknown, 409 name taken, 422 invalid graph",
    tags=TAGS,
    responses={200: Workflow, 404: None, 409: None, 422: None},
)
async def replace_workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    store = _store(request)
    if not await store.exists(workflow_id):
        raise not_found("Workflow", workflow_id)
    body, graph, layout = await _checked(request)
    try:
        stored = await store.replace(workflow_id, body.name, body.description, graph, layout)
    except LookupError:
        raise not_found("Workflow", workflow_id) from None
    except NameTaken as exc:
        raise _conflict(exc) from None
    return json_response(stored)


@operation("Delete a workflow (images it made keep their copy of it)", tags=TAGS, responses={204: None, 404: None})
async def delete_workflow(request: Request) -> Response:
    workflow_id = request.path_params["workflow_id"]
    if not await _store(request).delete(workflow_id):
        raise not_found("Workflow", workflow_id)
    return Response(status_code=204)


routes = [
    Route("/workflows/", list_workflows, methods=["GET"]),
    Route("/workflows/", create_workflow, methods=["POST"]),
    Route("/workflows/{workflow_id}", get_workflow, methods=["GET"]),
    Route("/workflows/{workflow_id}", replace_workflow, methods=["PUT"]),
    Route("/workflows/{workflow_id}", delete_workflow, methods=["DELETE"]),
]
