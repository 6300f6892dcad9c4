"""One WebSocket client's side of the hub: what it covers, and its bounded queue of frames waiting to be sent.

The queue holds at most `limit` frames. Once a client has fallen behind (more than `COALESCE_AFTER` frames
waiting), a `generator_progress` frame replaces the one still waiting for the same session and node (latest
wins); a client that keeps up sees every step. Any other frame that does not fit is refused, and the hub then
closes the connection with 1013 so the client resumes with `since`. Replayed frames are kept apart from the live
queue (they are references into the hub's ring, so they cost no copy) and the two are merged by seq when sent."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections import OrderedDict, deque

ProgressKey = tuple[str, str]

# Frames waiting before progress is coalesced (at most half the queue).
COALESCE_AFTER = 32


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
