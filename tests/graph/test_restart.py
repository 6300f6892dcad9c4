"""Queued sessions survive the server being killed: after a restart they run, in order, and the session that
was running when the process died is marked failed with the reason."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from server.graph.executor import CRASH_REASON
from tests.graph.conftest import t2i_graph

WAIT = 120.0


class ServerProcess:
    def __init__(self, root: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IMAGEGRAPH_WATCH": "false"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--root", str(root), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.wait_until(lambda: self.http.get("/health").status_code == 200)

    def wait_until(self, condition, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.process.stderr.read().decode()
            time.sleep(0.05)
        raise AssertionError("timed out")

    def session(self, session_id: str) -> dict:
        return self.http.get(f"/api/v1/sessions/{session_id}").json()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)
        self.http.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.http.close()


def test_queue_survives_a_killed_server(tmp_path, tiny_model_files):
    root = tmp_path / "root"
    server = ServerProcess(root)
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
        # Killed in the middle of the long denoise: its progress so far is stored, the rest is queued.
        server.wait_until(lambda: "noise" in server.session(running)["executed"])
        assert server.http.get("/api/v1/queue").json() == {"running": running, "pending": queued}
    finally:
        server.kill()

    server = ServerProcess(root)
    try:
        server.wait_until(lambda: all(server.session(i)["status"] == "completed" for i in queued))
        crashed = server.session(running)
        assert crashed["status"] == "failed"
        assert crashed["errors"] == {"denoise": CRASH_REASON}
        assert "noise" in crashed["executed"]
        finished = [server.session(i) for i in queued]
        images = [
            server.http.get(f"/api/v1/images/{s['results']['decode']['image']['image_name']}").json() for s in finished
        ]
        assert images[0]["created_at"] < images[1]["created_at"]  # still first in, first out
        assert server.http.get("/api/v1/queue").json() == {"running": None, "pending": []}
    finally:
        server.stop()
