"""Fixtures shared by every test: a temporary root, the app under TestClient, and a real uvicorn server."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.testclient import TestClient

from server.app import build_app
from server.config import Settings
from tests.postgres import PostgresCluster, start_cluster
from tests.reliability.process import databases

BASE_URL = "http://127.0.0.1:9090"
WS_BASE_URL = "ws://127.0.0.1:9090"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--database",
        choices=["sqlite", "postgresql"],
        default="sqlite",
        help="the engine every app under test uses: SQLite in its root, or a fresh database of a PostgreSQL "
        "cluster the run starts (tests/postgres.py)",
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for this test run, in a temp folder, on a free loopback port."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.remove()


def _touches_a_database(item: pytest.Item) -> bool:
    """Builds an app (through `database_url`), uses the cluster itself, or starts `imagegraph serve` processes
    (a module with a ServerProcess: tests/reliability/process.py, tests/browser/conftest.py)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    return bool({"database_url", "postgres_cluster"} & fixtures) or hasattr(
        getattr(item, "module", None), "ServerProcess"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With `--database postgresql`, the tests that never touch a database are left out: they ran, and would run
    the same, on the SQLite pass."""
    if config.getoption("--database") != "postgresql":
        return
    kept = [item for item in items if _touches_a_database(item)]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not _touches_a_database(item)])
        items[:] = kept


def _on_postgresql(request: pytest.FixtureRequest) -> bool:
    return request.config.getoption("--database") == "postgresql" and request.node.get_closest_marker("sqlite") is None


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> str:
    """ "" (SQLite in the root), or with `--database postgresql` a new database of the run's cluster."""
    if not _on_postgresql(request):
        return ""
    return request.getfixturevalue("postgres_cluster").fresh_database()


@pytest.fixture(scope="session", autouse=True)
def _server_process_databases(request: pytest.FixtureRequest) -> Iterator[None]:
    """`imagegraph serve` processes the tests start get a database of the run's cluster too."""
    if request.config.getoption("--database") == "postgresql":
        databases.fresh = request.getfixturevalue("postgres_cluster").fresh_database
    yield
    databases.fresh = None


@pytest.fixture(autouse=True)
def _sqlite_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    fresh = databases.fresh
    if request.node.get_closest_marker("sqlite") is not None:
        databases.fresh = None
    yield
    databases.fresh = fresh


@pytest.fixture
def make_settings(request: pytest.FixtureRequest, tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Settings on the temporary root and the run's database engine (the watcher off), with the test's own
    overrides: every app a test builds goes through here, so `--database` reaches it. Another `root` is another
    installation: on PostgreSQL it gets a database of its own."""
    default_root = str(tmp_path / "root")
    by_root = {default_root: database_url}

    def make(**overrides: Any) -> Settings:
        root = str(overrides.pop("root", default_root))
        if root not in by_root:
            by_root[root] = request.getfixturevalue("postgres_cluster").fresh_database() if database_url else ""
        return Settings(**{"root": root, "watch": False, "database": by_root[root], **overrides})

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Settings on an empty temporary root; the watcher is off unless a test turns it on."""
    return make_settings()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    # The base URL is a loopback Host, which the Host allow-list accepts (TestClient defaults to "testserver").
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as test_client:
        yield test_client


@dataclass
class LiveServer:
    url: str
    ws_url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def start_live_server(settings: Settings) -> LiveServer:
    """A real uvicorn on 127.0.0.1 with a socket bound first, so there is no port race."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = Settings(**{**{f: getattr(settings, f) for f in settings.__struct_fields__}, "port": port})
    config = uvicorn.Config(build_app(settings), log_level="warning", ws_ping_interval=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}", settings, server, thread)


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    live = start_live_server(settings)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def tiny_model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny random-weight SD-1.x model in each format, written once per test run (read-only: copy it
    into a root before a test changes it)."""
    from server.models.tiny import write_tiny_model

    folder = tmp_path_factory.mktemp("tiny-models")
    return {
        "diffusers": write_tiny_model(folder / "tiny", "diffusers"),
        "checkpoint": write_tiny_model(folder / "tiny.safetensors", "checkpoint"),
        "ckpt": write_tiny_model(folder / "tiny.ckpt", "ckpt"),
    }
