"""The A1111-compatible API against our own session path, for the same generation, on one server.

A1111: one `POST /sdapi/v1/txt2img`, the PNG back as base64 in the answer. Ours: `POST /app/graph` with the same
settings, `POST /sessions`, `PUT /invoke`, wait for `session_complete` on the WebSocket, `GET` the PNG. The two
alternate run by run (node cache off, so each recomputes everything). Then 8 A1111 clients ask at once: every
one must get its image, and the queue must serve them in the order it took them.

Run:  .venv/bin/python bench/a1111.py [--size 128] [--steps 20] [--runs 7] [--clients 8]
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from common import median
from generate import PROMPT, SEED, Server, write_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-a1111-") as tmp:
        server = Server(Path(tmp) / "root", "cpu", "float32")
        try:
            model = server.register(write_model(Path(tmp) / "model", full_size=False))
            sdapi = httpx.Client(base_url=f"http://127.0.0.1:{server.port}/sdapi/v1", timeout=600)
            request = {
                "prompt": PROMPT,
                "seed": SEED,
                "width": args.size,
                "height": args.size,
                "steps": args.steps,
                "cfg_scale": 7.5,
                "sampler_name": "Euler",
            }
            settings = {
                "model": model,
                "prompt": PROMPT,
                "seed": SEED,
                "width": args.size,
                "height": args.size,
                "steps": args.steps,
                "cfg_scale": 7.5,
                "scheduler": "euler",
            }

            def a1111() -> float:
                start = time.perf_counter()
                response = sdapi.post("/txt2img", json=request)
                response.raise_for_status()
                assert base64.b64decode(response.json()["images"][0])[:4] == b"\x89PNG"
                return time.perf_counter() - start

            def native() -> float:
                start = time.perf_counter()
                graph = server.http.post("/app/graph", json=settings).json()
                _, _, path = server.run(graph)
                png = server.http.get(f"/images/{path.name}/full")
                png.raise_for_status()
                return time.perf_counter() - start

            a1111(), native()  # warm-up: models loaded, torch imported
            ours, theirs = [], []
            for _ in range(args.runs):
                ours.append(a1111())
                theirs.append(native())
            print(f"tiny model, {args.size}×{args.size}, {args.steps} steps, euler, {args.runs} runs each")
            print(
                f"/sdapi/v1/txt2img {median(ours):.3f} s | session path {median(theirs):.3f} s | "
                f"ratio {median(ours) / median(theirs):.3f} (best {min(ours) / min(theirs):.3f}); goal <= 1.05"
            )
            concurrent(sdapi, request, args.clients)
        finally:
            server.stop()


def concurrent(sdapi: httpx.Client, request: dict, clients: int) -> None:
    results: dict[int, dict] = {}
    finished: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(index: int) -> None:
        with httpx.Client(base_url=sdapi.base_url, timeout=600) as http:
            barrier.wait()
            response = http.post("/txt2img", json={**request, "seed": SEED + index})
            with lock:
                finished.append(index)
                results[index] = {"status": response.status_code, "body": response.json()}

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    errors = [i for i, r in results.items() if r["status"] != 200 or len(r["body"].get("images", [])) != 1]
    # The order the queue took them in: when each one's session was queued.
    import json

    queued = {}
    api = str(sdapi.base_url).rstrip("/").replace("/sdapi/v1", "/api/v1")
    for index, result in results.items():
        if result["status"] == 200:
            session_id = json.loads(result["body"]["info"])["session_ids"][0]
            queued[index] = httpx.get(f"{api}/sessions/{session_id}").json()["queued_at"]
    taken = sorted(queued, key=lambda i: queued[i])
    in_order = [i for i in finished if i in queued] == taken
    print(
        f"{clients} concurrent clients: {clients - len(errors)}/{clients} served, {len(errors)} errors, "
        f"{elapsed:.2f} s in all; answered in the order queued: {in_order}"
    )


if __name__ == "__main__":
    main()
