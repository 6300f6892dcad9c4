"""Images, in one run against one server process:

(a) `/full` and `/thumbnail` requests/s (wrk, 16 connections) vs Starlette's own `StaticFiles` serving the same
    400 KB PNG from the same process (mounted at /bench-static for this run only). Goal: >= 3x StaticFiles.
(b) `GET /images/?limit=100` latency with 100,000 records (goal: p50 < 10 ms), for several filters.
(c) `/metadata`: msgspec raw path vs decoding the whole session with `json` and building objects (ratio),
    and the route's own latency.
(d) uploads of a 512x512 noise PNG: one upload's p50 and uploads/s with 2 and 8 clients, against a floor
    measured the same way in alternating rounds (a bare Starlette route that writes the received body to a
    file with one fsync: no decoding, checks, thumbnail or SQL, so a yardstick, not a target).
    Goals: p50 <= 8x the floor's, 2 clients >= 70 uploads/s.
(e) PNG encode time and size at zlib levels 0-9 for a photo-like image and noise (the conversions' level).
Also: start-up reconciliation time over the 100,000 records and 200,000 files.

Run: .venv/bin/python bench/images.py [--seconds 10] [--records 100000] [--only uploads|png-levels|...] [--rounds 5]
(parts a-c need `wrk`: apt-get install wrk)"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import io
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, median, percentile, wait_for_200

from server.config import Settings
from server.db_sqlite import SQLiteDatabase
from server.images.embedded import session_graph_raw
from server.images.files import ImageFiles, encode_png
from server.images.service import ImageService

SERVER = """
import sys, uvicorn
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from server.app import build_app
from server.config import Settings

settings = Settings(root=sys.argv[1], port=int(sys.argv[2]), watch=False)
settings.create_layout()
app = build_app(settings)
# The baseline: Starlette's StaticFiles over the very same folder, behind the same middleware, in this process.
app.router.routes.insert(0, Mount("/bench-static", StaticFiles(directory=settings.images_dir)))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

