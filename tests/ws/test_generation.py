"""Generation watched over `/ws` on a real uvicorn with the tiny model: the events of a run in order, a reconnect
mid-run, per-session routing, a client that never reads; and `imagegraph generate` as a user runs it."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from websockets.sync.client import ClientConnection, connect

from server.config import Settings
from server.events import Event, GeneratorProgress, ProgressImage
from server.graph.standard import txt2img_graph
from tests.conftest import LiveServer, start_live_server
from tests.ws.conftest import RawClient, free_port, hub_of, on_loop, receive, send, synced, wait_until

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
STEPS = 8


def create_session(api: httpx.Client, seed: int = 1, steps: int = STEPS) -> str:
    graph = txt2img_graph(MODEL, "a lighthouse at dusk", seed=seed, width=64, height=64, steps=steps)
    created = api.post("/sessions/", json=graph)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def read_until_complete(ws: ClientConnection, session_id: str) -> list[dict[str, Any]]:
    events = []
    while True:
        event = receive(ws, timeout=120)
        events.append(event)
        if event["type"] == "session_complete" and event["session_id"] == session_id:
            return events


def test_a_run_arrives_in_order_with_consecutive_seqs_and_every_step(generation_server):
    live, api, published = generation_server
    session_id = create_session(api)
    with connect(live.ws_url + "/ws") as ws:
        send(ws, type="subscribe", sessions="*")
        start = synced(ws)["seq"]
        assert api.put(f"/sessions/{session_id}/invoke").status_code == 202
        got = read_until_complete(ws, session_id)

    seqs = [event["seq"] for event in got]
    assert seqs == list(range(start + 1, start + 1 + len(got)))  # consecutive: nothing skipped, nothing twice
    # Exactly what the hub published, in its order.
    assert [(e.seq, e.__struct_config__.tag) for e in published.snapshot() if start < e.seq <= seqs[-1]] == [
        (event["seq"], event["type"]) for event in got
    ]
    ours = [event for event in got if event.get("session_id") == session_id]
    assert ours[0]["type"] == "session_started"
    assert ours[-1] == {**ours[-1], "type": "session_complete", "status": "completed"}
    progress = [event for event in ours if event["type"] == "generator_progress"]
    assert [event["step"] for event in progress] == list(range(1, STEPS + 1))
    assert {event["total_steps"] for event in progress} == {STEPS}
    assert progress[-1]["progress_image"]["dataURL"].startswith("data:image/")
    # Every node starts before it completes; the image is announced before the session completes.
    started = [e["source_node_id"] for e in ours if e["type"] == "invocation_started"]
    completed = [e["source_node_id"] for e in ours if e["type"] == "invocation_complete"]
    assert sorted(started) == sorted(completed) == sorted(["model", "pos", "neg", "noise", "denoise", "decode", "meta"])
    for node in started:
        kinds = [e["type"] for e in ours if e.get("source_node_id") == node and e["type"].startswith("invocation")]
        assert kinds == ["invocation_started", "invocation_complete"]
    (created,) = [event for event in got if event["type"] == "image_created"]
    decode = next(e for e in ours if e["type"] == "invocation_complete" and e["source_node_id"] == "decode")
    assert created["image"]["session_id"] == session_id
    assert created["image"]["image_name"] == decode["result"]["image"]["image_name"]
    assert got.index(created) < got.index(ours[-1])


def test_a_client_that_drops_mid_run_gets_exactly_the_missed_events_on_reconnect(generation_server):
    live, api, published = generation_server
    session_id = create_session(api, steps=24)
    url = live.ws_url + "/ws"
    with connect(url) as ws:
        send(ws, type="subscribe", sessions=[session_id])
        start = synced(ws)["seq"]
        assert api.put(f"/sessions/{session_id}/invoke").status_code == 202
        before = []
        while not (before and before[-1]["type"] == "generator_progress" and before[-1]["step"] == 3):
            before.append(receive(ws, timeout=120))
    with connect(url) as ws:  # the run went on meanwhile
        send(ws, type="subscribe", sessions=[session_id], since=before[-1]["seq"])
        after = read_until_complete(ws, session_id)

    covered = [
        e.seq
        for e in published.snapshot()
        if start < e.seq <= after[-1]["seq"] and getattr(e, "session_id", None) in (None, session_id)
    ]
    assert [event["seq"] for event in before + after] == covered
    steps = [event["step"] for event in before + after if event["type"] == "generator_progress"]
    assert steps == list(range(1, 25))


def test_two_clients_see_only_their_own_session_and_both_see_every_image(generation_server):
    live, api, _ = generation_server
    first, second = create_session(api, seed=1), create_session(api, seed=2)
    with connect(live.ws_url + "/ws") as a, connect(live.ws_url + "/ws") as b:
        send(a, type="subscribe", sessions=[first])
        send(b, type="subscribe", sessions=[second])
        synced(a), synced(b)
        for session_id in (first, second):
            assert api.put(f"/sessions/{session_id}/invoke").status_code == 202
        got_b = read_until_complete(b, second)  # the second runs after the first
        got_a = read_until_complete(a, first)
        send(a, type="ping")
        while (event := receive(a))["type"] != "pong":
            got_a.append(event)

    for got, mine in ((got_a, first), (got_b, second)):
        sessions = {event["session_id"] for event in got if "session_id" in event}
        assert sessions == {mine}
        images = [event["image"]["session_id"] for event in got if event["type"] == "image_created"]
        assert images == [first, second], f"client of {mine} saw images of {images}"


def test_a_client_that_never_reads_neither_holds_up_generation_nor_grows_its_queue(settings, tiny_model_files):
    live = start_live_server(Settings(**{**_fields(settings), "ws_client_queue": 16}))
    stalled = None
    try:
        api = httpx.Client(base_url=live.url + "/api/v1", timeout=120)
        assert api.post("/models/import", json={"location": str(tiny_model_files["diffusers"])}).status_code == 201
        hub = hub_of(live)
        stalled = RawClient(live.ws_url + "/ws", receive_buffer=4096)
        stalled.send({"type": "subscribe", "sessions": "*"})
        stalled.send({"type": "ping"})
        stalled.read_until(lambda c: any(m["type"] == "pong" for m in c.messages))
        (subscriber,) = hub.subscribers
        queued: list[int] = []
        hub.add_listener(lambda event: queued.append(subscriber.queued))
        fill_buffers(live, subscriber)

        # Three runs while it reads nothing; a client that keeps up watches them.
        sessions = [create_session(api, seed=seed, steps=16) for seed in (1, 2, 3)]
        with connect(live.ws_url + "/ws") as watcher:
            send(watcher, type="subscribe", sessions="*")
            synced(watcher)
            for session_id in sessions:
                assert api.put(f"/sessions/{session_id}/invoke").status_code == 202
            got = read_until_complete(watcher, sessions[-1])
        statuses = [e["status"] for e in got if e["type"] == "session_complete"]
        assert statuses == ["completed"] * 3
        steps = [e["step"] for e in got if e["type"] == "generator_progress"]
        assert steps == list(range(1, 17)) * 3  # the watcher missed nothing
        assert max(queued) <= 16  # what the stalled client holds on the server stays bounded...
        assert subscriber.close_code == 1013  # ...and once it cannot keep even that, it is let go
        assert subscriber not in hub.subscribers and subscriber.queued == 0
    finally:
        if stalled is not None:
            stalled.close()
        live.stop()


def fill_buffers(live: LiveServer, subscriber) -> None:
    """Send progress (of distinct nodes, so none is coalesced away) until every buffer between the server and a
    client that does not read is full: its frames then stay queued on the server."""
    preview = ProgressImage(width=32, height=32, dataURL="data:image/webp;base64," + "A" * 4000)
    hub = hub_of(live)
    for batch in range(5000):
        if subscriber.queued >= 10:  # the last batch is still waiting: confirm it is stuck, not just late
            time.sleep(0.2)
            if subscriber.queued >= 10:
                return
        events = [
            GeneratorProgress(session_id="filler", node_id=f"n{batch}-{i}", source_node_id="n", step=1, total_steps=1,
                              progress_image=preview)
            for i in range(10)
        ]  # fmt: skip
        on_loop(live, lambda events=events: [hub.emit(event) for event in events])
    raise AssertionError("the client's buffers never filled")


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


# --- imagegraph generate, run as a user runs it --------------------------------------------------------------


def imagegraph(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "server", "generate", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMAGEGRAPH_")}
    return {**env, "HF_HUB_OFFLINE": "1"}


def test_generate_writes_pngs_and_prints_their_paths(generation_server, tmp_path):
    live, api, _ = generation_server
    out = tmp_path / "out"
    result = imagegraph(
        "a red fox in snow", "--width", "64", "--height", "64", "--steps", "4", "--seed", "7", "--count", "2",
        "--out", str(out), "--server", live.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2 and all(path.parent == out for path in paths)
    seeds = []
    for path in paths:
        image = Image.open(io.BytesIO(path.read_bytes()))
        assert image.format == "PNG" and image.size == (64, 64)
        metadata = json.loads(image.text["invokeai_metadata"])
        assert metadata["positive_prompt"] == "a red fox in snow" and metadata["steps"] == 4
        seeds.append(metadata["seed"])
        # The same bytes the server keeps.
        assert api.get(f"/images/{path.name}/full").content == path.read_bytes()
    assert seeds == [7, 8]
    assert "image 1/2 (seed 7)" in result.stderr and "4/4" in result.stderr  # the progress bars


def test_generate_with_the_server_down_says_so_in_one_line(tmp_path):
    out = tmp_path / "out"
    result = imagegraph("a fox", "--server", f"http://127.0.0.1:{free_port()}", "--out", str(out))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "cannot reach the server" in result.stderr and "imagegraph serve" in result.stderr
    assert not out.exists()


def test_generate_with_an_unknown_model_says_so_in_one_line(generation_server, tmp_path):
    live, api, _ = generation_server
    result = imagegraph("a fox", "--model", "nope", "--server", live.url, "--out", str(tmp_path / "out"))
    assert result.returncode == 1
    assert result.stderr.strip() == "imagegraph: the server has no main model named 'nope' (available: tiny)"
    assert api.get("/sessions/").json()["total"] == 0  # nothing was created


def test_generate_without_the_token_says_how_to_pass_it(settings, tmp_path):
    live = start_live_server(Settings(**{**_fields(settings), "token": "s3cret"}))
    try:
        result = imagegraph("a fox", "--server", live.url, "--out", str(tmp_path / "out"))
    finally:
        live.stop()
    assert result.returncode == 1
    assert "--token" in result.stderr and result.stderr.count("\n") == 1


def test_ctrl_c_cancels_the_session_on_the_server(generation_server, tmp_path):
    live, api, published = generation_server
    command = [
        sys.executable, "-m", "server", "generate", "a slow fox", "--width", "64", "--height", "64",
        "--steps", "1000", "--server", live.url, "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        wait_until(
            lambda: any(e.__struct_config__.tag == "generator_progress" for e in published.snapshot()),
            timeout=120,
            what="the run to start",
        )
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "canceled 1 session" in stderr
    (session,) = api.get("/sessions/").json()["items"]
    wait_until(lambda: api.get(f"/sessions/{session['id']}").json()["status"] == "canceled", what="the cancel")
    assert list((tmp_path / "out").iterdir()) == []


def test_generate_resumes_with_since_when_the_server_drops_it(generation_server, tmp_path):
    live, _, _ = generation_server
    hub = hub_of(live)
    dropped = []

    def drop_everyone_once(event: Event) -> None:
        # Mid-run, as if every client had fallen behind: the server closes them with 1013.
        if not dropped and isinstance(event, GeneratorProgress) and event.step == 3:
            for subscriber in hub.subscribers:
                hub.disconnect(subscriber)
                subscriber.fail(1013, "test: too slow")
                dropped.append(subscriber)

    hub.add_listener(drop_everyone_once)
    out = tmp_path / "out"
    result = imagegraph(
        "a fox", "--width", "64", "--height", "64", "--steps", "12", "--seed", "1", "--server", live.url,
        "--out", str(out),
    )  # fmt: skip
    assert dropped, "the run never reached step 3"
    assert result.returncode == 0, result.stderr
    (path,) = [Path(line) for line in result.stdout.splitlines()]
    assert Image.open(path).size == (64, 64)
    assert "12/12" in result.stderr  # the bar saw the steps it missed while reconnecting
    # It said what it was doing, on stderr only (stdout holds the paths).
    assert "imagegraph: lost the connection to" in result.stderr and "reconnecting in" in result.stderr
    assert "imagegraph: reconnected to" in result.stderr


def test_generate_fills_the_bar_when_the_steps_come_from_the_cache(generation_server, tmp_path):
    live, _, _ = generation_server
    args = ("a fox", "--width", "64", "--height", "64", "--steps", "6", "--seed", "3", "--server", live.url)
    first = imagegraph(*args, "--out", str(tmp_path / "first"))
    assert first.returncode == 0, first.stderr
    # Same settings again: the denoise output is reused, so no step is reported; the bar still ends full.
    again = imagegraph(*args, "--out", str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    last = again.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "image 1/1 (seed 3): 100%" in last and "6/6" in last, again.stderr


def test_generate_cancels_what_it_queued_when_it_gives_up(generation_server, tmp_path):
    live, api, published = generation_server
    command = [
        sys.executable, "-m", "server", "generate", "a slow fox", "--width", "64", "--height", "64",
        "--steps", "300", "--count", "3", "--seed", "5", "--server", live.url, "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:

        def started() -> list[str]:
            return [e.session_id for e in published.snapshot() if e.__struct_config__.tag == "session_started"]

        wait_until(lambda: len(started()) >= 2, timeout=180, what="the second image to start")
        # Someone cancels the second image (from the web page, say): generate gives up on the run.
        assert api.delete(f"/sessions/{started()[1]}/invoke").status_code == 202
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    assert "canceled" in stderr.splitlines()[-2] and "(session" in stderr.splitlines()[-2]
    assert stderr.splitlines()[-1] == "imagegraph: canceled 1 queued session(s) on the server"
    sessions = {s["id"]: s["status"] for s in api.get("/sessions/").json()["items"]}
    assert sorted(sessions.values()) == ["canceled", "canceled", "completed"]
    assert len(stdout.splitlines()) == 1  # the first image was written


def test_model_changes_reach_every_client(live_server, tiny_model_files):
    api = httpx.Client(base_url=live_server.url + "/api/v1", timeout=60)
    with connect(live_server.ws_url + "/ws") as ws:
        synced(ws)  # not subscribed to any session: model events are for everyone
        assert api.post("/models/import", json={"location": str(tiny_model_files["diffusers"])}).status_code == 201
        while (event := receive(ws, timeout=60))["type"] != "models_changed":
            pass
        assert event["added"] == ["sd-1/main/tiny"]
        assert api.delete("/models/sd-1/main/tiny").status_code == 204
        while (event := receive(ws, timeout=60))["type"] != "models_changed":
            pass
        assert event["removed"] == ["sd-1/main/tiny"]
    api.close()
