"""`/ws` over a real uvicorn on 127.0.0.1: routing, `since` replay, resync, bad messages, access checks,
slow and dead peers. Events are emitted straight into the running server's hub."""

from __future__ import annotations

import json
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedError, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from server.cli import make_server
from server.config import Settings
from server.events import GeneratorProgress, ImageDeleted, ProgressImage, SessionComplete, SessionStarted
from tests.conftest import start_live_server
from tests.ws.conftest import (
    RawClient,
    hub_of,
    on_loop,
    receive,
    send,
    start_server_with_heartbeat,
    synced,
    wait_until,
)


def receive_n(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    return [receive(ws) for _ in range(n)]


def nothing_more(ws: ClientConnection) -> None:
    """No event is waiting: the next thing after a ping is its pong."""
    synced(ws)


def emit(live, *events) -> None:
    hub = hub_of(live)
    on_loop(live, lambda: [hub.emit(event) for event in events])


def test_broadcast_events_reach_every_client_with_seq_and_timestamp(live_server):
    with connect(live_server.ws_url + "/ws") as one, connect(live_server.ws_url + "/ws") as two:
        synced(one), synced(two)
        emit(live_server, ImageDeleted(image_name="a.png"))
        for ws in (one, two):
            message = receive(ws)
            assert message["type"] == "image_deleted" and message["image_name"] == "a.png"
            assert message["seq"] == 1 and message["timestamp"].endswith("+00:00")


def test_pong_carries_the_last_seq(live_server):
    emit(live_server, ImageDeleted(image_name="a.png"), ImageDeleted(image_name="b.png"))
    with connect(live_server.ws_url + "/ws") as ws:
        assert synced(ws)["seq"] == 2


def test_two_clients_see_only_their_own_session_events(live_server):
    with connect(live_server.ws_url + "/ws") as a, connect(live_server.ws_url + "/ws") as b:
        send(a, type="subscribe", sessions=["s-a"])
        send(b, type="subscribe", sessions=["s-b"])
        synced(a), synced(b)
        emit(
            live_server,
            SessionStarted(session_id="s-a"),
            SessionStarted(session_id="s-b"),
            ImageDeleted(image_name="x.png"),
            SessionComplete(session_id="s-b", status="completed"),
            SessionComplete(session_id="s-a", status="completed"),
        )
        got_a = [(m["type"], m.get("session_id"), m["seq"]) for m in receive_n(a, 3)]
        got_b = [(m["type"], m.get("session_id"), m["seq"]) for m in receive_n(b, 3)]
        assert got_a == [("session_started", "s-a", 1), ("image_deleted", None, 3), ("session_complete", "s-a", 5)]
        assert got_b == [("session_started", "s-b", 2), ("image_deleted", None, 3), ("session_complete", "s-b", 4)]
        nothing_more(a), nothing_more(b)


def test_star_covers_every_session_and_unsubscribe_stops_them(live_server):
    with connect(live_server.ws_url + "/ws") as ws:
        send(ws, type="subscribe", sessions="*")
        synced(ws)
        emit(live_server, SessionStarted(session_id="s1"), SessionStarted(session_id="s2"))
        assert [m["session_id"] for m in receive_n(ws, 2)] == ["s1", "s2"]
        send(ws, type="unsubscribe", sessions="*")
        synced(ws)
        emit(live_server, SessionStarted(session_id="s3"), ImageDeleted(image_name="x.png"))
        assert receive(ws)["type"] == "image_deleted"
        nothing_more(ws)


def test_since_replays_then_goes_live_without_gap_or_duplicate(live_server):
    emit(live_server, *[SessionStarted(session_id="s") for _ in range(5)])
    with connect(live_server.ws_url + "/ws") as ws:
        send(ws, type="subscribe", sessions=["s"], since=2)
        emit(live_server, SessionComplete(session_id="s", status="completed"))
        assert [m["seq"] for m in receive_n(ws, 4)] == [3, 4, 5, 6]
        nothing_more(ws)


def test_reconnect_with_since_gets_exactly_the_missed_events(live_server):
    url = live_server.ws_url + "/ws"
    with connect(url) as ws:
        send(ws, type="subscribe", sessions=["run"])
        synced(ws)
        emit(live_server, SessionStarted(session_id="run"), progress("run", 1))
        seen = receive_n(ws, 2)
    last_seen = seen[-1]["seq"]
    # While nobody listens: more of our session, another session, and an image event.
    emit(
        live_server,
        *[progress("run", step) for step in (2, 3)],
        SessionStarted(session_id="other"),
        ImageDeleted(image_name="x.png"),
        SessionComplete(session_id="run", status="completed"),
    )
    with connect(url) as ws:
        send(ws, type="subscribe", sessions=["run"], since=last_seen)
        missed = receive_n(ws, 4)
        nothing_more(ws)
    assert [(m["type"], m.get("step")) for m in missed] == [
        ("generator_progress", 2),
        ("generator_progress", 3),
        ("image_deleted", None),
        ("session_complete", None),
    ]
    assert [m["seq"] for m in seen + missed] == [1, 2, 3, 4, 6, 7]  # 5 is the other session's


def test_since_older_than_the_ring_gives_resync_required(settings):
    live = start_live_server(Settings(**{**_fields(settings), "ws_replay_events": 10_000}))
    try:
        emit(live, *[ImageDeleted(image_name=str(i)) for i in range(10_005)])
        with connect(live.ws_url + "/ws") as ws:
            send(ws, type="subscribe", sessions="*", since=3)
            message = receive(ws)
            assert message["type"] == "resync_required" and message["seq"] == 10_005
            send(ws, type="subscribe", sessions="*", since=4_000_000)  # never issued by this server
            assert receive(ws)["type"] == "resync_required"
            emit(live, SessionStarted(session_id="s"))
            assert receive(ws)["seq"] == 10_006  # live from where it stands
    finally:
        live.stop()


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "subscribe", "sessions": 5}, "$.sessions"),
        ({"type": "subscribe", "sessions": "*", "since": -1}, "$.since"),
        ({"type": "subscribe", "sessions": "*", "sinse": 4}, "sinse"),
        ({"type": "subscrib", "sessions": "*"}, "$.type"),
    ],
)
def test_a_bad_message_closes_with_1007_naming_the_field(live_server, message, field):
    with connect(live_server.ws_url + "/ws") as ws:
        ws.send(json.dumps(message))
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1007
    assert field in closed.value.rcvd.reason


