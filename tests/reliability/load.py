"""Many concurrent clients against one real server process, and what must hold afterwards.

Shared by tests/reliability/test_load.py (the short form, a few seconds) and bench/soak.py (60 s, printing its
figures). Each client is an asyncio task with its own HTTP connection, looping over a weighted mix: uploads,
lists, DTO / metadata / thumbnail / full reads of images anyone made, deletes of its own uploads, and
generation sessions (tiny model, 64×64, 2-4 steps; at most one of its own queued at a time, so the queue stays
bounded). One WebSocket client subscribed to `*` records every image event.

Afterwards (`LoadReport.problems`): no transport error, no 5xx, no 4xx except a 404 for an image whose delete
had already been sent (counted apart); no lost rows (every 201 upload is listed, or was deleted by us); every
`image_created` seen matches a row or a later `image_deleted`, and every acknowledged upload was announced;
every session completed; the server's memory after the run within 10% of before."""

from __future__ import annotations

import asyncio
import io
import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image, PngImagePlugin
from websockets.asyncio.client import connect

from server.graph.standard import txt2img_graph
from tests.reliability.process import ServerProcess

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
# action -> weight
MIX = {
    "upload": 14,
    "list": 18,
    "dto": 14,
    "metadata": 10,
    "thumbnail": 12,
    "full": 6,
    "delete": 10,
    "session": 16,
}
# The environment of a server under load. Its image cache is bounded (256 MiB by default) and fills as images are
# written and read: at the default size it would still be filling at the end of a minute's run - growth by design,
# not a leak. At 4 MiB it is full after the warm-up, so what still grows after it is memory never given back.
SERVER_ENV = {"IMAGEGRAPH_IMAGE_CACHE_BYTES": str(4 * 1024 * 1024)}
READS = ("list", "dto", "metadata", "thumbnail", "full", "session_status")
MEMORY_TOLERANCE = 0.10


def http_client(server: ServerProcess) -> httpx.AsyncClient:
    # The client lets go of an idle connection after 2 s, before uvicorn closes it (after 5 s): a request sent on
    # a connection at the moment the server closes it fails on the wire (the keep-alive race every HTTP client
    # has), which would be counted against the server. Idle spells happen between the phases.
    return httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(keepalive_expiry=2.0))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))] if ordered else float("nan")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def small_pngs(count: int, seed: int) -> list[bytes]:
    """64×64 PNGs of random pixels, some carrying A1111-style parameters (kept and served by /metadata)."""
    rng = random.Random(seed)
    found = []
    for i in range(count):
        info = PngImagePlugin.PngInfo()
        if i % 2:
            info.add_text("parameters", f"load test {i}\nSteps: 4, Seed: {i}")
        out = io.BytesIO()
        Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(out, format="PNG", pnginfo=info)
        found.append(out.getvalue())
    return found


@dataclass
class Stats:
    """What one phase did: requests per action, read latencies, and everything that went wrong."""

    counts: Counter = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    expected_404: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(self.counts.values())

    def reads(self) -> list[float]:
        return [ms for kind in READS for ms in self.latencies_ms.get(kind, [])]


@dataclass
class Shared:
    """What the clients know together, and what the checks compare with the server's state."""

    pool: list[str] = field(default_factory=list)  # image names anyone may read
    uploaded: set[str] = field(default_factory=set)  # 201 received
    deleting: set[str] = field(default_factory=set)  # delete sent: a 404 for these is expected from now on
    deleted: set[str] = field(default_factory=set)  # 204 received
    sessions: set[str] = field(default_factory=set)  # invoked (202 received)
    created_seq: dict[str, int] = field(default_factory=dict)  # image_created on the WebSocket
    deleted_seq: dict[str, int] = field(default_factory=dict)  # image_deleted on the WebSocket
    ws_events: int = 0
    ws_error: str | None = None


