"""The hub on its own: seq stamping, the replay ring, per-client queues (coalescing, overflow) and replay order."""

from __future__ import annotations

import asyncio
import json
import threading

from server.events import GeneratorProgress, ImageDeleted, SessionComplete, SessionStarted
from server.ws.hub import TRY_AGAIN_LATER, EventHub
from server.ws.subscriber import Subscriber


def progress(session: str, node: str, step: int) -> GeneratorProgress:
    return GeneratorProgress(session_id=session, node_id=node, source_node_id=node, step=step, total_steps=99)


def drain(subscriber: Subscriber) -> list[dict]:
    frames = []
    while (frame := subscriber.next_frame()) is not None:
        frames.append(json.loads(frame))
    return frames


def test_seq_is_consecutive_and_stamped():
    hub = EventHub()
    seen = []
    hub.add_listener(seen.append)
    for name in "abc":
        hub.emit(ImageDeleted(image_name=name))
    assert [event.seq for event in seen] == [1, 2, 3]
    assert all(event.timestamp.endswith("+00:00") for event in seen)
    assert hub.last_seq == 3


def test_events_since_and_the_ring_limit():
    hub = EventHub(replay_size=10)
    for i in range(25):
        hub.emit(ImageDeleted(image_name=str(i)))
    assert [event.seq for event in hub.events_since(20)] == [21, 22, 23, 24, 25]
    assert [event.seq for event in hub.events_since(15)] == list(range(16, 26))
    assert hub.events_since(25) == []
    assert hub.events_since(14) is None  # seq 15 is gone
    assert hub.events_since(26) is None  # a seq this server never issued (the client saw an earlier run)


def test_emit_from_another_thread_is_published_on_the_loop_in_order():
    async def scenario():
        hub = EventHub()
        hub.bind(asyncio.get_running_loop())
        threads = []
        seen: list[tuple[int, str, bool]] = []
        loop_thread = threading.get_ident()
        hub.add_listener(lambda e: seen.append((e.seq, e.image_name, threading.get_ident() == loop_thread)))

        def worker():
            for i in range(200):
                hub.emit(ImageDeleted(image_name=str(i)))

        threads.append(threading.Thread(target=worker))
        threads[0].start()
        await asyncio.to_thread(threads[0].join)
        await asyncio.sleep(0)  # let the last call_soon_threadsafe callbacks run
        return seen

    seen = asyncio.run(scenario())
    assert [seq for seq, _, _ in seen] == list(range(1, 201))
    assert [name for _, name, _ in seen] == [str(i) for i in range(200)]
    assert all(on_loop for _, _, on_loop in seen)


def test_session_events_reach_only_subscribed_clients():
    hub = EventHub()
    a, b, everyone = hub.connect(), hub.connect(), hub.connect()
    hub.subscribe(a, ["s1"])
    hub.subscribe(b, ["s2"])
    hub.subscribe(everyone, "*")
    hub.emit(SessionStarted(session_id="s1"))
    hub.emit(SessionStarted(session_id="s2"))
    hub.emit(ImageDeleted(image_name="x"))
    assert [(m["type"], m.get("session_id")) for m in drain(a)] == [("session_started", "s1"), ("image_deleted", None)]
    assert [(m["type"], m.get("session_id")) for m in drain(b)] == [("session_started", "s2"), ("image_deleted", None)]
    assert [m["seq"] for m in drain(everyone)] == [1, 2, 3]


def test_a_client_that_keeps_up_sees_every_step():
    hub = EventHub(client_queue=16)
    client = hub.connect()
    hub.subscribe(client, "*")
    steps = []
    for step in range(1, 101):
        hub.emit(progress("s1", "denoise", step))
        steps += [m["step"] for m in drain(client)]
    assert steps == list(range(1, 101))


def test_progress_is_coalesced_per_session_and_node_once_a_client_falls_behind():
    hub = EventHub(client_queue=16)  # coalescing starts with 8 frames waiting
    slow = hub.connect()
    hub.subscribe(slow, "*")
    hub.emit(SessionStarted(session_id="s2"))
    for step in range(1, 50):
        hub.emit(progress("s1", "denoise", step))
        hub.emit(progress("s2", "denoise", step))
    hub.emit(SessionComplete(session_id="s2", status="completed"))
    frames = drain(slow)
    progress_frames = [(m["session_id"], m["step"]) for m in frames if m["type"] == "generator_progress"]
    # The first ones went into the queue as they came; after that only the latest per session and node waits.
    assert progress_frames == [("s1", 1), ("s2", 1), ("s1", 2), ("s2", 2), ("s1", 3), ("s1", 49), ("s2", 49)]
    assert frames[0]["type"] == "session_started" and frames[-1]["type"] == "session_complete"
    assert [m["seq"] for m in frames] == sorted(m["seq"] for m in frames)


