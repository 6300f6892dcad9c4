"""Starting and stopping `imagegraph serve` as a person does: one server per root, a clean Ctrl-C that keeps the
queue in order, and one line (exit code 2) for anything that stops it from starting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import httpx
import pytest
from websockets.sync.client import connect

from server.graph.standard import txt2img_graph
from tests.reliability.process import REPO, ServerProcess, free_port
from tests.ws.conftest import receive, send, synced

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`imagegraph serve` expected to stop by itself (it could not start)."""
    environment = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEGRAPH_")}
    environment.update({"HF_HUB_OFFLINE": "1", "IMAGEGRAPH_WATCH": "false", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.strip()


def queue_sessions(server: ServerProcess, count: int, **kwargs: object) -> list[str]:
    ids = []
    for seed in range(count):
        graph = txt2img_graph(MODEL, "a lighthouse", seed=seed, **kwargs)
        created = server.http.post("/api/v1/sessions/", json=graph)
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    for session_id in ids:
        assert server.http.put(f"/api/v1/sessions/{session_id}/invoke").status_code == 202
    return ids


def statuses(server: ServerProcess, ids: list[str]) -> list[str]:
    return [server.http.get(f"/api/v1/sessions/{session_id}").json()["status"] for session_id in ids]


@pytest.mark.sqlite  # one server per root is SQLite's rule; on a shared database many serve one root
def test_a_second_server_on_the_same_root_is_refused_and_changes_nothing(tmp_path, tiny_model_files):
    root = tmp_path / "root"
    with ServerProcess(root, tmp_path / "server.log") as first:
        assert first.http.post(
            "/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])}
        ).is_success
        with connect(first.ws_url) as ws:
            send(ws, type="subscribe", sessions="*")
            synced(ws)
            running, *queued = queue_sessions(first, 3, width=128, height=128, steps=20)
            while not ((event := receive(ws, timeout=120))["type"] == "generator_progress" and event["step"] >= 2):
                pass
            before = first.http.get("/api/v1/queue").json()
            assert before == {"running": running, "pending": queued}

            for port in (free_port(), first.port):  # another port, then the same one
                line = one_line(serve("--root", str(root), "--port", str(port)))
                assert f"pid {first.pid}" in line and f":{first.port}" in line, line

            # The first server's queue and sessions are as they were (or moved on by themselves): nothing was
            # marked failed, nothing re-queued or dropped.
            pending = first.http.get("/api/v1/queue").json()["pending"]
            assert pending == queued[len(queued) - len(pending) :]
            assert not {"failed", "canceled", "pending"} & set(statuses(first, [running, *queued]))
            completed = 0
            while completed < 3:
                event = receive(ws, timeout=120)
                if event["type"] == "session_complete":
                    assert event["status"] == "completed", event
                    completed += 1
        assert statuses(first, [running, *queued]) == ["completed"] * 3
        assert "was running when the server stopped" not in first.log_text()


def test_a_port_in_use_stops_the_server_before_it_touches_a_new_root(tmp_path):
    with ServerProcess(tmp_path / "root", tmp_path / "server.log") as first:
        fresh = tmp_path / "fresh"
        line = one_line(serve("--root", str(fresh), "--port", str(first.port)))
        assert line == f"imagegraph: cannot listen on http://127.0.0.1:{first.port}: address already in use"
        assert not fresh.exists()


def test_ctrl_c_stops_cleanly_and_the_interrupted_session_runs_first_after_restart(tmp_path, tiny_model_files):
    root, log = tmp_path / "root", tmp_path / "server.log"
    with ServerProcess(root, log) as server:
        assert server.http.post(
            "/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])}
        ).is_success
        with connect(server.ws_url) as ws:
            send(ws, type="subscribe", sessions="*")
            synced(ws)
            ids = queue_sessions(server, 3, width=128, height=128, steps=30)
            while not ((event := receive(ws, timeout=120))["type"] == "generator_progress" and event["step"] >= 3):
                pass
            server.process.send_signal(signal.SIGINT)
            assert server.process.wait(timeout=60) == 0
    text = log.read_text()
    assert "Traceback" not in text and "CancelledError" not in text and "KeyboardInterrupt" not in text
    (summary,) = [line for line in text.splitlines() if "stopping:" in line]
    assert f"stopping: session {ids[0]} interrupted at step " in summary, summary
    assert summary.endswith("/30, 2 queued; they run first at the next start"), summary

    with ServerProcess(root, log) as server:
        queue = server.http.get("/api/v1/queue").json()
        # In the order they were queued, the interrupted one first (it may already be running again).
        assert [queue["running"], *queue["pending"]] in (ids, [None, *ids])
        server.wait_until(lambda: statuses(server, ids) == ["completed"] * 3, what="the sessions to complete")
        started = [s["updated_at"] for s in (server.http.get(f"/api/v1/sessions/{i}").json() for i in ids)]
        assert started == sorted(started)  # finished in queue order


def test_a_root_that_is_a_file_stops_with_one_line(tmp_path):
    not_a_folder = tmp_path / "root"
    not_a_folder.write_text("oops")
    line = one_line(serve("--root", str(not_a_folder), "--port", str(free_port())))
    assert line == f"imagegraph: bad setting `root`: {not_a_folder} is a file, not a folder"


def test_the_clients_imagegraph_server_variable_does_not_break_serve(tmp_path):
    env = {"IMAGEGRAPH_SERVER": "http://127.0.0.1:9191"}
    with ServerProcess(tmp_path / "root", tmp_path / "server.log", env=env) as server:
        assert server.http.get("/health").json() == {"status": "ok"}
    # A real typo is still caught.
    line = one_line(serve("--root", str(tmp_path / "other"), env={"IMAGEGRAPH_PROT": "9191"}))
    assert line == "imagegraph: unknown setting `prot` (from environment)"


def test_a_stopped_server_releases_its_root(tmp_path):
    root = tmp_path / "root"
    with ServerProcess(root, tmp_path / "a.log"):
        pass
    with ServerProcess(root, tmp_path / "b.log") as again:
        assert httpx.get(f"{again.url}/health").status_code == 200


def test_generate_follows_its_images_through_a_server_restart(tmp_path, tiny_model_files):
    """A restart loses the server's event history: the client catches up over REST and every image still gets
    its bar and its file."""
    root, log, out = tmp_path / "root", tmp_path / "server.log", tmp_path / "out"
    server = ServerProcess(root, log)
    port = server.port
    try:
        assert server.http.post(
            "/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])}
        ).is_success
        env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEGRAPH_")}
        command = [
            sys.executable, "-m", "server", "generate", "a fox", "--width", "64", "--height", "64", "--steps", "40",
            "--count", "3", "--seed", "9", "--server", server.url, "--out", str(out),
        ]  # fmt: skip
        client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        with connect(server.ws_url) as ws:
            send(ws, type="subscribe", sessions="*")
            synced(ws)
            while not ((event := receive(ws, timeout=120))["type"] == "generator_progress" and event["step"] >= 5):
                pass
        server.process.send_signal(signal.SIGINT)
        assert server.process.wait(timeout=60) == 0
        server.http.close()
        server = ServerProcess(root, log, port=port)
        stdout, stderr = client.communicate(timeout=300)
    finally:
        server.stop()
    assert client.returncode == 0, stderr
    assert len(stdout.splitlines()) == 3
    bars = stderr.replace("\r", "\n")
    for index in (1, 2, 3):
        assert f"image {index}/3 (seed {8 + index}): 100%" in bars, stderr
    assert "reconnected to" in stderr
