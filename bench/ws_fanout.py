"""WebSocket fan-out: emit-to-receive latency (p50/p99) and delivered events/s for 1, 10 and 100 clients on
loopback, for imagegraph's `/ws` and for a bare Starlette WebSocket broadcast (the floor) in the same run.
Also the cost of one `emit` on the producer side with 0, 1 and 100 clients, one of them never read.

Each server runs in its own process under uvicorn with the same options (`imagegraph serve`'s: no per-message
deflate); the clients run in this process (websockets' asyncio client, no compression) and stamp each frame on
arrival. Latency is arrival time minus the event's `timestamp`, which both servers stamp when the event is
emitted (same machine, same wall clock). Latency runs are paced so nothing queues; throughput runs emit in
bursts as fast as the server allows (imagegraph with a per-client queue big enough for the whole burst).
On a small machine the clients' process, not the server, often limits wall-clock events/s, so the script also
reports the CPU time the server's event-loop thread spent per delivered event, which other load barely moves.

Run: .venv/bin/python bench/ws_fanout.py [--clients 1 10 100]"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, median, percentile, wait_for_200

UVICORN_OPTIONS = {"log_level": "warning", "ws_per_message_deflate": False, "ws_ping_interval": None}


# --- the two servers (run with --serve) ---------------------------------------------------------------------


def serve_imagegraph(port: int, root: str) -> None:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from server.app import build_app
    from server.config import Settings
    from server.events import ImageDeleted

    settings = Settings(root=root, watch=False, port=port, ws_client_queue=1_000_000)
    app = build_app(settings)
    running: set[asyncio.Task] = set()

    async def emit(request: Request) -> JSONResponse:
        hub = request.app.state.services.events
        n, burst, pause = _emit_params(request)

        async def run() -> None:
            for start in range(0, n, burst):
                for _ in range(min(burst, n - start)):
                    hub.emit(ImageDeleted(image_name="bench.png"))
                await asyncio.sleep(pause)

        task = asyncio.create_task(run())
        running.add(task)
        task.add_done_callback(running.discard)
        return JSONResponse({"ok": True})

    app.router.routes.insert(0, Route("/bench/emit", emit))
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def serve_baseline(port: int) -> None:
    """What one would write with Starlette alone: a set of sockets, and a loop that awaits a send to each."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    from server.clock import utc_now

    clients: set[WebSocket] = set()
    running: set[asyncio.Task] = set()

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                if json.loads(await websocket.receive_text()).get("type") == "ping":
                    await websocket.send_text(json.dumps({"type": "pong"}))
        except WebSocketDisconnect:
            pass
        finally:
            clients.discard(websocket)

    async def emit(request: Request) -> JSONResponse:
        n, burst, pause = _emit_params(request)

        async def run() -> None:
            seq = 0
            for start in range(0, n, burst):
                for _ in range(min(burst, n - start)):
                    seq += 1
                    frame = json.dumps(
                        {"type": "image_deleted", "image_name": "bench.png", "seq": seq, "timestamp": utc_now()}
                    )
                    for client in list(clients):
                        await client.send_text(frame)
                await asyncio.sleep(pause)

        task = asyncio.create_task(run())
        running.add(task)
        task.add_done_callback(running.discard)
        return JSONResponse({"ok": True})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[Route("/health", health), Route("/bench/emit", emit), WebSocketRoute("/ws", ws)])
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def _emit_params(request) -> tuple[int, int, float]:
    query = request.query_params
    return int(query["n"]), int(query["burst"]), float(query["pause_ms"]) / 1000


# --- the clients ----------------------------------------------------------------------------------------------


async def run_clients(
    port: int, pid: int, clients: int, events: int, burst: int, pause_ms: float
) -> tuple[list[float], float, float]:
    """Connect, subscribe, trigger `events` emits and wait for all of them at every client. Returns the
    latencies (s), the delivered events per second, and the server's CPU time per delivered event (s)."""
    from websockets.asyncio.client import connect

    url = f"ws://127.0.0.1:{port}/ws"
    connections = [await connect(url, compression=None, ping_interval=None, max_queue=1024) for _ in range(clients)]
    try:
        for connection in connections:
            await connection.send('{"type": "subscribe", "sessions": "*"}')
            await connection.send('{"type": "ping"}')
        for connection in connections:
            while json.loads(await connection.recv())["type"] != "pong":
                pass

        arrivals: list[list[tuple[float, str]]] = [[] for _ in connections]

        async def read(index: int) -> None:
            record = arrivals[index].append
            recv = connections[index].recv
            for _ in range(events):
                frame = await recv()
                record((time.time(), frame))

        readers = [asyncio.create_task(read(i)) for i in range(clients)]
        trigger = f"http://127.0.0.1:{port}/bench/emit?n={events}&burst={burst}&pause_ms={pause_ms}"
        cpu_before = cpu_seconds(pid)
        await asyncio.to_thread(urllib.request.urlopen, trigger)
        await asyncio.wait_for(asyncio.gather(*readers), timeout=600)
        cpu = cpu_seconds(pid) - cpu_before
    finally:
        for connection in connections:
            await connection.close()

    latencies = []
    first_emit = float("inf")
    last_arrival = 0.0
    for per_client in arrivals:
        seqs = []
        for arrived, frame in per_client:
            message = json.loads(frame)
            emitted = datetime.fromisoformat(message["timestamp"]).timestamp()
            latencies.append(arrived - emitted)
            first_emit = min(first_emit, emitted)
            last_arrival = max(last_arrival, arrived)
            seqs.append(message["seq"])
        assert seqs == list(range(seqs[0], seqs[0] + events)), "events lost or out of order"
    return latencies, clients * events / (last_arrival - first_emit), cpu / (clients * events)