FLOOR = """
import asyncio, os, sys, uuid, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

folder = sys.argv[1]


def write(data):
    with open(os.path.join(folder, uuid.uuid4().hex), "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


async def upload(request):
    await asyncio.to_thread(write, await request.body())
    return JSONResponse({"stored": True}, status_code=201)


async def health(request):
    return JSONResponse({"status": "ok"})


routes = [Route("/upload", upload, methods=["POST"]), Route("/health", health)]
uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""

GRAPH = {
    "id": "txt2img",
    "nodes": {
        "model": {
            "id": "model",
            "type": "main_model_loader",
            "model": {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"},
        },
        "pos": {"id": "pos", "type": "compel", "prompt": "a lighthouse at dusk, dramatic sky, (oil painting)1.2"},
        "neg": {"id": "neg", "type": "compel", "prompt": "blurry, lowres"},
        "noise": {"id": "noise", "type": "noise", "seed": 42, "width": 512, "height": 512},
        "denoise": {"id": "denoise", "type": "denoise_latents", "steps": 30, "cfg_scale": 7.5, "scheduler": "euler"},
        "decode": {"id": "decode", "type": "l2i"},
        "meta": {
            "id": "meta",
            "type": "metadata_accumulator",
            "generation_mode": "txt2img",
            "positive_prompt": "a lighthouse at dusk, dramatic sky, (oil painting)1.2",
            "negative_prompt": "blurry, lowres",
            "seed": 42,
            "width": 512,
            "height": 512,
            "steps": 30,
            "cfg_scale": 7.5,
            "scheduler": "euler",
            "model": {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"},
        },
    },
    "edges": [
        {"source": {"node_id": s, "field": sf}, "destination": {"node_id": d, "field": df}}
        for s, sf, d, df in (
            ("model", "clip", "pos", "clip"),
            ("model", "clip", "neg", "clip"),
            ("model", "unet", "denoise", "unet"),
            ("pos", "conditioning", "denoise", "positive_conditioning"),
            ("neg", "conditioning", "denoise", "negative_conditioning"),
            ("noise", "noise", "denoise", "noise"),
            ("denoise", "latents", "decode", "latents"),
            ("model", "vae", "decode", "vae"),
            ("meta", "metadata", "decode", "metadata"),
        )
    ],
}


def session_json(session_id: str, images: int = 4) -> str:
    """A session as the graph engine stores it: graph, plus executed nodes, results and timestamps."""
    results = {
        f"decode-{i}": {
            "type": "image_output",
            "image": {"image_name": f"{uuid.uuid4()}.png"},
            "width": 512,
            "height": 512,
        }
        for i in range(images)
    }
    results.update(
        {
            f"pos-{i}": {"type": "conditioning_output", "conditioning": {"conditioning_name": f"c-{i}"}}
            for i in range(images)
        }
    )
    return json.dumps(
        {
            "id": session_id,
            "graph": GRAPH,
            "status": "completed",
            "executed": list(results),
            "results": results,
            "errors": {},
            "created_at": "2026-11-01T00:00:00.000000+00:00",
            "updated_at": "2026-11-01T00:00:05.000000+00:00",
        }
    )


def photo_like(side: int = 512) -> Image.Image:
    """Smooth shapes at four scales plus a little sensor noise, made the same in every run: it compresses about
    like a photograph (zlib levels 1-9 take it to 64-56% of its raw size, a real 512x512 photograph to 66-61%)."""
    rng = np.random.default_rng(0)
    pixels = np.full((side, side, 3), 128.0)
    for cells, weight in ((4, 60), (16, 40), (64, 25), (256, 12)):
        coarse = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        layer = np.asarray(Image.fromarray(coarse).resize((side, side), Image.Resampling.BICUBIC), dtype=float)
        pixels += (layer - 128) / 128 * weight
    pixels += rng.normal(0, 2.5, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def noise_image(side: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8))


def noise_png(side: int) -> bytes:
    out = io.BytesIO()
    noise_image(side).save(out, format="PNG")
    return out.getvalue()


# Seeding 100,000 records (with files, so start-up reconciliation keeps them)


def seed(settings: Settings, count: int) -> tuple[list[str], str, str]:
    """Insert `count` image records and hard links for their files; return board ids, a session id and the
    name of an image generated by that session."""

    async def migrate() -> None:
        db = SQLiteDatabase(settings.db_path)
        await db.open()
        await db.close()

    settings.create_layout()
    asyncio.run(migrate())
    files = ImageFiles(settings.images_dir, settings.thumbnails_dir)
    template = files.images_dir / ".template.png"
    files.write(f"{uuid.uuid4()}.png", Image.new("RGB", (64, 64), "gray"), {})
    png = next(settings.images_dir.glob("*.png"))
    thumb = next(settings.thumbnails_dir.glob("*.webp"))
    png.rename(template)
    thumb_template = settings.thumbnails_dir / ".template.webp"
    thumb.rename(thumb_template)

    rng = random.Random(0)
    boards = [str(uuid.uuid4()) for _ in range(20)]
    session_id = str(uuid.uuid4())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = []
    for i in range(count):
        name = f"{uuid.UUID(int=rng.getrandbits(128), version=4)}.png"
        created = (start + timedelta(seconds=i * 7)).isoformat(timespec="microseconds")
        category = rng.choices(["general", "user", "mask", "control", "other"], [80, 10, 5, 4, 1])[0]
        intermediate = int(rng.random() < 0.05)
        board = rng.choice(boards) if rng.random() < 0.3 else None
        starred = int(rng.random() < 0.02)
        rows.append(
            (
                name,
                category,
                512,
                512,
                created,
                created,
                intermediate,
                session_id if i % 1000 == 0 else None,
                "decode",
                board,
                starred,
            )
        )
    now = datetime.now(UTC).isoformat(timespec="microseconds")
    conn = sqlite3.connect(settings.db_path)
    with conn:
        conn.executemany(
            "INSERT INTO boards (board_id, board_name, created_at, updated_at) VALUES (?, ?, ?, ?)",
            [(b, f"board {i}", now, now) for i, b in enumerate(boards)],
        )
        conn.executemany(
            "INSERT INTO images (image_name, image_category, width, height, created_at, updated_at, is_intermediate, "
            "session_id, node_id, board_id, starred) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.executemany(
            "INSERT INTO image_metadata (image_name, metadata) VALUES (?, ?)",
            [(row[0], json.dumps(GRAPH["nodes"]["meta"])) for row in rows if row[7]],
        )
        conn.execute(
            "INSERT INTO sessions (id, data, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (session_id, session_json(session_id), now, now),
        )
    conn.close()
    # Hard links make 200,000 real files cheaply; a fresh source every 30,000 stays under ext4's link limit.
    for start in range(0, len(rows), 30_000):
        png_source = template.with_name(f".template-{start}.png")
        thumb_source = thumb_template.with_name(f".template-{start}.webp")
        shutil.copyfile(template, png_source)
        shutil.copyfile(thumb_template, thumb_source)
        for row in rows[start : start + 30_000]:
            os.link(png_source, settings.images_dir / row[0])
            os.link(thumb_source, settings.thumbnails_dir / (row[0][:-4] + ".webp"))
        png_source.unlink()
        thumb_source.unlink()
    template.unlink()
    thumb_template.unlink()
    return boards, session_id, rows[0][0]


def time_reconcile(settings: Settings) -> float:
    async def run() -> float:
        db = SQLiteDatabase(settings.db_path)
        await db.open()
        service = ImageService(settings, db, lambda event: None)
        started = time.perf_counter()
        report = await service.reconcile()
        elapsed = time.perf_counter() - started
        await db.close()
        assert not (report.files_removed or report.records_removed or report.thumbnails_rebuilt), report
        return elapsed

    return asyncio.run(run())


# (a) serving files


def wrk(url: str, seconds: int, connections: int = 16) -> float:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url], capture_output=True, text=True, check=True
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if match is None or non2xx is not None:
        raise RuntimeError(f"wrk failed on {url}:\n{out}")
    return float(match.group(1))


def bench_files(base: str, name: str, seconds: int) -> None:
    urls = {
        "StaticFiles (baseline)": f"{base}/bench-static/{name}",
        "/full": f"{base}/api/v1/images/{name}/full",
        "/thumbnail": f"{base}/api/v1/images/{name}/thumbnail",
    }
    for url in urls.values():
        assert httpx.get(url).status_code == 200, url
        wrk(url, 1)  # warm-up
    rates = {label: wrk(url, seconds) for label, url in urls.items()}
    base_rate = rates["StaticFiles (baseline)"]
    size = len(httpx.get(urls["/full"]).content)
    print(f"(a) files, wrk -t2 -c16 -d{seconds}s, {size / 1000:.0f} KB PNG:")
    for label, rate in rates.items():
        print(f"    {label:24s} {rate:8.0f} req/s   {rate / base_rate:5.2f}x StaticFiles")


# (b) listing


def latencies(client: httpx.Client, url: str, params: dict, runs: int) -> list[float]:
    client.get(url, params=params).raise_for_status()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        response = client.get(url, params=params)
        times.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return times


def bench_list(base: str, boards: list[str], runs: int) -> None:
    queries = {
        "newest 100": {"limit": 100},
        "gallery (general, not intermediate)": {"limit": 100, "categories": "general", "is_intermediate": "false"},
        "general+user, no board": {"limit": 100, "categories": ["general", "user"], "board_id": "none"},
        "one board": {"limit": 100, "board_id": boards[0]},
        "starred": {"limit": 100, "starred": "true"},
        "offset 50,000": {"limit": 100, "offset": 50_000},
        "oldest 100": {"limit": 100, "order": "oldest"},
    }
    print(f"(b) GET /api/v1/images/?limit=100 over HTTP ({runs} requests each):")
    with httpx.Client() as client:
        for label, params in queries.items():
            total = client.get(f"{base}/api/v1/images/", params=params).json()["total"]
            times = latencies(client, f"{base}/api/v1/images/", params, runs)
            print(
                f"    {label:38s} p50 {median(times) * 1000:6.2f} ms  p95 {percentile(times, 95) * 1000:6.2f} ms"
                f"  (total {total:,})"
            )


# (c) metadata


def bench_metadata(base: str, session_id: str, image_name: str, runs: int) -> None:
    raw = session_json(session_id)

    def naive() -> str:
        # What a straightforward handler does: decode everything, build objects, filter, encode again.
        session = json.loads(raw)
        graph = session["graph"]
        accumulators = {nid for nid, node in graph["nodes"].items() if node["type"] == "metadata_accumulator"}
        nodes = {nid: dict(node) for nid, node in graph["nodes"].items() if nid not in accumulators}
        edges = [
            {"source": dict(e["source"]), "destination": dict(e["destination"])}
            for e in graph["edges"]
            if e["source"]["node_id"] not in accumulators and e["destination"]["node_id"] not in accumulators
        ]
        return json.dumps({"id": graph["id"], "nodes": nodes, "edges": edges})

    assert json.loads(naive()) == json.loads(bytes(session_graph_raw(raw)))
    loops = 20_000

    def per_call(func) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(loops):
                func()
            best = min(best, (time.perf_counter() - started) / loops)
        return best

    fast, slow = per_call(lambda: session_graph_raw(raw)), per_call(naive)
    print(f"(c) /metadata graph from a {len(raw) / 1000:.1f} KB session row:")
    print(f"    msgspec raw path     {fast * 1e6:7.1f} µs")
    print(f"    json + objects       {slow * 1e6:7.1f} µs   ratio {slow / fast:.1f}x")
    with httpx.Client() as client:
        body = client.get(f"{base}/api/v1/images/{image_name}/metadata").json()
        assert body["graph"] and "meta" not in body["graph"]["nodes"], body
        times = latencies(client, f"{base}/api/v1/images/{image_name}/metadata", {}, runs)
    print(f"    GET /metadata over HTTP p50 {median(times) * 1000:.2f} ms")


# (d) uploads, against a floor


def multipart_body(data: bytes) -> tuple[bytes, dict[str, str]]:
    """One multipart body built once, so every client sends the same bytes and spends no time encoding them."""
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="noise.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), {
        "content-type": f"multipart/form-data; boundary={boundary}"
    }


class Uploader:
    """One keep-alive connection posting the same body again and again. http.client rather than httpx: the client
    shares the two cores with the server, and this costs half the CPU per request (1.0 vs 2.2 ms here)."""

    def __init__(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port)
        self.path, self.body, self.headers = parts.path, body, headers

    def post(self) -> float:
        started = time.perf_counter()
        self.connection.request("POST", self.path, body=self.body, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        elapsed = time.perf_counter() - started
        assert response.status == 201, text
        return elapsed

    def close(self) -> None:
        self.connection.close()


def sequential(url: str, body: bytes, headers: dict[str, str], count: int) -> list[float]:
    uploader = Uploader(url, body, headers)
    try:
        uploader.post()  # a warm connection, as a client that uploads several files has
        return [uploader.post() for _ in range(count)]
    finally:
        uploader.close()


def throughput(url: str, body: bytes, headers: dict[str, str], clients: int, per_client: int) -> float:
    """Uploads/s with `clients` connections each sending `per_client` uploads back to back."""
    uploaders = [Uploader(url, body, headers) for _ in range(clients)]
    try:
        for uploader in uploaders:
            uploader.post()
        start = threading.Barrier(clients + 1)

        def worker(uploader: Uploader) -> None:
            start.wait()
            for _ in range(per_client):
                uploader.post()

        threads = [threading.Thread(target=worker, args=(uploader,)) for uploader in uploaders]
        for thread in threads:
            thread.start()
        start.wait()
        started = time.perf_counter()
        for thread in threads:
            thread.join()
        return clients * per_client / (time.perf_counter() - started)
    finally:
        for uploader in uploaders:
            uploader.close()


def bench_uploads(base: str, floor_base: str, rounds: int, count: int) -> None:
    """Sequential p50 and 2- and 8-client throughput, ours and the floor's, in alternating rounds so that
    noise on a shared machine falls on both alike."""
    data = noise_png(512)
    body, headers = multipart_body(data)
    targets = {"floor": f"{floor_base}/upload", "imagegraph": f"{base}/api/v1/images/upload"}
    p50s: dict[str, list[float]] = {label: [] for label in targets}
    rates: dict[tuple[str, int], list[float]] = {(label, n): [] for label in targets for n in (2, 8)}
    for _ in range(rounds):
        for label, url in targets.items():
            p50s[label].append(median(sequential(url, body, headers, count)))
            for clients in (2, 8):
                rates[label, clients].append(throughput(url, body, headers, clients, max(2, count * 2 // clients)))

    def spread(values: list[float], scale: float = 1.0) -> str:
        return f"{median(values) * scale:6.1f} ({min(values) * scale:.1f}-{max(values) * scale:.1f})"

    print(
        f"(d) uploads of a 512x512 noise PNG ({len(data) / 1000:.0f} KB), {rounds} alternating rounds of {count} "
        "sequential uploads and 2 and 8 clients; median (min-max over rounds)"
    )
    print("    floor: a bare Starlette route writing the received body to a file with one fsync")
    print(f"    {'':12s} {'one upload p50 ms':>22s} {'2 clients /s':>22s} {'8 clients /s':>22s}")
    for label in targets:
        print(
            f"    {label:12s} {spread(p50s[label], 1000):>22s} {spread(rates[label, 2]):>22s} "
            f"{spread(rates[label, 8]):>22s}"
        )
    ratio = median(p50s["imagegraph"]) / median(p50s["floor"])
    per_round = [ours / floor for ours, floor in zip(p50s["imagegraph"], p50s["floor"], strict=True)]
    two = median(rates["imagegraph", 2])
    print(
        f"    p50 ratio to the floor {ratio:.1f}x (per round {min(per_round):.1f}-{max(per_round):.1f}x; goal <= 8x); "
        f"2 clients {two:.1f}/s (goal >= 70/s)"
    )


# (e) PNG compression levels, for the uploads that are converted (JPEG, WebP, PNGs not kept as sent)


def bench_png_levels(runs: int) -> None:
    """Encode time (CPU time of the encoding thread, so a busy machine does not inflate it) and size of a 512x512
    image at each zlib level, as `encode_png` writes it."""
    images = {"photo-like": photo_like(), "noise": noise_image(512)}
    print(f"(e) PNG encode of a 512x512 image per zlib level, median of {runs} (CPU ms, KB)")
    print(f"    {'level':>5s} " + " ".join(f"{label:>22s}" for label in images))
    for level in range(10):
        cells = []
        for image in images.values():
            times = []
            for _ in range(runs):
                started = time.thread_time()
                size = len(encode_png(image, {}, compress_level=level))
                times.append(time.thread_time() - started)
            cells.append(f"{median(times) * 1000:9.1f} ms {size / 1000:6.0f} KB")
        print(f"    {level:5d} " + " ".join(f"{cell:>22s}" for cell in cells))


def start_server(script: str, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", script, *args, str(port)], cwd=Path(__file__).resolve().parent.parent
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_200(f"{base}/health")
    except BaseException:
        process.terminate()
        raise
    return process, base


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


PARTS = ("files", "list", "metadata", "uploads", "png-levels")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=PARTS, action="append", help="run only these parts (repeatable)")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per URL")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=200, help="requests per list query")
    parser.add_argument("--rounds", type=int, default=5, help="alternating upload rounds (ours, the floor)")
    parser.add_argument("--uploads", type=int, default=20, help="sequential uploads per round")
    parser.add_argument("--levels-runs", type=int, default=9, help="encodes per PNG compression level")
    args = parser.parse_args()
    parts = set(args.only or PARTS)
    seeded = bool(parts & {"files", "list", "metadata"})
    if "files" in parts and shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    if parts == {"png-levels"}:
        bench_png_levels(args.levels_runs)
        return
    root = Path(tempfile.mkdtemp(prefix="imagegraph-bench-"))
    try:
        settings = Settings(root=str(root), watch=False)
        if seeded:
            started = time.perf_counter()
            boards, session_id, session_image = seed(settings, args.records)
            print(
                f"seeded {args.records:,} records and {2 * args.records:,} files in "
                f"{time.perf_counter() - started:.1f} s"
            )
            print(
                f"start-up reconciliation over them: {time_reconcile(settings):.2f} s (in the background after start)"
            )

        server, base = start_server(SERVER, str(root))
        try:
            if seeded:
                time.sleep(3)  # let the server's own background reconciliation finish
            if "files" in parts:
                response = httpx.post(
                    f"{base}/api/v1/images/upload", files={"file": ("big.png", noise_png(365), "image/png")}
                )
                response.raise_for_status()
                bench_files(base, response.json()["image_name"], args.seconds)
            if "list" in parts:
                bench_list(base, boards, args.runs)
            if "metadata" in parts:
                bench_metadata(base, session_id, session_image, args.runs)
            if "uploads" in parts:
                floor_dir = root / "floor"
                floor_dir.mkdir()
                floor, floor_base = start_server(FLOOR, str(floor_dir))
                try:
                    bench_uploads(base, floor_base, args.rounds, args.uploads)
                finally:
                    stop(floor)
            if "png-levels" in parts:
                bench_png_levels(args.levels_runs)
        finally:
            stop(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