@dataclass
class LoadReport:
    clients: int
    seconds: float
    stats: Stats
    shared: Shared
    rows: set[str]
    session_status: Counter
    rss_before_mib: float
    rss_after_mib: float

    @property
    def memory_change(self) -> float:
        return self.rss_after_mib / self.rss_before_mib - 1

    def problems(self) -> list[str]:
        s = self.shared
        found = list(self.stats.errors[:20])
        if len(self.stats.errors) > 20:
            found.append(f"... and {len(self.stats.errors) - 20} more errors")
        if s.ws_error:
            found.append(f"WebSocket: {s.ws_error}")
        lost = s.uploaded - s.deleted - self.rows
        if lost:
            found.append(f"{len(lost)} acknowledged uploads are not listed: {sorted(lost)[:5]}")
        if s.deleted & self.rows:
            found.append(f"deleted images still listed: {sorted(s.deleted & self.rows)[:5]}")
        unmatched = [
            name for name, seq in s.created_seq.items() if name not in self.rows and s.deleted_seq.get(name, -1) < seq
        ]
        if unmatched:
            found.append(
                f"{len(unmatched)} image_created events match no row and no later image_deleted: {unmatched[:5]}"
            )
        unannounced = s.uploaded - set(s.created_seq)
        if unannounced:
            found.append(f"{len(unannounced)} acknowledged uploads never announced by image_created")
        unknown = self.rows - set(s.created_seq)
        if unknown:
            found.append(f"{len(unknown)} listed images were never announced: {sorted(unknown)[:5]}")
        if set(self.session_status) - {"completed"}:
            found.append(f"sessions did not all complete: {dict(self.session_status)}")
        if self.memory_change > MEMORY_TOLERANCE:
            found.append(
                f"server memory grew {self.memory_change:+.1%} ({self.rss_before_mib:.0f} -> "
                f"{self.rss_after_mib:.0f} MiB), more than {MEMORY_TOLERANCE:.0%}"
            )
        return found

    def summary(self) -> str:
        st, s = self.stats, self.shared
        reads = st.reads()
        lines = [
            f"{self.clients} clients for {self.seconds:.0f} s: {st.requests} requests ({st.requests / self.seconds:.0f}/s), "
            f"{len(st.errors)} errors, {st.expected_404} expected 404s (image deleted by another client)",
            "  " + ", ".join(f"{kind} {st.counts[kind]}" for kind in sorted(st.counts)),
            f"  reads: p50 {percentile(reads, 50):.1f} ms, p99 {percentile(reads, 99):.1f} ms over {len(reads)}",
        ]
        for kind in READS:
            values = st.latencies_ms.get(kind, [])
            if values:
                lines.append(
                    f"    {kind:<15} p50 {percentile(values, 50):7.1f} ms  p99 {percentile(values, 99):7.1f} ms  n={len(values)}"
                )
        lines += [
            f"  uploads acknowledged {len(s.uploaded)}, deleted {len(s.deleted)}, sessions {len(s.sessions)} "
            f"({dict(self.session_status)}), rows at the end {len(self.rows)}, WebSocket events {s.ws_events}",
            f"  server RSS {self.rss_before_mib:.0f} MiB before, {self.rss_after_mib:.0f} MiB after "
            f"({self.memory_change:+.1%})",
        ]
        return "\n".join(lines)


