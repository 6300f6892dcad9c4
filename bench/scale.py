"""Scale-out on PostgreSQL against the embedded SQLite path, in the same run (docs/api.md §Workers):

1. claim latency: queued → started (the session's own `queued_at` and `started_at`) of a session invoked on an
   idle queue, p50/p99 over 20 sessions run one after another: PostgreSQL (an API-only server and one
   `imagegraph worker`, the worker claims through LISTEN/NOTIFY and SKIP LOCKED) vs one SQLite server.
2. events/s to 100 WebSocket clients: 2,000 events emitted by one process; on PostgreSQL they go through the
   events table and NOTIFY to two servers with 50 clients each, on SQLite one server with 100 clients. The
   figure is events per second that every client received (from the first emit to the last arrival).
3. throughput of 1 vs 2 workers: 16 tiny sessions (64², 4 steps) from one API-only server.

Processes are real (`python -m server serve|worker`); PostgreSQL is a cluster of its own in a temp folder
(tests/postgres.py). On this 2-core machine two CPU workers share two cores with the servers and the database,
so the 1-vs-2 figure says what the queue costs and allows here, not what N GPUs give.

Run: .venv/bin/python bench/scale.py"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, median, percentile, wait_for_200

UVICORN_OPTIONS = {"log_level": "warning", "ws_per_message_deflate": False, "ws_ping_interval": None}
MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}


# --- a server with a route that emits events (run with --serve) -----------------------------------------------


def serve(port: int, root: str, database: str) -> None:
    import uvicorn
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from server.app import build_app
    from server.config import Settings
    from server.events import ImageDeleted

    settings = Settings(
        root=root, watch=False, port=port, ws_client_queue=1_000_000, database=database, run_sessions=False
    )
    app = build_app(settings)

    async def emit(request: Request) -> JSONResponse:
        event_log = request.app.state.event_log
        emit = event_log.emit if event_log is not None else request.app.state.services.events.emit
        for _ in range(int(request.query_params["n"])):
            emit(ImageDeleted(image_name="bench.png"))
        return JSONResponse({"ok": True})

    app.router.routes.insert(0, Route("/bench/emit", emit, methods=["POST"]))
    uvicorn.run(app, host="127.0.0.1", port=port, **UVICORN_OPTIONS)


def start_bench_server(root: Path, database: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), str(root), database],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_200(f"http://127.0.0.1:{port}/health", timeout=120)
    return process, port


async def fan_out(ports: list[int], clients: int, events: int) -> float:
    """Events per second every client received."""
    import httpx
    from websockets.asyncio.client import connect

    connections = []
    for index in range(clients):
        ws = await connect(f"ws://127.0.0.1:{ports[index % len(ports)]}/ws", compression=None, ping_interval=None)
        await ws.send(json.dumps({"type": "subscribe", "sessions": "*"}))
        await ws.send(json.dumps({"type": "ping"}))
        while json.loads(await ws.recv())["type"] != "pong":
            pass
        connections.append(ws)

    async def drain(ws) -> None:
        seen = 0
        while seen < events:
            if json.loads(await ws.recv())["type"] == "image_deleted":
                seen += 1

    readers = [asyncio.create_task(drain(ws)) for ws in connections]
    started = time.perf_counter()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"http://127.0.0.1:{ports[0]}/bench/emit", params={"n": events})
        response.raise_for_status()
    await asyncio.wait_for(asyncio.gather(*readers), 300)
    elapsed = time.perf_counter() - started
    for ws in connections:
        await ws.close()
    return events / elapsed


def events_per_second(folder: Path, database: str, servers: int) -> float:
    processes = [start_bench_server(folder / f"events-{servers}", database) for _ in range(servers)]
    try:
        return asyncio.run(fan_out([port for _, port in processes], 100, 2_000))
    finally:
        for process, _ in processes:
            process.terminate()
            process.wait(timeout=30)


# --- sessions through real serve / worker processes ------------------------------------------------------------


def _stamp(text: str) -> datetime:
    return datetime.fromisoformat(text)


def claim_latencies(server: Any, count: int) -> list[float]:
    from server.graph.standard import txt2img_graph

    latencies = []
    for seed in range(count):
        graph = txt2img_graph(MODEL, "a lighthouse", width=64, height=64, steps=1, seed=seed)
        session_id = server.http.post("/api/v1/sessions/", json=graph).json()["id"]
        server.http.put(f"/api/v1/sessions/{session_id}/invoke").raise_for_status()
        url = f"/api/v1/sessions/{session_id}"
        server.wait_until(lambda url=url: server.http.get(url).json()["status"] == "completed")
        done = server.http.get(url).json()
        latencies.append((_stamp(done["started_at"]) - _stamp(done["queued_at"])).total_seconds())
    return latencies


def throughput(server: Any, count: int) -> float:
    """Sessions per second, first invoke to last completion."""
    from server.graph.standard import txt2img_graph

    ids = []
    for seed in range(count):
        graph = txt2img_graph(MODEL, "a lighthouse", width=64, height=64, steps=4, seed=seed)
        ids.append(server.http.post("/api/v1/sessions/", json=graph).json()["id"])
    started = time.perf_counter()
    for session_id in ids:
        server.http.put(f"/api/v1/sessions/{session_id}/invoke").raise_for_status()
    server.wait_until(
        lambda: all(server.http.get(f"/api/v1/sessions/{s}").json()["status"] == "completed" for s in ids),
        timeout=600,
    )
    return count / (time.perf_counter() - started)


def main() -> None:
    from server.models.tiny import write_tiny_model
    from tests.postgres import start_cluster
    from tests.reliability.process import ServerProcess
    from tests.scale.workers import WorkerProcess

    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=16)
    args = parser.parse_args()
    cluster = start_cluster()
    folder = Path(tempfile.mkdtemp(prefix="imagegraph-scale-"))
    results: dict[str, Any] = {}
    try:
        model = write_tiny_model(folder / "tiny", "diffusers")

        def farm_server(root: Path, database: str, worker: bool) -> ServerProcess:
            extra = ["--database", database] if database else []
            if database and not worker:
                extra.append("--no-worker")
            server = ServerProcess(root, folder / "servers.log", args=extra)
            server.http.post("/api/v1/models/import", json={"location": str(model)}).raise_for_status()
            return server

        # 1. claim latency
        with farm_server(folder / "sqlite-root", "", worker=True) as server:
            claim_latencies(server, 2)  # warm: the model is loaded
            results["claim_sqlite"] = claim_latencies(server, 20)
        database = cluster.fresh_database()
        with farm_server(folder / "pg-root", database, worker=False) as server:
            worker = WorkerProcess(database, folder / "pg-root", "w1", folder / "w1.log")
            try:
                claim_latencies(server, 2)
                results["claim_pg"] = claim_latencies(server, 20)
                # 3. throughput, 1 worker then 2 (each with torch's default threads: one per core)
                results["one_worker"] = throughput(server, args.sessions)
                second = WorkerProcess(database, folder / "pg-root", "w2", folder / "w2.log")
                try:
                    claim_latencies(server, 2)  # both warm
                    results["two_workers"] = throughput(server, args.sessions)
                finally:
                    second.stop()
            finally:
                worker.stop()
            # 2 workers with one thread each: the two cores split between them instead of oversubscribed
            single = {"OMP_NUM_THREADS": "1"}
            pair = [
                WorkerProcess(database, folder / "pg-root", name, folder / f"{name}.log", env=single)
                for name in ("t1", "t2")
            ]
            try:
                claim_latencies(server, 2)
                results["two_workers_one_thread"] = throughput(server, args.sessions)
            finally:
                for item in pair:
                    item.stop()
        # 2. events to 100 clients
        results["events_sqlite"] = events_per_second(folder, "", servers=1)
        results["events_pg"] = events_per_second(folder, cluster.fresh_database(), servers=2)
    finally:
        cluster.remove()

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.1f} ms"

    print(
        f"claim latency, SQLite single process: p50 {ms(results['claim_sqlite'], 50)}, p99 {ms(results['claim_sqlite'], 99)}"
    )
    print(f"claim latency, PostgreSQL worker:     p50 {ms(results['claim_pg'], 50)}, p99 {ms(results['claim_pg'], 99)}")
    print(f"events/s to 100 clients, SQLite one server:        {results['events_sqlite']:.0f}")
    print(f"events/s to 100 clients, PostgreSQL two servers:   {results['events_pg']:.0f}")
    one = results["one_worker"]
    print(
        f"throughput, {args.sessions} sessions 64² 4 steps: 1 worker {one:.2f}/s, "
        f"2 workers {results['two_workers']:.2f}/s ({results['two_workers'] / one:.2f}×), "
        f"2 workers of 1 thread {results['two_workers_one_thread']:.2f}/s ({results['two_workers_one_thread'] / one:.2f}×)"
    )
    print(
        f"median claim latency ratio PostgreSQL/SQLite: {median(results['claim_pg']) / median(results['claim_sqlite']):.2f}×"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    else:
        main()
