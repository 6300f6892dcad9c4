"""Scale-out on a real PostgreSQL with real processes (docs/api.md §Workers): two API-only servers and two
`imagegraph worker`s sharing one database and one root. The tests run in order on one set of processes; each
leaves them as it found them (two servers, two live workers, an empty queue)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from server.graph.standard import txt2img_graph
from tests.postgres import PostgresCluster
from tests.reliability.process import ServerProcess
from tests.scale.workers import WorkerProcess
from tests.ws.conftest import receive, send, synced

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
LEASE_S = 3.0
WAIT = 120.0


@dataclass
class Farm:
    database: str
    root: Path
    logs: Path
    servers: list[ServerProcess]
    workers: dict[str, WorkerProcess] = field(default_factory=dict)

    def start_worker(self, name: str) -> WorkerProcess:
        worker = WorkerProcess(self.database, self.root, name, self.logs / f"{name}.log", lease_s=LEASE_S)
        self.workers[name] = worker
        return worker

    def start_server(self) -> ServerProcess:
        return ServerProcess(self.root, self.logs / "servers.log", args=["--database", self.database, "--no-worker"])


@pytest.fixture(scope="module")
def farm(
    tmp_path_factory: pytest.TempPathFactory, postgres_cluster: PostgresCluster, tiny_model_files
) -> Iterator[Farm]:
    folder = tmp_path_factory.mktemp("farm")
    farm = Farm(postgres_cluster.fresh_database(), folder / "root", folder, servers=[])
    try:
        farm.servers = [farm.start_server(), farm.start_server()]
        imported = farm.servers[0].http.post(
            "/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])}
        )
        assert imported.status_code == 201, imported.text
        for name in ("w1", "w2"):
            farm.start_worker(name)
        wait_until(lambda: {w["name"] for w in live_workers(farm.servers[0])} == {"w1", "w2"}, "both workers")
        yield farm
    finally:
        for worker in farm.workers.values():
            worker.stop()
        for server in farm.servers:
            server.stop()


def wait_until(condition, what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def live_workers(server: ServerProcess) -> list[dict[str, Any]]:
    return [w for w in server.http.get("/api/v1/workers").json()["workers"] if w["state"] != "lost"]


def create(server: ServerProcess, **settings: Any) -> str:
    graph = txt2img_graph(
        MODEL, settings.pop("prompt", "a lighthouse"), **{"width": 64, "height": 64, "steps": 4, **settings}
    )
    created = server.http.post("/api/v1/sessions/", json=graph)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def invoke(server: ServerProcess, session_id: str) -> None:
    response = server.http.put(f"/api/v1/sessions/{session_id}/invoke")
    assert response.status_code == 202, response.text


def session(server: ServerProcess, session_id: str) -> dict[str, Any]:
    return server.http.get(f"/api/v1/sessions/{session_id}").json()


def all_images(server: ServerProcess) -> list[dict[str, Any]]:
    return server.http.get("/api/v1/images/", params={"limit": 100}).json()["items"]


class Listener:
    """A WebSocket client subscribed to every session, collecting events in a thread."""

    def __init__(self, server: ServerProcess) -> None:
        self._connection = connect(server.ws_url)
        self.ws: ClientConnection = self._connection.__enter__()
        send(self.ws, type="subscribe", sessions="*")
        synced(self.ws)
        self.events: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while True:
            try:
                self.events.append(receive(self.ws, timeout=600))
            except Exception as exc:
                self.error = exc
                return

    def of(self, kind: str, session_id: str | None = None) -> list[dict[str, Any]]:
        # A reader that stopped early (the server closed the connection) fails the wait at once, saying why.
        if self.error is not None and not self._closing:
            raise AssertionError(f"the WebSocket client stopped after {len(self.events)} events: {self.error!r}")
        return [e for e in list(self.events) if e["type"] == kind and session_id in (None, e.get("session_id"))]

    def close(self) -> None:
        self._closing = True
        self.ws.close()
        self._thread.join(timeout=5)


def test_eight_sessions_through_two_servers_run_on_both_workers_and_every_server_sees_them(farm: Farm) -> None:
    a, b = farm.servers
    listener = Listener(b)
    try:
        made_on_a = [create(a, seed=seed) for seed in range(4)]
        made_on_b = [create(b, seed=seed) for seed in range(4, 8)]
        for server, ids in ((a, made_on_a), (b, made_on_b)):
            for session_id in ids:
                invoke(server, session_id)
        everything = made_on_a + made_on_b
        wait_until(lambda: all(session(a, s)["status"] == "completed" for s in everything), "8 sessions to complete")

        finished = [session(a, s) for s in everything]
        assert finished == [session(b, s) for s in everything], "the two servers disagree about a session"
        assert {s["worker"] for s in finished} == {"w1", "w2"}, "one worker ran everything"
        assert all(s["attempts"] == 1 for s in finished)
        images = all_images(a)
        assert images == all_images(b)
        assert sorted(i["session_id"] for i in images) == sorted(everything), "not one image per session"

        # B's client heard A's sessions: progress, the image and the end, in one seq order without repeats.
        wait_until(lambda: len(listener.of("session_complete")) >= 8, "B's client to hear every session end")
        for session_id in made_on_a:
            assert listener.of("generator_progress", session_id)
            assert [e["status"] for e in listener.of("session_complete", session_id)] == ["completed"]
        created = [e["image"]["session_id"] for e in listener.of("image_created")]
        assert sorted(created) == sorted(everything)
        seqs = [e["seq"] for e in listener.events]
        assert seqs == sorted(set(seqs)), "events out of seq order, or repeated"
    finally:
        listener.close()


def test_a_client_reconnecting_to_the_other_server_replays_what_it_missed(farm: Farm) -> None:
    a, b = farm.servers
    with connect(a.ws_url) as ws:
        send(ws, type="subscribe", sessions="*")
        last = synced(ws)["seq"]
    session_id = create(a, seed=99)
    invoke(a, session_id)
    wait_until(lambda: session(a, session_id)["status"] == "completed", "the session to complete")
    with connect(b.ws_url) as ws:
        send(ws, type="subscribe", sessions=[session_id], since=last)
        replayed = []
        while not replayed or replayed[-1]["type"] != "session_complete":
            replayed.append(receive(ws, timeout=30))
    kinds = [e["type"] for e in replayed if e.get("session_id") == session_id or e["type"] == "image_created"]
    assert kinds[0] == "session_started" and "image_created" in kinds, kinds
    assert [e["seq"] for e in replayed] == sorted({e["seq"] for e in replayed})
    assert all(e["seq"] > last for e in replayed)


def test_cancel_on_one_server_stops_the_session_on_its_worker_before_the_next_step(farm: Farm) -> None:
    a, b = farm.servers
    listener = Listener(a)
    try:
        long = create(a, width=128, height=128, steps=200, seed=5)
        invoke(a, long)
        wait_until(lambda: len(listener.of("generator_progress", long)) >= 3, "the session to make progress")
        assert b.http.delete(f"/api/v1/sessions/{long}/invoke").status_code in (200, 202, 204)
        wait_until(lambda: session(b, long)["status"] == "canceled", "the cancel to land", timeout=30)
        steps = [e["step"] for e in listener.of("generator_progress", long)]
        assert max(steps) < 200, "ran to the end"
        assert not [i for i in all_images(a) if i["session_id"] == long]
        wait_until(lambda: all(w["state"] == "idle" for w in live_workers(a)), "both workers idle again")
    finally:
        listener.close()


def test_a_worker_killed_mid_session_loses_it_to_the_other_one_without_a_duplicate_image(farm: Farm) -> None:
    a, b = farm.servers
    listener = Listener(b)
    try:
        long = create(a, width=128, height=128, steps=60, seed=7)
        invoke(a, long)
        wait_until(lambda: len(listener.of("generator_progress", long)) >= 3, "the session to make progress")
        victim = session(a, long)["worker"]
        survivor = ({"w1", "w2"} - {victim}).pop()
        farm.workers[victim].kill()

        wait_until(lambda: session(a, long)["status"] == "completed", "the session to complete elsewhere")
        done = session(b, long)
        assert (done["worker"], done["attempts"]) == (survivor, 2)
        states = {w["name"]: w["state"] for w in a.http.get("/api/v1/workers").json()["workers"]}
        assert states[victim] == "lost"
        mine = [i["image_name"] for i in all_images(a) if i["session_id"] == long]
        assert len(mine) == 1, f"{len(mine)} images for one session"
        files = {p.name for p in (farm.root / "outputs" / "images").iterdir() if p.suffix == ".png"}
        assert files == {i["image_name"] for i in all_images(a)}, "an image file without a record, or the reverse"
    finally:
        listener.close()
        farm.workers[victim].stop()
        farm.start_worker(victim)
    wait_until(lambda: len(live_workers(a)) == 2, "the replacement worker")


def test_servers_and_workers_reconnect_after_postgresql_restarts(farm: Farm, postgres_cluster: PostgresCluster) -> None:
    a, b = farm.servers
    postgres_cluster.restart()
    wait_until(lambda: _answers(a, "/api/v1/queue"), "server A to reach the database again", timeout=60)
    listener = Listener(b)
    try:
        session_id = create(a, seed=11)
        invoke(a, session_id)
        wait_until(lambda: session(b, session_id)["status"] == "completed", "a session after the restart")
        wait_until(lambda: listener.of("session_complete", session_id), "B's client to hear it")
    finally:
        listener.close()


def _answers(server: ServerProcess, path: str) -> bool:
    try:
        return server.http.get(path).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_restarted_server_keeps_its_queue_and_a_new_worker_runs_it(farm: Farm) -> None:
    for worker in farm.workers.values():
        worker.stop()
    a = farm.servers[0]
    queued = [create(a, seed=seed) for seed in (21, 22)]
    for session_id in queued:
        invoke(a, session_id)
    a.stop()
    farm.servers[0] = a = farm.start_server()
    assert a.http.get("/api/v1/queue").json()["pending"] == queued
    farm.start_worker("w3")
    wait_until(lambda: all(session(a, s)["status"] == "completed" for s in queued), "the queue to run")
    assert {session(a, s)["worker"] for s in queued} == {"w3"}