def cpu_seconds(pid: int) -> float:
    """CPU time the server's main thread (its event loop) has run so far, in ns resolution: unlike wall time it
    does not depend on what else the machine is doing."""
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9


def start(kind: str, port: int, root: str) -> subprocess.Popen:
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port), "--root", root]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    wait_for_200(f"http://127.0.0.1:{port}/health")
    return process


def measure(kind: str, client_counts: list[int], root: str) -> dict[int, dict[str, float]]:
    port = free_port()
    process = start(kind, port, root)
    results = {}
    try:
        for clients in client_counts:
            # Paced: one event every `pause` ms, spaced so the deliveries of one fit well inside the gap.
            pause_ms = 2.0 if clients == 1 else 5.0 if clients <= 10 else 20.0
            latencies, _, paced_cpu = asyncio.run(run_clients(port, process.pid, clients, 300, 1, pause_ms))
            # Bursts: as fast as the server delivers.
            total = {1: 20_000, 10: 4_000}.get(clients, 1_000)
            _, rate, cpu = asyncio.run(run_clients(port, process.pid, clients, total, 100, 0.0))
            results[clients] = {
                "p50_ms": median(latencies) * 1000,
                "p99_ms": percentile(latencies, 99) * 1000,
                "events_s": rate,
                "cpu_us": cpu * 1e6,
                "paced_cpu_us": paced_cpu * 1e6,
            }
    finally:
        process.terminate()
        process.wait(timeout=30)
    return results


def emit_cost() -> dict[str, float]:
    """Microseconds per `emit` on the loop thread: nobody connected, one stalled client, 100 clients (one stalled)."""
    from server.events import ImageDeleted
    from server.ws.hub import EventHub

    costs = {}
    for label, count in (("0 clients", 0), ("1 stalled client", 1), ("100 clients", 100)):
        hub = EventHub(client_queue=1_000_000)
        subscribers = [hub.connect() for _ in range(count)]
        for subscriber in subscribers:
            hub.subscribe(subscriber, "*")
        n = 20_000
        started = time.perf_counter()
        for _ in range(n):
            hub.emit(ImageDeleted(image_name="bench.png"))
            for subscriber in subscribers[1:]:  # the others keep up; the first is never read
                subscriber.next_frame()
        costs[label] = (time.perf_counter() - started) / n * 1e6
        if count:
            assert subscribers[0].queued == n
    return costs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--serve", choices=["imagegraph", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "imagegraph":
        serve_imagegraph(args.port, args.root)
        return
    if args.serve == "baseline":
        serve_baseline(args.port)
        return

    with tempfile.TemporaryDirectory() as root:
        ours = measure("imagegraph", args.clients, root)
        bare = measure("baseline", args.clients, root)
    print(
        "clients | imagegraph p50 / p99 ms | baseline p50 / p99 ms | imagegraph events/s | baseline events/s "
        "| ratio | server loop CPU µs per delivered event, paced and burst: imagegraph / baseline"
    )
    for clients in args.clients:
        o, b = ours[clients], bare[clients]
        print(
            f"{clients:7d} | {o['p50_ms']:8.2f} / {o['p99_ms']:6.2f}   | {b['p50_ms']:8.2f} / {b['p99_ms']:6.2f}   "
            f"| {o['events_s']:19,.0f} | {b['events_s']:17,.0f} | {o['events_s'] / b['events_s']:.2f}x "
            f"| {o['paced_cpu_us']:.1f}, {o['cpu_us']:.1f} / {b['paced_cpu_us']:.1f}, {b['cpu_us']:.1f}"
        )
    if 100 in ours:
        p99, ratio = ours[100]["p99_ms"], ours[100]["events_s"] / bare[100]["events_s"]
        print(f"goal at 100 clients: p99 {p99:.2f} ms (< 5 ms), throughput {ratio:.2f}x baseline (>= 0.8x)")
    costs = emit_cost()
    print("emit cost on the producer: " + ", ".join(f"{label} {us:.1f} µs" for label, us in costs.items()))


if __name__ == "__main__":
    main()
