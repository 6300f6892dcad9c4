"""docs/api.md is the contract kept in the repository: every route the server serves and every event it sends
must be described there."""

from __future__ import annotations

import typing
from pathlib import Path

import msgspec
from starlette.routing import Mount, Route

from server.app import API_PREFIX, api_routes
from server.events import ServerEvent

DOCS = Path(__file__).resolve().parents[1] / "docs" / "api.md"
SERVER = Path(__file__).resolve().parents[1] / "server"


def doc_lines() -> list[str]:
    return DOCS.read_text(encoding="utf-8").splitlines()


def routes() -> list[tuple[str, str]]:
    found = []
    for route in api_routes():
        assert isinstance(route, Route) and not isinstance(route, Mount)
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, API_PREFIX + route.path))
    return found


def test_every_route_is_in_the_api_reference():
    lines = doc_lines()
    missing = []
    for method, path in routes():
        described = [line for line in lines if f"`{path}`" in line]
        if not any(method in line.split(f"`{path}`")[0] for line in described):
            missing.append(f"{method} {path}")
    assert not missing, f"routes missing from docs/api.md: {missing}"


def test_every_event_is_in_the_api_reference():
    text = DOCS.read_text(encoding="utf-8")
    tags = [msgspec.inspect.type_info(cls).tag for cls in typing.get_args(ServerEvent)]
    assert len(tags) >= 16
    assert not [tag for tag in tags if f"`{tag}`" not in text]


def test_the_code_points_at_the_reference_in_the_repository():
    outside = [
        str(path.relative_to(SERVER)) for path in SERVER.rglob("*.py") if "shared/API" in path.read_text("utf-8")
    ]
    assert not outside
