"""Every error leaves the server as JSON `{"detail": ..., "errors"?: [...]}` with the right status.

The packages below raise their own exceptions, which know nothing of HTTP; `DOMAIN_STATUS` is the one table
that says which status each kind answers. Routes still catch the few whose answer depends on the route (a
board named in the query or in the body)."""

from __future__ import annotations

import logging

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route

from server.db import TextNotStorable
from server.images.upload import ImageTooLarge, NotAnImage
from server.models import errors as model_errors
from server.models.merge import MergeError
from server.models.probe import NotAModel

log = logging.getLogger(__name__)


class ErrorItem(msgspec.Struct):
    loc: list[str | int]
    msg: str


class ErrorBody(msgspec.Struct, omit_defaults=True):
    detail: str
    errors: list[ErrorItem] = []


class ApiError(Exception):
    """Raise from a route to answer `status` with a sentence a person can act on."""

    def __init__(self, status: int, detail: str, errors: list[ErrorItem] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = errors or []


def not_found(kind: str, identifier: str) -> ApiError:
    """404 naming what was asked for; a long identifier (a client may send anything) is cut short."""
    shown = identifier if len(identifier) <= 80 else identifier[:80] + "…"
    return ApiError(404, f"{kind} {shown!r} not found")


class A1111ErrorBody(msgspec.Struct):
    """A1111's error shape, which its clients print: the kind, our detail, and the field-level errors."""

    error: str
    detail: str
    body: str
    errors: list[ErrorItem]


def error_response(
    status: int, detail: str, errors: list[ErrorItem] | None = None, headers=None, request: Request | None = None
) -> Response:
    if request is not None and request.url.path.startswith("/sdapi/"):
        kind = "ValidationError" if status == 422 else "HTTPException"
        body = msgspec.json.encode(A1111ErrorBody(error=kind, detail=detail, body="", errors=errors or []))
    else:
        body = msgspec.json.encode(ErrorBody(detail=detail, errors=errors or []))
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def validation_error(exc: msgspec.ValidationError, where: str) -> ApiError:
    """Turn msgspec's `Expected int, got str - at $.nodes.n3.steps` into a detail and a `loc`."""
    message = str(exc)
    reason, _, path = message.partition(" - at `")
    loc: list[str | int] = [where]
    for part in _path_parts(path.rstrip("`")):
        loc.append(part)
    field = ".".join(str(part) for part in loc[1:]) or where
    if reason.startswith("Object missing required field"):
        missing = reason.split("`")[1]
        loc.append(missing)
        field = ".".join(str(part) for part in loc[1:])
        detail = f"`{field}` is required"
    elif reason.startswith("Object contains unknown field"):
        unknown = reason.split("`")[1]
        loc.append(unknown)
        field = ".".join(str(part) for part in loc[1:])
        detail = f"`{field}` is not a known field"
    else:
        detail = f"Invalid `{field}`: {reason}"
    return ApiError(422, detail, [ErrorItem(loc=loc, msg=reason)])


def _path_parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    path = path.removeprefix("$")
    token = ""
    i = 0
    while i < len(path):
        char = path[i]
        if char == ".":
            if token:
                parts.append(token)
            token = ""
        elif char == "[":
            if token:
                parts.append(token)
            token = ""
            end = path.index("]", i)
            inner = path[i + 1 : end]
            parts.append(int(inner) if inner.lstrip("-").isdigit() else inner.strip("'\""))
            i = end
        else:
            token += char
        i += 1
    if token:
        parts.append(token)
    return parts


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail, exc.errors, request=request)


# Domain exception -> status. A subclass answers its own entry if it has one, else its nearest base's.
DOMAIN_STATUS: dict[type[Exception], int] = {
    model_errors.ModelNotFound: 404,
    model_errors.PathNotFound: 404,
    model_errors.ModelExists: 409,
    model_errors.PathNotAllowed: 403,
    model_errors.BadModelRequest: 422,
    model_errors.NotApplicable: 400,
    model_errors.UnsupportedModel: 415,
    model_errors.ModelsUnavailable: 424,
    NotAModel: 415,
    MergeError: 400,
    ImageTooLarge: 413,
    NotAnImage: 415,
    TextNotStorable: 422,
}


def domain_status(exc: Exception) -> int | None:
    for kind in type(exc).__mro__:
        status = DOMAIN_STATUS.get(kind)
        if status is not None:
            return status
    return None


async def handle_domain_error(request: Request, exc: Exception) -> Response:
    status = domain_status(exc)
    if status is None:
        return await handle_uncaught(request, exc)
    detail = getattr(exc, "detail", None) or str(exc)
    loc = getattr(exc, "loc", None)
    errors = [ErrorItem(loc=loc, msg=getattr(exc, "msg", detail))] if loc else []
    return error_response(status, detail, errors, request=request)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"No route {request.url.path}"
    headers = exc.headers
    if exc.status_code == 405:
        detail = f"Method {request.method} is not allowed on {request.url.path}"
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return error_response(exc.status_code, str(detail), headers=headers, request=request)


def _allowed_methods(request: Request) -> str:
    """The methods of the resource the path names. Starlette's 405 lists only those of the first route that
    matched, and our resources declare one route per method on a shared path. Routes of another template that
    also match (`/images/{image_name}` for `/images/upload`) are not this resource."""
    matched: list[tuple[str, set[str]]] = []

    def walk(routes: list[BaseRoute], scope: dict, prefix: str) -> None:
        for route in routes:
            match, child = route.matches(scope)
            if match is Match.NONE:
                continue
            if isinstance(route, Mount):
                walk(route.routes, {**scope, **child}, prefix + route.path)
            elif isinstance(route, Route) and route.methods:
                matched.append((prefix + route.path, route.methods))

    root_path = request.scope.get("app_root_path", "")
    walk(
        request.app.router.routes,
        {"type": "http", "path": request.scope["path"], "root_path": root_path, "method": ""},
        "",
    )
    if not matched:
        return ""
    template = matched[0][0]
    return ", ".join(sorted({method for path, methods in matched if path == template for method in methods}))


async def handle_uncaught(request: Request, exc: Exception) -> Response:
    # The traceback goes to the log, never to the client.
    log.exception("uncaught error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "Internal server error; the server log has the details", request=request)


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    **dict.fromkeys(DOMAIN_STATUS, handle_domain_error),
    Exception: handle_uncaught,
}
