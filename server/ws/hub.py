"""The event hub: every service emits here; the hub stamps `seq`, keeps a replay ring and fans out.

`emit` may be called from any thread (the torch worker emits progress); events are published on the loop
thread in the order they were emitted, so `seq` order is delivery order."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable

from server.clock import utc_now
from server.ws.events import Event

Listener = Callable[[Event], None]


class EventHub:
    def __init__(self, replay_size: int = 10_000) -> None:
        self._seq = 0
        self._ring: deque[Event] = deque(maxlen=replay_size)
        self._listeners: list[Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None

    @property
    def last_seq(self) -> int:
        return self._seq

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called once at start-up from the loop that will publish events."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def emit(self, event: Event) -> None:
        if self._loop is None or threading.get_ident() == self._loop_thread:
            self._publish(event)
        else:
            self._loop.call_soon_threadsafe(self._publish, event)

    def _publish(self, event: Event) -> None:
        self._seq += 1
        event.seq = self._seq
        event.timestamp = utc_now()
        self._ring.append(event)
        for listener in list(self._listeners):
            listener(event)

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def events_since(self, seq: int) -> list[Event] | None:
        """Retained events with a seq above `seq`, or None when some of them are no longer retained."""
        if seq >= self._seq:
            return []
        if not self._ring or self._ring[0].seq > seq + 1:
            return None
        start = seq + 1 - self._ring[0].seq
        return list(self._ring)[start:]
