"""The queue: FIFO, 409 while queued or running, cancel of a queued and of a running session, and the
server staying responsive while the worker is busy."""

from __future__ import annotations

from server.events import (
    GeneratorProgress,
    ImageCreated,
    InvocationComplete,
    QueueStatus,
    SessionCanceled,
    SessionComplete,
    SessionStarted,
)
from tests.graph.conftest import run_graph, t2i_graph

SESSIONS = "/api/v1/sessions/"
# Long enough that it is surely still running when the test acts on it; every test cancels it early.
LONG_STEPS = 1000


def create(client, graph) -> str:
    response = client.post(SESSIONS, json=graph)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def start_long(client, events) -> str:
    """A session that is running its denoise loop when this returns."""
    session_id = create(client, t2i_graph(steps=LONG_STEPS, metadata=False))
    assert client.put(f"{SESSIONS}{session_id}/invoke").status_code == 202
    events.wait_for(lambda e: isinstance(e, GeneratorProgress) and e.session_id == session_id and e.step >= 2)
    return session_id


def status(client, session_id) -> str:
    return client.get(f"{SESSIONS}{session_id}").json()["status"]


def test_cancel_a_running_session_stops_it_before_its_next_step(generation):
    client, events = generation
    running = start_long(client, events)
    assert status(client, running) == "running"
    assert client.get("/health").status_code == 200  # the event loop is free while the worker computes
    assert client.delete(f"{SESSIONS}{running}/invoke").status_code == 202
    assert events.wait_finished(running).status == "canceled"
    session = client.get(f"{SESSIONS}{running}").json()
    assert session["status"] == "canceled"
    assert "denoise" not in session["executed"] and "decode" not in session["executed"]
    steps = [e.step for e in events.of(running, GeneratorProgress)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) < LONG_STEPS
    assert len(events.of(running, SessionCanceled)) == 1
    assert not [e for e in events.events if isinstance(e, ImageCreated)]
    assert client.get("/api/v1/queue").json() == {"running": None, "pending": []}


def test_cancel_a_queued_session_takes_it_off_the_queue(generation):
    client, events = generation
    running = start_long(client, events)
    waiting = create(client, t2i_graph(seed=2))
    assert client.put(f"{SESSIONS}{waiting}/invoke").status_code == 202
    assert client.get("/api/v1/queue").json() == {"running": running, "pending": [waiting]}
    assert status(client, waiting) == "queued"

    assert client.delete(f"{SESSIONS}{waiting}/invoke").status_code == 202
    assert status(client, waiting) == "canceled"
    assert client.get("/api/v1/queue").json() == {"running": running, "pending": []}
    queue_events = [(e.running, e.pending) for e in events.events if isinstance(e, QueueStatus)]
    assert queue_events[-2:] == [(running, [waiting]), (running, [])]

    assert client.delete(f"{SESSIONS}{running}/invoke").status_code == 202
    events.wait_finished(running)
    assert events.of(waiting, SessionStarted) == []
    assert [e.status for e in events.of(waiting, SessionComplete)] == ["canceled"]


def test_invoking_a_queued_or_running_session_is_a_conflict(generation):
    client, events = generation
    running = start_long(client, events)
    waiting = create(client, t2i_graph())
    assert client.put(f"{SESSIONS}{waiting}/invoke").status_code == 202
    for session_id, state in ((running, "running"), (waiting, "queued")):
        response = client.put(f"{SESSIONS}{session_id}/invoke")
        assert response.status_code == 409
        assert (
            response.json()["detail"] == f"session {session_id} is already {state}; cancel it or wait for it to finish"
        )
    client.delete(f"{SESSIONS}{waiting}/invoke")
    client.delete(f"{SESSIONS}{running}/invoke")
    events.wait_finished(running)


def test_sessions_run_in_the_order_they_were_queued(generation):
    client, events = generation
    running = start_long(client, events)
    later = [create(client, t2i_graph(seed=seed, steps=2)) for seed in (1, 2, 3)]
    for session_id in later:
        assert client.put(f"{SESSIONS}{session_id}/invoke").status_code == 202
    assert client.get("/api/v1/queue").json()["pending"] == later
    client.delete(f"{SESSIONS}{running}/invoke")
    for session_id in later:
        assert events.wait_finished(session_id).status == "completed"
    started = [e.session_id for e in events.events if isinstance(e, SessionStarted)]
    assert started == [running, *later]


def test_a_finished_session_can_be_invoked_again_but_not_canceled(generation):
    client, events = generation
    session = run_graph(client, events, t2i_graph(seed=9, steps=2))
    first_image = session["results"]["decode"]["image"]["image_name"]
    response = client.delete(f"{SESSIONS}{session['id']}/invoke")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]

    assert client.put(f"{SESSIONS}{session['id']}/invoke").status_code == 202
    events.wait_for(
        lambda e: (
            isinstance(e, SessionComplete)
            and e.session_id == session["id"]
            and e.seq > events.of(session["id"], SessionComplete)[0].seq
        )
    )
    again = client.get(f"{SESSIONS}{session['id']}").json()
    assert again["status"] == "completed"
    assert again["results"]["decode"]["image"]["image_name"] != first_image


def test_unknown_sessions(client):
    assert client.put(f"{SESSIONS}nope/invoke").status_code == 404
    assert client.delete(f"{SESSIONS}nope/invoke").status_code == 404
    assert client.get(f"{SESSIONS}nope").json() == {"detail": "Session 'nope' not found"}


def test_invoke_with_all_false_runs_one_node_at_a_time(generation):
    client, events = generation
    session_id = create(client, t2i_graph(seed=13, steps=2))
    executed = []
    for expected in ["model", "pos", "neg", "noise", "denoise", "meta"]:
        assert client.put(f"{SESSIONS}{session_id}/invoke", params={"all": "false"}).status_code == 202
        done = events.wait_for(
            lambda e, n=expected: isinstance(e, InvocationComplete) and e.session_id == session_id and e.node_id == n
        )
        # the worker is free again once the queue says nothing runs
        events.wait_for(lambda e, after=done.seq: isinstance(e, QueueStatus) and e.running is None and e.seq > after)
        executed.append(expected)
        session = client.get(f"{SESSIONS}{session_id}").json()
        assert (session["status"], session["executed"]) == ("pending", executed)
    # the rest in one go: it continues from the tensors the earlier invokes made
    assert client.put(f"{SESSIONS}{session_id}/invoke").status_code == 202
    assert events.wait_finished(session_id).status == "completed"
    session = client.get(f"{SESSIONS}{session_id}").json()
    assert session["executed"] == [*executed, "decode"]
    assert events.of(session_id, SessionComplete)[0].status == "completed"


def test_sessions_list_newest_first_and_paginated(client):
    ids = [create(client, {"nodes": {"n": {"type": "integer", "value": i}}, "edges": []}) for i in range(3)]
    page = client.get(SESSIONS, params={"limit": 2}).json()
    assert page["total"] == 3 and page["limit"] == 2 and page["offset"] == 0
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    assert [item["id"] for item in client.get(SESSIONS, params={"offset": 2}).json()["items"]] == ids[:1]
    assert client.get(SESSIONS, params={"limit": 501}).status_code == 422