def test_not_json_and_binary_frames_are_refused(live_server):
    with connect(live_server.ws_url + "/ws") as ws:
        ws.send("hello")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1007 and "not JSON" in closed.value.rcvd.reason
    with connect(live_server.ws_url + "/ws") as ws:
        ws.send(b'{"type": "ping"}')
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd.code == 1003


def test_token_is_required_on_ws(settings):
    live = start_live_server(Settings(**{**_fields(settings), "token": "s3cret"}))
    try:
        for url in ("/ws", "/ws?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                connect(live.ws_url + url)
            assert refused.value.response.status_code == 403
        with connect(live.ws_url + "/ws?token=s3cret") as ws:
            synced(ws)
    finally:
        live.stop()


def test_cross_origin_handshake_is_refused(live_server):
    with pytest.raises(InvalidStatus) as refused:
        connect(live_server.ws_url + "/ws", origin="http://evil.example")
    assert refused.value.response.status_code == 403
    assert hub_of(live_server).subscribers == ()  # refused before it reached the hub
    with connect(live_server.ws_url + "/ws", origin=live_server.url) as ws:
        synced(ws)


# Previews make progress events the biggest ones a client gets.
PREVIEW = ProgressImage(width=32, height=32, dataURL="data:image/webp;base64," + "A" * 2000)


def progress(session: str, step: int, node: str = "denoise") -> GeneratorProgress:
    return GeneratorProgress(
        session_id=session, node_id=node, source_node_id=node, step=step, total_steps=20_000, progress_image=PREVIEW
    )


def _fields(settings: Settings) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in settings.__struct_fields__}


@pytest.fixture
def small_queue_server(settings):
    live = start_live_server(Settings(**{**_fields(settings), "ws_client_queue": 16}))
    yield live
    live.stop()


