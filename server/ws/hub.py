"""The event hub: every service emits here; the hub stamps `seq`, keeps a replay ring and fans out to each
WebSocket client through that client's own bounded queue.

`emit` may be called from any thread (the torch worker emits progress); events are published on the loop
thread in the order they were emitted, so `seq` order is delivery order. Publishing is O(clients) work that
never waits: each event is encoded once and the same frame string is queued to every client it concerns.

A client's queue (`Subscriber`) holds at most `client_queue` frames. Once a client has fallen behind (more than
`COALESCE_AFTER` frames waiting), a `generator_progress` frame replaces the one still waiting for the same
session and node (latest wins); a client that keeps up sees every step. Any other frame that does not fit closes
the connection with 1013, and the client resumes with `since`. Replayed frames are kept apart from the live queue
(they are references into the ring, so they cost no copy) and the two are merged by seq when sent."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

import msgspec

from server.clock import utc_now
from server.ws.events import Event, GeneratorProgress, Pong, ResyncRequired

log = logging.getLogger(__name__)
Listener = Callable[[Event], None]
ProgressKey = tuple[str, str]

# WebSocket close codes (RFC 6455 §7.4.1).
TRY_AGAIN_LATER = 1013
# Frames waiting before progress is coalesced (at most half the queue).
COALESCE_AFTER = 32
TOO_SLOW = "client fell too far behind; reconnect and subscribe with since=<the last seq you received>"
_encoder = msgspec.json.Encoder()


class Published(NamedTuple):
    """One event as the ring keeps it: the encoded frame is shared by every client it goes to."""

    seq: int
    event: Event
    frame: str
    session_id: str | None
    progress_key: ProgressKey | None


class Subscriber:
    """One WebSocket client as the hub sees it: what it covers and the frames waiting to be sent.

    Every event not tied to a session is covered from the moment the client connects; session events once
    the client subscribes to that session or to `*`. The seq at which each kind of live delivery began is kept
    so a `since` replay skips exactly the events that were already delivered live."""

    def __init__(self, limit: int, connected_at: int) -> None:
        self.limit = limit
        self.coalesce_after = min(COALESCE_AFTER, limit // 2)
        self.connected_at = connected_at
        self.all_sessions_since: int | None = None
        self.sessions: dict[str, int] = {}
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = asyncio.Event()  # set when the hub gives up on this client
        # The sender's wake-up: a bare future is the cheapest thing to await, and there is one waiter at most.
        self._waiter: asyncio.Future[None] | None = None
        self._replay: deque[tuple[int, str]] = deque()
        # Insertion order is seq order: live frames arrive in seq order, and a coalesced progress frame is
        # removed from its old place and appended with its newer seq.
        self._pending: OrderedDict[int, tuple[int, str, ProgressKey | None]] = OrderedDict()
        # The slot of the latest progress frame waiting for each session and node.
        self._progress: dict[ProgressKey, int] = {}
        self._counter = itertools.count()

    def covers(self, session_id: str | None) -> bool:
        if session_id is None:
            return True
        return self.all_sessions_since is not None or session_id in self.sessions

    def live_since(self, session_id: str | None) -> int | None:
        """The seq after which events of this kind reach the client live, or None if they do not."""
        if session_id is None:
            return self.connected_at
        starts = [s for s in (self.all_sessions_since, self.sessions.get(session_id)) if s is not None]
        return min(starts) if starts else None

    @property
    def queued(self) -> int:
        return len(self._pending) + len(self._replay)

    def deliver(self, seq: int, frame: str, progress_key: ProgressKey | None = None) -> bool:
        """Queue one frame; False when it does not fit and the client must be dropped."""
        if self.close_code is not None:
            return True
        if progress_key is not None:
            if len(self._pending) >= self.coalesce_after:
                older = self._progress.get(progress_key)
                if older is not None:
                    del self._pending[older]
                elif len(self._pending) >= self.limit:
                    return True  # full of other events; progress may be skipped, the node's completion will follow
        elif len(self._pending) >= self.limit:
            return False
        slot = next(self._counter)
        self._pending[slot] = (seq, frame, progress_key)
        if progress_key is not None:
            self._progress[progress_key] = slot
        self._wake()
        return True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Return once a frame is waiting (at once if one already is)."""
        if self._pending or self._replay:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    def add_replay(self, frames: list[tuple[int, str]]) -> None:
        if not frames:
            return
        if self._replay:
            # A second `since` before the first replay is sent: merge, and send each event once.
            merged: list[tuple[int, str]] = []
            for item in heapq.merge(self._replay, frames, key=lambda pair: pair[0]):
                if not merged or merged[-1][0] != item[0]:
                    merged.append(item)
            frames = merged
        self._replay = deque(frames)
        self._wake()

    def next_frame(self) -> str | None:
        """The waiting frame with the lowest seq (replay and live merged), or None."""
        if self._replay:
            if self._pending:
                first_live_seq = next(iter(self._pending.values()))[0]
                if first_live_seq < self._replay[0][0]:
                    return self._pop_pending()
            return self._replay.popleft()[1]
        if self._pending:
            return self._pop_pending()
        return None

    def _pop_pending(self) -> str:
        slot, (_, frame, key) = self._pending.popitem(last=False)
        if key is not None and self._progress.get(key) == slot:
            del self._progress[key]
        return frame

    def fail(self, code: int, reason: str) -> None:
        """Stop queueing, free what is queued, and tell the endpoint to close the connection."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._pending.clear()
        self._progress.clear()
        self._replay.clear()
        self.closed.set()
        self._wake()


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
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._publish(event)
            return
        try:
            self._loop.call_soon_threadsafe(self._publish, event)
        except RuntimeError:
            # The loop has closed (shutdown while the worker finished a step): nobody is left to tell.
            log.debug("dropped %s emitted after the event loop closed", type(event).__name__)

    def _publish(self, event: Event) -> None:
        self._seq += 1
        seq = event.seq = self._seq
        event.timestamp = utc_now()
        session_id: str | None = getattr(event, "session_id", None)
        key = (event.session_id, event.node_id) if isinstance(event, GeneratorProgress) else None
        frame = _encoder.encode(event).decode()
        self._ring.append(Published(seq, event, frame, session_id, key))
        for subscriber in self._subscribers:
            if subscriber.covers(session_id) and not subscriber.deliver(seq, frame, key):
                self._drop(subscriber, TRY_AGAIN_LATER, TOO_SLOW)
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                log.exception("event listener %r failed on %s", listener, type(event).__name__)

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
