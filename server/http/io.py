"""Request decoding and JSON responses with msgspec, and the `operation` decorator that ties a route to its
body, query and response types. Those same types feed the OpenAPI document (server/http/openapi.py)."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from server.graph.registry import struct_fields
from server.http.errors import ApiError, validation_error

JSON_BODY_LIMIT = 16 * 1024 * 1024
_encoder = msgspec.json.Encoder()


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(content, status_code=status, headers=headers)


@functools.cache
def _list_fields(query_type: type[msgspec.Struct]) -> frozenset[str]:
    # Cached: msgspec's type_info walks the whole type, about a millisecond a request.
    names = set()
    for field in struct_fields(query_type):
        types = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else (field.type,)
        if any(isinstance(t, msgspec.inspect.ListType) for t in types):
            names.add(field.name)
    return frozenset(names)


def decode_query(request: Request, query_type: type[msgspec.Struct]) -> Any:
    repeatable = _list_fields(query_type)
    params = request.query_params
    values: dict[str, Any] = {}
    for name in query_type.__struct_fields__:
        if name not in params:
            continue
        values[name] = params.getlist(name) if name in repeatable else params[name]
    try:
        return msgspec.convert(values, query_type, strict=False)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, "query") from None


async def decode_body(request: Request, body_type: Any) -> Any:
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > JSON_BODY_LIMIT:
        raise ApiError(413, f"Request body is larger than {JSON_BODY_LIMIT} bytes")
    raw = await request.body()
    if len(raw) > JSON_BODY_LIMIT:
        raise ApiError(413, f"Request body is larger than {JSON_BODY_LIMIT} bytes")
    if not raw.strip():
        raise ApiError(400, "Request body is required (JSON)")
    try:
        return msgspec.json.decode(raw, type=body_type)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, "body") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}") from None


class Operation(msgspec.Struct, frozen=True):
    """What a route takes and gives, for decoding and for the OpenAPI document."""

    summary: str
    tags: tuple[str, ...] = ()
    query: Any = None
    body: Any = None
    # status -> Struct type, a media type string for non-JSON bodies, or None for no body
    responses: dict[int, Any] = {}
    multipart_file: str | None = None
    path_params: dict[str, str] = {}
    # Path parameters that take only some values (a Literal type), so the document can list them.
    path_types: dict[str, Any] = {}


Endpoint = Callable[..., Awaitable[Response]]


def operation(
    summary: str,
    *,
    tags: tuple[str, ...] = (),
    query: Any = None,
    body: Any = None,
    responses: dict[int, Any] | None = None,
    multipart_file: str | None = None,
    path_params: dict[str, str] | None = None,
    path_types: dict[str, Any] | None = None,
) -> Callable[[Endpoint], Endpoint]:
    """Decorate an endpoint `async def f(request, *, query=..., body=...)`: the query and body are decoded
    and validated before it runs (400/413/422 otherwise), and the declaration documents it."""
    spec = Operation(
        summary=summary,
        tags=tags,
        query=query,
        body=body,
        responses=responses or {200: None},
        multipart_file=multipart_file,
        path_params=path_params or {},
        path_types=path_types or {},
    )

    def decorate(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def wrapper(request: Request) -> Response:
            kwargs: dict[str, Any] = {}
            if query is not None:
                kwargs["query"] = decode_query(request, query)
            if body is not None:
                kwargs["body"] = await decode_body(request, body)
            return await endpoint(request, **kwargs)

        wrapper.__operation__ = spec  # type: ignore[attr-defined]
        return wrapper

    return decorate