class Client:
    def __init__(self, number: int, server: ServerProcess, shared: Shared, pngs: list[bytes], seed: int) -> None:
        self.number = number
        self.shared = shared
        self.pngs = pngs
        self.rng = random.Random(seed * 1000 + number)
        self.http = http_client(server)
        self.mine: list[str] = []  # uploads of this client not yet deleted
        self.session: str | None = None  # its session in the queue, if any
        self.stats = Stats()

    async def run(self, until: float) -> None:
        actions, weights = list(MIX), list(MIX.values())
        while time.monotonic() < until:
            action = self.rng.choices(actions, weights)[0]
            try:
                await getattr(self, f"do_{action}")()
            except httpx.TransportError as exc:
                self.stats.errors.append(f"{action}: {type(exc).__name__}: {exc}")

    async def request(self, kind: str, method: str, url: str, ok: tuple[int, ...], name: str | None = None, **kw):
        started = time.perf_counter()
        response = await self.http.request(method, url, **kw)
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.stats.counts[kind] += 1
        if kind in READS:
            self.stats.latencies_ms.setdefault(kind, []).append(elapsed_ms)
        if response.status_code in ok:
            return response
        if response.status_code == 404 and name is not None and name in self.shared.deleting:
            self.stats.expected_404 += 1
            return None
        self.stats.errors.append(f"{method} {url} -> {response.status_code}: {response.text[:200]}")
        return None

    def any_image(self) -> str | None:
        return self.rng.choice(self.shared.pool) if self.shared.pool else None

    async def do_upload(self) -> None:
        files = {"file": ("load.png", self.rng.choice(self.pngs), "image/png")}
        response = await self.request("upload", "POST", "/api/v1/images/upload", (201,), files=files)
        if response is not None:
            name = response.json()["image_name"]
            self.shared.uploaded.add(name)
            self.shared.pool.append(name)
            self.mine.append(name)

    async def do_list(self) -> None:
        params: dict[str, Any] = {"limit": self.rng.choice((10, 50, 100)), "offset": self.rng.choice((0, 0, 0, 20))}
        if self.rng.random() < 0.3:
            params["categories"] = self.rng.choice(("user", "general"))
        response = await self.request("list", "GET", "/api/v1/images/", (200,), params=params)
        if response is not None:
            page = response.json()
            if not isinstance(page.get("items"), list) or page["total"] < len(page["items"]):
                self.stats.errors.append(f"GET /api/v1/images/ answered a malformed page: {str(page)[:200]}")

    async def read(self, kind: str, suffix: str) -> None:
        name = self.any_image()
        if name is not None:
            response = await self.request(kind, "GET", f"/api/v1/images/{name}{suffix}", (200,), name=name)
            if response is not None and kind == "thumbnail" and response.headers["content-type"] != "image/webp":
                self.stats.errors.append(f"thumbnail of {name} is {response.headers['content-type']}")

    async def do_dto(self) -> None:
        await self.read("dto", "")

    async def do_metadata(self) -> None:
        await self.read("metadata", "/metadata")

    async def do_thumbnail(self) -> None:
        await self.read("thumbnail", "/thumbnail")

    async def do_full(self) -> None:
        await self.read("full", "/full")

    async def do_delete(self) -> None:
        if not self.mine:
            return await self.do_upload()
        name = self.mine.pop(self.rng.randrange(len(self.mine)))
        self.shared.deleting.add(name)
        response = await self.request("delete", "DELETE", f"/api/v1/images/{name}", (204,))
        if response is not None:
            self.shared.deleted.add(name)
            self.shared.pool.remove(name)

    async def do_session(self) -> None:
        if self.session is not None:
            # One session of its own in the queue at a time: otherwise look how it is doing.
            response = await self.request("session_status", "GET", f"/api/v1/sessions/{self.session}", (200,))
            status = response.json()["status"] if response is not None else "unknown"
            if status in ("failed", "canceled", "unknown"):
                self.stats.errors.append(f"session {self.session} is {status}")
            if status not in ("queued", "running"):
                self.session = None
            return
        graph = txt2img_graph(
            MODEL,
            f"load test {self.number}",
            seed=self.rng.randrange(2**31),
            width=64,
            height=64,
            steps=self.rng.randint(2, 4),
        )
        created = await self.request("session", "POST", "/api/v1/sessions/", (201,), json=graph)
        if created is None:
            return
        session_id = created.json()["id"]
        if await self.request("invoke", "PUT", f"/api/v1/sessions/{session_id}/invoke", (202,)) is not None:
            self.session = session_id
            self.shared.sessions.add(session_id)