def test_overflow_drops_the_client_with_1013_and_frees_its_queue():
    hub = EventHub(client_queue=16)
    slow, fine = hub.connect(), hub.connect()
    for i in range(16):
        hub.emit(ImageDeleted(image_name=str(i)))
    drain(fine)
    assert slow.queued == 16 and slow.close_code is None
    hub.emit(progress("s", "n", 1))  # progress never overflows: it is skipped when there is no room
    assert slow.close_code is None
    hub.emit(ImageDeleted(image_name="one too many"))
    assert slow.close_code == TRY_AGAIN_LATER == 1013  # RFC 6455 "try again later", what docs/api.md promises
    assert "since" in slow.close_reason
    assert slow.queued == 0
    assert slow.closed.is_set()
    assert hub.subscribers == (fine,)
    assert len(drain(fine)) == 1  # the other client is untouched


def test_replay_skips_what_was_delivered_live_and_merges_in_seq_order():
    hub = EventHub()
    hub.emit(ImageDeleted(image_name="before"))  # 1
    hub.emit(SessionStarted(session_id="s1"))  # 2
    client = hub.connect()  # broadcast events are live from here
    hub.emit(ImageDeleted(image_name="after"))  # 3, queued live
    hub.emit(SessionStarted(session_id="s2"))  # 4, not covered yet
    hub.emit(SessionStarted(session_id="s1"))  # 5, not covered yet
    hub.subscribe(client, ["s1"], since=0)
    hub.emit(SessionComplete(session_id="s1", status="completed"))  # 6, live
    assert [m["seq"] for m in drain(client)] == [1, 2, 3, 5, 6]


def test_a_replay_after_a_live_subscription_sends_what_came_before_it_once():
    hub = EventHub()
    client = hub.connect()
    hub.emit(SessionStarted(session_id="s1"))  # 1, before the client covered s1
    hub.subscribe(client, ["s1"])  # live after seq 1
    hub.emit(SessionComplete(session_id="s1", status="completed"))  # 2, live
    hub.subscribe(client, ["s1"], since=0)  # the page asks for what it missed
    assert [m["seq"] for m in drain(client)] == [1, 2]


def test_unsubscribing_stops_those_sessions_only():
    hub = EventHub()
    client = hub.connect()
    hub.subscribe(client, ["s1", "s2"])
    hub.unsubscribe(client, ["s1"])
    hub.emit(SessionStarted(session_id="s1"))
    hub.emit(SessionStarted(session_id="s2"))
    assert [m["session_id"] for m in drain(client)] == ["s2"]
    hub.subscribe(client, "*")
    hub.unsubscribe(client, "*")  # every session, however it was subscribed
    hub.emit(SessionStarted(session_id="s2"))
    hub.emit(SessionStarted(session_id="s3"))
    hub.emit(ImageDeleted(image_name="x"))  # not a session's event: still sent
    assert [m["type"] for m in drain(client)] == ["image_deleted"]


def test_an_event_emitted_after_the_loop_closed_is_dropped_without_an_error():
    # A worker thread finishing a step while the server shuts down must not die with a traceback.
    loop = asyncio.new_event_loop()
    hub = EventHub()
    hub.bind(loop)
    loop.close()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            hub.emit(ImageDeleted(image_name="late"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert errors == []


def test_asking_twice_for_the_same_replay_sends_it_once():
    hub = EventHub()
    for session in ("s1", "s2", "s1"):
        hub.emit(SessionStarted(session_id=session))
    client = hub.connect()
    hub.subscribe(client, ["s1"], since=0)
    hub.subscribe(client, "*", since=0)
    assert [m["seq"] for m in drain(client)] == [1, 2, 3]


def test_resync_required_when_since_is_gone():
    hub = EventHub(replay_size=10)
    for i in range(30):
        hub.emit(ImageDeleted(image_name=str(i)))
    client = hub.connect()
    hub.subscribe(client, "*", since=5)
    frames = drain(client)
    assert [m["type"] for m in frames] == ["resync_required"]
    assert frames[0]["seq"] == 30  # the point the client is in step with after resyncing over REST
    hub.emit(SessionStarted(session_id="s"))  # the subscription itself still took effect
    assert [m["seq"] for m in drain(client)] == [31]


def test_a_failing_listener_does_not_stop_delivery():
    hub = EventHub()
    client = hub.connect()
    seen = []

    def broken(event):
        raise RuntimeError("boom")

    hub.add_listener(broken)
    hub.add_listener(seen.append)
    hub.emit(ImageDeleted(image_name="x"))
    assert len(seen) == 1 and len(drain(client)) == 1
    hub.remove_listener(broken)
    hub.emit(ImageDeleted(image_name="y"))
    assert len(seen) == 2
