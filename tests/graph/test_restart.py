"""Queued sessions survive the server being killed: after a restart they run, in order, and the session that
was running when the process died is marked failed with the reason. A server stopped cleanly re-queues the
session it was running."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import build_app
from server.events import GeneratorProgress
from server.graph.executor import CRASH_REASON
from tests.conftest import BASE_URL
from tests.graph.conftest import Recorder, generation_app, t2i_graph
from tests.reliability.process import ServerProcess

WAIT = 120.0


def session_of(server: ServerProcess, session_id: str) -> dict:
    return server.http.get(f"/api/v1/sessions/{session_id}").json()


def stored_executed(root: Path, session_id: str) -> list[str]:
    """What the database file says (GET answers from memory for the running session)."""
    with sqlite3.connect(f"file:{root / 'databases' / 'imagegraph.db'}?mode=ro", uri=True) as db:
        row = db.execute("SELECT json_extract(data, '$.executed') FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return json.loads(row[0]) if row and row[0] else []


@pytest.mark.sqlite  # reads the SQLite file; a killed PostgreSQL worker's session: tests/scale/test_workers.py
def test_queue_survives_a_killed_server(tmp_path, tiny_model_files):
    root = tmp_path / "root"
    server = ServerProcess(root, tmp_path / "server.log")
    try:
        response = server.http.post("/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])})
        assert response.status_code == 201, response.text
        ids = []
        for graph in (t2i_graph(steps=1000, metadata=False), t2i_graph(seed=1, steps=2), t2i_graph(seed=2, steps=2)):
            created = server.http.post("/api/v1/sessions/", json=graph)
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
            assert server.http.put(f"/api/v1/sessions/{ids[-1]}/invoke").status_code == 202
        running, *queued = ids
        # Killed in the middle of the long denoise, once its progress so far is on disk (stored behind the
        # work, within a fraction of a second); the other two wait in the queue.
        server.wait_until(lambda: "noise" in stored_executed(root, running))
        assert server.http.get("/api/v1/queue").json() == {"running": running, "pending": queued}
    finally:
        server.kill()

    server = ServerProcess(root, tmp_path / "server.log")
    try:
        server.wait_until(lambda: all(session_of(server, i)["status"] == "completed" for i in queued))
        crashed = session_of(server, running)
        assert crashed["status"] == "failed"
        assert crashed["errors"] == {"denoise": CRASH_REASON}
        assert "noise" in crashed["executed"]
        finished = [session_of(server, i) for i in queued]
        images = [
            server.http.get(f"/api/v1/images/{s['results']['decode']['image']['image_name']}").json() for s in finished
        ]
        assert images[0]["created_at"] < images[1]["created_at"]  # still first in, first out
        assert server.http.get("/api/v1/queue").json() == {"running": None, "pending": []}
    finally:
        server.stop()


def test_a_server_stopped_cleanly_puts_its_running_session_back_in_the_queue(settings, tiny_model_files):
    with generation_app(settings, tiny_model_files) as (client, events):
        created = client.post("/api/v1/sessions/", json=t2i_graph(steps=1000, metadata=False)).json()
        client.put(f"/api/v1/sessions/{created['id']}/invoke")
        events.wait_for(lambda e: isinstance(e, GeneratorProgress) and e.step >= 2)
    # the app is stopped now (lifespan shutdown), mid-denoise
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        recorder = Recorder()
        hub = client.app.state.services.events

        def attach() -> None:
            # The executor may start the session before this test thread gets here: on the loop thread (where
            # events are published), listen from now on and take in what was already published.
            hub.add_listener(recorder)
            for event in hub.events_since(0) or []:
                recorder(event)

        client.portal.call(attach)
        # Not SessionStarted: on PostgreSQL the replay holds the first run's too. The session runs again.
        deadline = time.monotonic() + WAIT
        while (session := client.get(f"/api/v1/sessions/{created['id']}").json())["status"] == "queued":
            assert time.monotonic() < deadline, "the stopped session never ran again"
            time.sleep(0.02)
        assert session["status"] == "running" and session["errors"] == {}
        client.delete(f"/api/v1/sessions/{created['id']}/invoke")
        assert recorder.wait_finished(created["id"]).status == "canceled"
