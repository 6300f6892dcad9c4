"""Every error is JSON `{"detail": ...}` with the right status, including unknown routes and crashes."""

import msgspec
import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from server.app import build_app
from server.http.io import json_response, operation


class Widget(msgspec.Struct):
    name: str
    size: int = msgspec.field(default=1)


class WidgetQuery(msgspec.Struct):
    limit: int = 50
    tags: list[str] = []


@operation("test", query=WidgetQuery, body=Widget, responses={201: Widget})
async def make_widget(request, query: WidgetQuery, body: Widget):
    return json_response({"widget": body, "tags": query.tags, "limit": query.limit}, status=201)


async def explode(request):
    raise RuntimeError("secret internals")


@pytest.fixture
def app_client(settings):
    app = build_app(settings)
    app.router.routes.insert(0, Route("/test/widget", make_widget, methods=["POST"]))
    app.router.routes.insert(0, Route("/test/explode", explode, methods=["GET"]))
    with TestClient(app, base_url="http://127.0.0.1:9090", raise_server_exceptions=False) as client:
        yield client


def test_unknown_api_route_is_json_404(client):
    response = client.get("/api/v1/nothing/here")
    assert response.status_code == 404
    assert response.json() == {"detail": "No route /api/v1/nothing/here"}


def test_unknown_static_file_is_json_404(client):
    response = client.get("/no-such-file.js")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_wrong_method_is_json_405(client):
    response = client.delete("/api/v1/app/version")
    assert response.status_code == 405
    assert response.json()["detail"] == "Method DELETE is not allowed on /api/v1/app/version"


def test_uncaught_exception_is_500_without_traceback(app_client, caplog):
    response = app_client.get("/test/explode")
    assert response.status_code == 500
    assert "secret internals" not in response.text
    assert response.json()["detail"].startswith("Internal server error")
    assert any("secret internals" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_body_and_query_are_decoded(app_client):
    response = app_client.post("/test/widget?tags=a&tags=b&limit=5", json={"name": "w", "size": 3})
    assert response.status_code == 201
    assert response.json() == {"widget": {"name": "w", "size": 3}, "tags": ["a", "b"], "limit": 5}


def test_malformed_json_is_400(app_client):
    response = app_client.post("/test/widget", content=b"{not json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("Request body is not valid JSON")


def test_missing_body_is_400(app_client):
    response = app_client.post("/test/widget")
    assert response.status_code == 400


def test_validation_error_names_the_field(app_client):
    response = app_client.post("/test/widget", json={"name": "w", "size": "big"})
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "Invalid `size`: Expected `int`, got `str`"
    assert body["errors"] == [{"loc": ["body", "size"], "msg": "Expected `int`, got `str`"}]


def test_missing_field_is_named(app_client):
    response = app_client.post("/test/widget", json={"size": 2})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "name"]
    assert response.json()["detail"] == "`name` is required"


def test_bad_query_value_is_422_in_query(app_client):
    response = app_client.post("/test/widget?limit=lots", json={"name": "w"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "limit"]


def test_a_nul_character_is_422_naming_the_field_and_stores_nothing_on_either_engine(client):
    """PostgreSQL's text cannot hold U+0000 (SQLite's can): names refuse it on both engines, and a NUL in an id
    is a 422, never a 500."""
    workflow = {"name": "a\x00b", "graph": {"nodes": {}, "edges": []}}
    refused = client.post("/api/v1/workflows/", json=workflow)
    assert refused.status_code == 422 and "`name`" in refused.json()["detail"]
    assert client.post("/api/v1/boards/", json={"board_name": "x\x00"}).status_code == 422
    assert client.get("/api/v1/workflows/", params={"q": "\x00"}).status_code == 422
    assert client.get("/api/v1/workflows/").json()["total"] == 0
    assert client.get("/api/v1/boards/", params={"all": "true"}).json() == []
    listed = client.get("/api/v1/images/", params={"board_id": "b\x00"})
    assert listed.status_code == 422 or listed.json()["items"] == [], listed.text
    for answer in (client.get("/api/v1/boards/b%00"), client.get("/api/v1/sessions/s%00")):
        assert answer.status_code in (404, 422) and "detail" in answer.json(), answer.text
    assert client.get("/health").status_code == 200