class Watcher:
    """A WebSocket client subscribed to every session: records image events, answers `synced()` once every
    event emitted before it was received."""

    def __init__(self, server: ServerProcess, shared: Shared) -> None:
        self.server = server
        self.shared = shared
        self._pong = asyncio.Event()
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ws = await connect(self.server.ws_url, max_size=None, open_timeout=30)
        await self._ws.send(json.dumps({"type": "subscribe", "sessions": "*"}))
        self._task = asyncio.create_task(self._read())
        await self.synced()

    async def synced(self) -> None:
        self._pong.clear()
        await self._ws.send(json.dumps({"type": "ping"}))
        await asyncio.wait_for(self._pong.wait(), 60)

    async def _read(self) -> None:
        shared = self.shared
        try:
            async for message in self._ws:
                event = json.loads(message)
                shared.ws_events += 1
                kind = event["type"]
                if kind == "pong":
                    self._pong.set()
                elif kind == "image_created":
                    name = event["image"]["image_name"]
                    shared.created_seq[name] = event["seq"]
                    if event["image"]["session_id"] is not None:
                        shared.pool.append(name)  # generated images are read like any other
                elif kind == "image_deleted":
                    shared.deleted_seq[event["image_name"]] = event["seq"]
                elif kind == "resync_required":
                    shared.ws_error = "the server asked for a resync (events were dropped)"
        except Exception as exc:  # whatever ends the stream early is the finding
            shared.ws_error = f"{type(exc).__name__}: {exc}"
        else:
            if self._ws.close_code not in (None, 1000):
                shared.ws_error = f"closed by the server ({self._ws.close_code} {self._ws.close_reason})"

    async def close(self) -> None:
        await self._ws.close()
        if self._task is not None:
            await self._task


async def _phase(clients: list[Client], seconds: float) -> Stats:
    for client in clients:
        client.stats = Stats()
    until = time.monotonic() + seconds
    await asyncio.gather(*(client.run(until) for client in clients))
    total = Stats()
    for client in clients:
        total.counts.update(client.stats.counts)
        total.expected_404 += client.stats.expected_404
        total.errors += client.stats.errors
        for kind, values in client.stats.latencies_ms.items():
            total.latencies_ms.setdefault(kind, []).extend(values)
    return total


async def _idle(http: httpx.AsyncClient, watcher: Watcher) -> None:
    """Wait until the queue is empty and the WebSocket client has every event emitted so far."""
    async with asyncio.timeout(300):
        # Polled over HTTP: the server sends no single event that says "nothing left to run".
        while (await http.get("/api/v1/queue")).json() != {"running": None, "pending": []}:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await watcher.synced()


async def _all_rows(http: httpx.AsyncClient) -> set[str]:
    rows: set[str] = set()
    while True:
        page = (await http.get("/api/v1/images/", params={"offset": len(rows), "limit": 500})).json()
        rows.update(item["image_name"] for item in page["items"])
        if not page["items"] or len(rows) >= page["total"]:
            return rows


async def run_load(
    server: ServerProcess,
    model_location: Path,
    *,
    clients: int = 50,
    seconds: float = 10,
    warmup: float = 4,
    seed: int = 0,
) -> LoadReport:
    shared = Shared()
    pngs = small_pngs(16, seed)
    async with http_client(server) as http:
        imported = await http.post("/api/v1/models/import", json={"location": str(model_location)})
        if imported.status_code not in (201, 409):
            raise RuntimeError(f"the tiny model could not be imported: {imported.text}")
        watcher = Watcher(server, shared)
        await watcher.start()
        workers = [Client(n, server, shared, pngs, seed) for n in range(clients)]
        try:
            # Warm-up: the same mix, so that what is allocated once - torch and the model loaded, the thread
            # pools, SQLite's page cache, the event ring, the image cache filling - is in the baseline. What is
            # compared is what grows with the work done after it: memory that is never given back.
            warm = await _phase(workers, warmup)
            await _idle(http, watcher)
            before = rss_mib(server.pid)
            started = time.monotonic()
            stats = await _phase(workers, seconds)
            elapsed = time.monotonic() - started
            await _idle(http, watcher)
            after = rss_mib(server.pid)
            stats.errors = warm.errors + stats.errors
            rows = await _all_rows(http)
            status: Counter = Counter()
            for session_id in sorted(shared.sessions):
                status[(await http.get(f"/api/v1/sessions/{session_id}")).json()["status"]] += 1
        finally:
            await asyncio.gather(*(worker.http.aclose() for worker in workers))
            await watcher.close()
    return LoadReport(clients, elapsed, stats, shared, rows, status, before, after)
