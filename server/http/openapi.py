"""The OpenAPI 3.1 document, built from the routes' `operation` declarations and msgspec's JSON Schema."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Mount, Route

from server import __version__
from server.http.errors import ErrorBody
from server.http.io import Operation

REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::[a-z]+)?}")
_STATUS_TEXT = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    304: "Not Modified",
    400: "Malformed request",
    401: "Missing or wrong access token",
    403: "Forbidden (Host or Origin not allowed)",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Validation failed",
    424: "A dependency failed",
}


def _walk(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, Route]]:
    found = []
    for route in routes:
        if isinstance(route, Mount):
            found += _walk(list(route.routes or []), prefix + route.path)
        elif isinstance(route, Route):
            found.append((prefix + route.path, route))
    return found


def build_openapi(routes: list[BaseRoute], extra_types: tuple[Any, ...] = ()) -> dict[str, Any]:
    """`extra_types` are published as components even when no route names them (e.g. WebSocket events)."""
    types: list[Any] = [ErrorBody, *extra_types]
    operations: list[tuple[str, str, Operation, Route]] = []
    for path, route in _walk(routes):
        spec: Operation | None = getattr(route.endpoint, "__operation__", None)
        if spec is None:
            continue
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            operations.append((path, method.lower(), spec, route))
        if spec.body is not None:
            types.append(spec.body)
        types += [t for t in spec.responses.values() if t is not None and not isinstance(t, str)]

    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = dict(zip(map(_type_key, types), schemas, strict=True))

    paths: dict[str, dict[str, Any]] = {}
    for path, method, spec, route in operations:
        openapi_path = _PATH_PARAM.sub(r"{\1}", path)
        op: dict[str, Any] = {
            "operationId": f"{route.name}_{method}",
            "summary": spec.summary,
            "tags": list(spec.tags),
            "parameters": _parameters(openapi_path, spec),
            "responses": {},
        }
        if spec.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[_type_key(spec.body)]}},
            }
        elif spec.multipart_file:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": [spec.multipart_file],
                            "properties": {spec.multipart_file: {"type": "string", "format": "binary"}},
                        }
                    }
                },
            }
        responses = dict(spec.responses)
        if spec.body is not None or spec.multipart_file:
            responses.setdefault(400, None)
            responses.setdefault(413, None)
        if spec.body is not None or spec.query is not None:
            responses.setdefault(422, None)
        for status in sorted(responses):
            op["responses"][str(status)] = _response(status, responses[status], schema_of)
        paths.setdefault(openapi_path, {})[method] = op

    return {
        "openapi": "3.1.0",
        "info": {"title": "imagegraph", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _type_key(t: Any) -> str:
    return repr(t)


def _response(status: int, kind: Any, schema_of: dict[str, Any]) -> dict[str, Any]:
    description = _STATUS_TEXT.get(status, "Response")
    if status in (204, 304):
        return {"description": description}
    if isinstance(kind, str):
        return {"description": description, "content": {kind: {"schema": {"type": "string", "format": "binary"}}}}
    if kind is None:
        if status >= 400:
            return {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": REF.format(name="ErrorBody")}}},
            }
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema_of[_type_key(kind)]}}}


def _parameters(path: str, spec: Operation) -> list[dict[str, Any]]:
    params = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": msgspec.json.schema(spec.path_types[name]) if name in spec.path_types else {"type": "string"},
            **({"description": spec.path_params[name]} if name in spec.path_params else {}),
        }
        for name in _PATH_PARAM.findall(path)
    ]
    if spec.query is not None:
        (query_schema,), components = msgspec.json.schema_components([spec.query], ref_template=REF)
        name = query_schema["$ref"].rsplit("/", 1)[-1]
        struct_schema = components[name]
        required = set(struct_schema.get("required", []))
        for field, schema in struct_schema.get("properties", {}).items():
            schema = _inline(schema, components)
            param: dict[str, Any] = {"name": field, "in": "query", "required": field in required, "schema": schema}
            if schema.get("type") == "array":
                param["style"] = "form"
                param["explode"] = True
            params.append(param)
    return params


def _inline(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """Query parameters can't point into components of a sub-document; inline the (small) enums they use."""
    if "$ref" in schema:
        return _inline(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    out = dict(schema)
    for key in ("anyOf", "oneOf"):
        if key in out:
            out[key] = [_inline(s, components) for s in out[key]]
    if "items" in out:
        out["items"] = _inline(out["items"], components)
    return out
