"""Token, Host and Origin checks, allowed and refused."""

import base64

import pytest
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.app import build_app


async def echo(websocket: WebSocket):
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def make_client(make_settings, **overrides) -> TestClient:
    settings = make_settings(**overrides)
    app = build_app(settings)
    app.router.routes.insert(0, WebSocketRoute("/ws-test", echo))
    return TestClient(app, base_url="http://127.0.0.1:9090", raise_server_exceptions=False)


@pytest.fixture
def token_client(make_settings):
    with make_client(make_settings, token="s3cret") as client:
        yield client


def test_token_required_on_api(token_client):
    response = token_client.get("/api/v1/app/version")
    assert response.status_code == 401
    assert "access token is required" in response.json()["detail"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_wrong_token_refused(token_client):
    response = token_client.get("/api/v1/app/version", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["detail"] == "The access token is wrong"


def test_right_token_accepted(token_client):
    response = token_client.get("/api/v1/app/version", headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 200


def test_query_token_accepted_for_reads_only(token_client):
    assert token_client.get("/api/v1/app/version?token=s3cret").status_code == 200
    assert token_client.post("/api/v1/app/version?token=s3cret").status_code == 401


def test_health_and_static_need_no_token(token_client):
    assert token_client.get("/health").json() == {"status": "ok"}
    assert token_client.get("/").status_code == 200
    assert token_client.get("/openapi.json").status_code == 401


def test_websocket_token(token_client):
    with pytest.raises(WebSocketDisconnect) as refused:
        with token_client.websocket_connect("ws://127.0.0.1:9090/ws-test"):
            pass
    assert refused.value.code == 1008
    with token_client.websocket_connect("ws://127.0.0.1:9090/ws-test?token=s3cret") as ws:
        assert ws.receive_text() == "hello"


def test_no_token_set_means_open(make_settings):
    with make_client(make_settings) as client:
        assert client.get("/api/v1/app/version").status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9090", "127.0.0.1.evil.example"])
def test_foreign_host_refused(make_settings, host):
    with make_client(make_settings) as client:
        response = client.get("/health", headers={"Host": host})
    assert response.status_code == 403
    assert "is not allowed" in response.json()["detail"]


@pytest.mark.parametrize("host", ["127.0.0.1:9090", "localhost:9090", "[::1]:9090", "localhost"])
def test_loopback_hosts_allowed(make_settings, host):
    with make_client(make_settings) as client:
        assert client.get("/health", headers={"Host": host}).status_code == 200


def test_configured_host_allowed(make_settings):
    with make_client(make_settings, allowed_hosts=["studio.lan"]) as client:
        assert client.get("/health", headers={"Host": "studio.lan:9090"}).status_code == 200


def test_cross_origin_write_refused_same_origin_allowed(make_settings):
    with make_client(make_settings) as client:
        refused = client.delete("/api/v1/app/version", headers={"Origin": "http://evil.example"})
        same = client.delete("/api/v1/app/version", headers={"Origin": "http://127.0.0.1:9090"})
        read = client.get("/api/v1/app/version", headers={"Origin": "http://evil.example"})
    assert refused.status_code == 403
    assert same.status_code == 405  # passed the check, then the route has no DELETE
    assert read.status_code == 200  # reads are guarded by the browser's same-origin policy


def test_cross_origin_websocket_refused(make_settings):
    with make_client(make_settings) as client:
        with pytest.raises(WebSocketDisconnect):
            with client.websocket_connect("ws://127.0.0.1:9090/ws-test", headers={"Origin": "http://evil.example"}):
                pass
        with client.websocket_connect("ws://127.0.0.1:9090/ws-test", headers={"Origin": "http://127.0.0.1:9090"}) as ws:
            assert ws.receive_text() == "hello"


def test_allowed_origin_setting(make_settings):
    with make_client(make_settings, allowed_origins=["http://ui.lan:3000"]) as client:
        with client.websocket_connect("ws://127.0.0.1:9090/ws-test", headers={"Origin": "http://ui.lan:3000"}) as ws:
            assert ws.receive_text() == "hello"


def basic(credentials: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def test_http_basic_carries_the_token_as_the_password(token_client):
    # A1111 clients send HTTP Basic: any user name, the token as the password (which may hold a colon).
    url = "/api/v1/app/version"
    assert token_client.get(url, headers=basic(b"me:s3cret")).status_code == 200
    assert token_client.get(url, headers=basic(b":s3cret")).status_code == 200
    assert (
        token_client.get(url, headers={"Authorization": "basic " + base64.b64encode(b"x:s3cret").decode()}).status_code
        == 200
    )
    wrong = token_client.get(url, headers=basic(b"s3cret:me"))
    assert (wrong.status_code, wrong.json()["detail"]) == (401, "The access token is wrong")
    with_colon = token_client.get(url, headers=basic(b"me:s3cret:more"))
    assert with_colon.status_code == 401


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic !!!not-base64!!!",
        # Valid base64 with a character outside its alphabet in the middle: refused, not decoded leniently.
        "Basic " + base64.b64encode(b"me:s3cret").decode()[:4] + "*" + base64.b64encode(b"me:s3cret").decode()[4:],
        # Decodes, but not to UTF-8 text.
        "Basic " + base64.b64encode(b"\xff\xfe:s3cret").decode(),
    ],
)
def test_malformed_basic_credentials_are_401_not_500(token_client, authorization):
    response = token_client.get("/api/v1/app/version", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert "access token is required" in response.json()["detail"]


def test_the_first_query_token_is_the_one_checked(token_client):
    assert token_client.get("/api/v1/app/version?token=s3cret&token=nope").status_code == 200
    assert token_client.get("/api/v1/app/version?token=nope&token=s3cret").status_code == 401


@pytest.mark.parametrize("overrides", [{"host": "0.0.0.0"}, {"host": "::"}, {"allowed_hosts": ["*"]}])
def test_any_host_when_listening_everywhere_or_allowed_hosts_is_a_star(make_settings, overrides):
    with make_client(make_settings, **overrides) as client:
        assert client.get("/health", headers={"Host": "studio.lan:9090"}).status_code == 200
