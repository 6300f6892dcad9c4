"""Helpers for WebSocket tests: reaching the live server's hub, a raw client that can refuse to read, and a live
server with the tiny model registered."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.sync.client import ClientConnection
from websockets.uri import parse_uri

from server.cli import make_server
from server.config import Settings
from server.events import Event
from server.ws.hub import EventHub
from tests.conftest import LiveServer, start_live_server

T = TypeVar("T")


def hub_of(live: LiveServer) -> EventHub:
    return live.server.config.app.state.services.events


def on_loop(live: LiveServer, fn: Callable[[], T]) -> T:
    """Run `fn` on the server's event loop thread and return its result (the hub is loop-confined)."""
    hub = hub_of(live)

    async def call() -> T:
        return fn()

    assert hub.loop is not None
    return asyncio.run_coroutine_threadsafe(call(), hub.loop).result(timeout=30)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll for a state change the server makes in its own time (not a timing assertion: the limit is generous)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def send(ws: ClientConnection, **message: Any) -> None:
    ws.send(json.dumps(message))


def receive(ws: ClientConnection, timeout: float = 10) -> dict[str, Any]:
    return json.loads(ws.recv(timeout=timeout))


def synced(ws: ClientConnection) -> dict[str, Any]:
    """Ping and read up to the pong: everything sent before it has been applied by the server (so this also
    asserts that no event was waiting)."""
    send(ws, type="ping")
    message = receive(ws)
    assert message["type"] == "pong", f"unexpected event before pong: {message}"
    return message


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RawClient:
    """A WebSocket client on a plain socket (websockets' sans-I/O protocol): it reads only when told to, so
    it can play a peer that stops reading, or one that never answers pings."""

    def __init__(self, url: str, receive_buffer: int | None = None, headers: dict[str, str] | None = None) -> None:
        uri = parse_uri(url)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Set before connecting so the advertised TCP window stays small.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(30)
        self.sock.connect((uri.host, uri.port))
        self.protocol = ClientProtocol(uri)
        request = self.protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        self.protocol.send_request(request)
        self._flush()
        self.messages: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.close_reason = ""
        self.response: Response | None = None
        while self.response is None:
            self._receive_some()
        if self.response.status_code != 101:
            raise ConnectionRefusedError(self.response.status_code)

    def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.sock.sendall(chunk)

    def _receive_some(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            self.protocol.receive_eof()
            return False
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self.response = event
            elif event.opcode == Opcode.TEXT:
                self.messages.append(json.loads(event.data))
            elif event.opcode == Opcode.CLOSE and self.protocol.close_rcvd is not None:
                self.close_code = self.protocol.close_rcvd.code
                self.close_reason = self.protocol.close_rcvd.reason
        self._flush()  # pongs and the close reply
        return True

    def send(self, message: dict[str, Any]) -> None:
        self.protocol.send_text(json.dumps(message).encode())
        self._flush()

    def read_until(self, condition: Callable[[RawClient], bool]) -> None:
        while not condition(self):
            if not self._receive_some():
                return

    def read_to_end(self) -> None:
        """Read until the server closes the connection."""
        while self._receive_some():
            pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_clients() -> Iterator[list[RawClient]]:
    clients: list[RawClient] = []
    yield clients
    for client in clients:
        client.close()


class Published:
    """Every event the hub publishes (a hub listener, called on the loop thread)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def snapshot(self) -> list[Event]:
        with self.lock:
            return list(self.events)


@pytest.fixture
def generation_server(settings: Settings, tiny_model_files) -> Iterator[tuple[LiveServer, httpx.Client, Published]]:
    live = start_live_server(settings)
    try:
        api = httpx.Client(base_url=live.url + "/api/v1", timeout=120)
        imported = api.post("/models/import", json={"location": str(tiny_model_files["diffusers"])})
        assert imported.status_code == 201, imported.text
        published = Published()
        hub_of(live).add_listener(published)
        yield live, api, published
        api.close()
    finally:
        live.stop()


def start_server_with_heartbeat(settings: Settings) -> LiveServer:
    """Like `start_live_server`, with the very server `imagegraph serve` runs (`cli.make_server`: its uvicorn
    configuration, keep-alive pings included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, "port": port})
    server = make_server(settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), what="server start")
    assert server.started
    return LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", settings, server, thread)