def test_a_client_that_stops_reading_is_bounded_then_dropped_with_1013(small_queue_server, raw_clients):
    live = small_queue_server
    hub = hub_of(live)
    stalled = RawClient(live.ws_url + "/ws", receive_buffer=4096)
    raw_clients.append(stalled)
    stalled.send({"type": "subscribe", "sessions": "*"})
    stalled.send({"type": "ping"})
    stalled.read_until(lambda c: any(m["type"] == "pong" for m in c.messages))
    (subscriber,) = hub.subscribers
    payload = "x" * 2000
    most_queued = 0
    with connect(live.ws_url + "/ws") as reader:  # a client that keeps up, for comparison
        synced(reader)
        batches = 0
        while subscriber in hub.subscribers:
            batches += 1
            assert batches < 5000, "the stalled client was never dropped"
            emit(live, *[ImageDeleted(image_name=payload) for _ in range(10)])
            most_queued = max(most_queued, subscriber.queued)
            for _ in range(10):
                receive(reader)
        last_seq = hub.last_seq
        assert subscriber.queued == 0  # its queue was freed when it was dropped
        synced(reader)  # the reader was never slowed or dropped
    assert most_queued <= 16
    assert subscriber.close_code == 1013

    stalled.read_to_end()
    assert stalled.close_code == 1013 and "since" in stalled.close_reason
    got = [m["seq"] for m in stalled.messages if m["type"] == "image_deleted"]
    assert got == list(range(1, len(got) + 1))  # in order, no gap, until it fell behind
    # It resumes where it stopped and receives exactly the rest.
    with connect(live.ws_url + "/ws") as ws:
        send(ws, type="subscribe", sessions="*", since=got[-1])
        rest = [receive(ws)["seq"] for _ in range(last_seq - got[-1])]
        nothing_more(ws)
    assert rest == list(range(got[-1] + 1, last_seq + 1))


def test_a_slow_client_gets_coalesced_progress_and_stays_connected(small_queue_server, raw_clients):
    live = small_queue_server
    hub = hub_of(live)
    stalled = RawClient(live.ws_url + "/ws", receive_buffer=4096)
    raw_clients.append(stalled)
    stalled.send({"type": "subscribe", "sessions": ["run"]})
    stalled.send({"type": "ping"})
    stalled.read_until(lambda c: any(m["type"] == "pong" for m in c.messages))
    (subscriber,) = hub.subscribers
    emit(live, SessionStarted(session_id="run"))
    for start in range(1, 20_001, 500):
        emit(live, *[progress("run", step) for step in range(start, start + 500)])
        assert subscriber.queued <= 16
    emit(live, SessionComplete(session_id="run", status="completed"))
    assert subscriber in hub.subscribers
    stalled.read_until(lambda c: c.messages[-1]["type"] == "session_complete")
    steps = [m["step"] for m in stalled.messages if m["type"] == "generator_progress"]
    assert steps[-1] == 20_000  # the latest progress always arrives
    assert steps == sorted(steps) and len(steps) < 20_000
    assert [m["type"] for m in stalled.messages][:2] == ["pong", "session_started"]


def test_a_peer_that_stops_answering_pings_is_dropped(settings, raw_clients):
    live = start_server_with_heartbeat(Settings(**{**_fields(settings), "ws_heartbeat_s": 0.2}))
    try:
        hub = hub_of(live)
        silent = RawClient(live.ws_url + "/ws")  # never reads again, so never answers a ping
        raw_clients.append(silent)
        wait_until(lambda: len(hub.subscribers) == 1, what="the client to connect")
        (silent_subscriber,) = hub.subscribers
        with connect(live.ws_url + "/ws") as alive:  # websockets answers pings by itself
            synced(alive)
            wait_until(lambda: silent_subscriber not in hub.subscribers, what="the silent peer to be dropped")
            synced(alive)
            assert len(hub.subscribers) == 1
    finally:
        live.stop()


def test_serve_pings_every_peer_at_the_heartbeat_setting(tmp_path):
    # The server `imagegraph serve` runs; the test above watches the pings drop a silent peer on that server.
    config = make_server(Settings(root=str(tmp_path / "root"), watch=False, ws_heartbeat_s=7.5)).config
    assert (config.ws_ping_interval, config.ws_ping_timeout) == (7.5, 7.5)


def test_a_client_that_sends_nothing_still_gets_events_for_everyone(live_server):
    with connect(live_server.ws_url + "/ws") as ws:
        wait_until(lambda: len(hub_of(live_server).subscribers) == 1, what="the client to connect")
        emit(live_server, ImageDeleted(image_name="a.png"), SessionStarted(session_id="s"))
        assert receive(ws)["image_name"] == "a.png"  # sent once the short first-message grace has passed
