"""The event hub: every service emits here; the hub stamps `seq`, keeps a replay ring and fans out to each
WebSocket client through that client's own bounded queue.

`emit` may be called from any thread (the torch worker emits progress); events are published on the loop
thread in the order they were emitted, so `seq` order is delivery order. Publishing is O(clients) work that
never waits: each event is encoded once and the same frame string is queued to every client it concerns.

Each client's queue is a `Subscriber` (server/ws/subscriber.py), bounded by `client_queue`; a client that
overflows it is dropped and its connection closed with 1013."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Literal, NamedTuple

import msgspec

from server.clock import utc_now
from server.events import Event, GeneratorProgress, Pong, ResyncRequired, on_loop
from server.ws.subscriber import ProgressKey, Subscriber

log = logging.getLogger(__name__)
Listener = Callable[[Event], None]

# WebSocket close codes (RFC 6455 §7.4.1).
TRY_AGAIN_LATER = 1013
TOO_SLOW = "client fell too far behind; reconnect and subscribe with since=<the last seq you received>"
_encoder = msgspec.json.Encoder()


class Published(NamedTuple):
    """One event as the ring keeps it: the encoded frame is shared by every client it goes to."""

    seq: int
    event: Event
    frame: str
    session_id: str | None
    progress_key: ProgressKey | None


def _entry(event: Event, frame: str) -> Published:
    key = (event.session_id, event.node_id) if isinstance(event, GeneratorProgress) else None
    return Published(event.seq, event, frame, getattr(event, "session_id", None), key)


class EventHub:
    def __init__(self, replay_size: int = 10_000, client_queue: int = 1_000) -> None:
        self._seq = 0
        self._ring: deque[Published] = deque(maxlen=replay_size)
        self._listeners: list[Listener] = []
        self._subscribers: tuple[Subscriber, ...] = ()
        self._client_queue = client_queue
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return self._subscribers

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        return self._loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once at start-up from the loop that will publish events."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def emit(self, event: Event) -> None:
        """Publish `event` (any thread). Never blocks: from another thread it is handed to the loop."""
        on_loop(self._loop, self._loop_thread, self._publish, event)

    def _publish(self, event: Event) -> None:
        self._seq += 1
        event.seq = self._seq
        event.timestamp = utc_now()
        self.publish_numbered(event, _encoder.encode(event).decode())

    def publish_numbered(self, event: Event, frame: str) -> None:
        """Publish an event that already has its `seq` (above every earlier one) and its encoded frame: how the
        relay of a shared database (server/ws/event_log.py) hands on what any process emitted. Loop thread."""
        self._seq = event.seq
        published = _entry(event, frame)
        self._ring.append(published)
        seq, session_id, key = published.seq, published.session_id, published.progress_key
        for subscriber in self._subscribers:
            if subscriber.covers(session_id) and not subscriber.deliver(seq, frame, key):
                self._drop(subscriber, TRY_AGAIN_LATER, TOO_SLOW)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, type(event).__name__)

    def resume_from(self, history: Sequence[tuple[Event, str]], last_seq: int) -> None:
        """Start numbering after `last_seq`, with `history` (numbered events and their frames, oldest first)
        in the replay ring: a server joining a shared database replays what others published before it began."""
        self._ring.extend(_entry(event, frame) for event, frame in history)
        self._seq = last_seq

    def add_listener(self, listener: Listener) -> None:
        self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        self._listeners = [item for item in self._listeners if item is not listener]

    def events_since(self, seq: int) -> list[Event] | None:
        """Retained events with a seq above `seq`, or None when some of them are no longer retained."""
        published = self._published_since(seq)
        return None if published is None else [item.event for item in published]

    def _published_since(self, seq: int) -> Iterable[Published] | None:
        if seq > self._seq:
            return None  # a seq this server never issued: the client saw an earlier run of the server
        if seq == self._seq:
            return ()
        if not self._ring or self._ring[0].seq > seq + 1:
            return None
        return itertools.islice(self._ring, seq + 1 - self._ring[0].seq, None)

    # Clients. Everything below runs on the loop thread, so each call is atomic with respect to `_publish`.

    def connect(self) -> Subscriber:
        subscriber = Subscriber(self._client_queue, connected_at=self._seq)
        self._subscribers = (*self._subscribers, subscriber)
        return subscriber

    def disconnect(self, subscriber: Subscriber) -> None:
        self._subscribers = tuple(item for item in self._subscribers if item is not subscriber)

    def _drop(self, subscriber: Subscriber, code: int, reason: str) -> None:
        self.disconnect(subscriber)
        subscriber.fail(code, reason)

    def subscribe(self, subscriber: Subscriber, sessions: list[str] | Literal["*"], since: int | None = None) -> None:
        """Cover `sessions` from now on; with `since`, first queue the retained events after it that this
        subscription covers and the client has not had live, or `resync_required` when they are gone."""
        if since is not None:
            published = self._published_since(since)
            if published is None:
                self.reply(subscriber, ResyncRequired())
            else:
                wanted = None if sessions == "*" else set(sessions)
                replay = []
                for item in published:
                    sid = item.session_id
                    if sid is not None and wanted is not None and sid not in wanted:
                        continue
                    live = subscriber.live_since(sid)
                    if live is not None and item.seq > live:
                        continue  # already queued or sent live
                    replay.append((item.seq, item.frame))
                subscriber.add_replay(replay)
        if sessions == "*":
            if subscriber.all_sessions_since is None:
                subscriber.all_sessions_since = self._seq
        else:
            for session_id in sessions:
                subscriber.sessions.setdefault(session_id, self._seq)

    def unsubscribe(self, subscriber: Subscriber, sessions: list[str] | Literal["*"]) -> None:
        if sessions == "*":
            subscriber.all_sessions_since = None
            subscriber.sessions.clear()
            return
        for session_id in sessions:
            subscriber.sessions.pop(session_id, None)

    def reply(self, subscriber: Subscriber, event: Event) -> None:
        """Queue an answer meant for one client (pong, resync_required). It takes no seq of its own: it
        carries the seq of the last event published so far, the point the client is now in step with."""
        event.seq = self._seq
        event.timestamp = utc_now()
        if not subscriber.deliver(self._seq, _encoder.encode(event).decode()):
            self._drop(subscriber, TRY_AGAIN_LATER, TOO_SLOW)

    def pong(self, subscriber: Subscriber) -> None:
        self.reply(subscriber, Pong())
