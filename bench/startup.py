"""Cold start to the first /health 200, and idle RSS: `imagegraph serve` vs a bare Starlette app (the floor).

Run: .venv/bin/python bench/startup.py [--runs 5]"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, median, rss_mib, wait_for_200

BARE_APP = """
import sys, uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

async def health(request):
    return JSONResponse({"status": "ok"})

uvicorn.run(Starlette(routes=[Route("/health", health)]), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def measure(command: list[str], port: int) -> tuple[float, float]:
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = wait_for_200(f"http://127.0.0.1:{port}/health")
        time.sleep(1.0)  # let start-up work settle before reading the idle footprint
        return ready - start, rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ours, bare = [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as root:
            port = free_port()
            ours.append(measure([sys.executable, "-m", "server", "serve", "--root", root, "--port", str(port)], port))
        port = free_port()
        bare.append(measure([sys.executable, "-c", BARE_APP, str(port)], port))
    our_start, our_rss = median([t for t, _ in ours]), median([r for _, r in ours])
    bare_start, bare_rss = median([t for t, _ in bare]), median([r for _, r in bare])
    print(f"runs: {args.runs} (median)")
    print(f"imagegraph serve: first /health 200 after {our_start * 1000:.0f} ms, idle RSS {our_rss:.1f} MiB")
    print(f"bare Starlette:   first /health 200 after {bare_start * 1000:.0f} ms, idle RSS {bare_rss:.1f} MiB")
    print(f"ratio: start-up {our_start / bare_start:.2f}x, RSS {our_rss / bare_rss:.2f}x (goal <= 1.5x)")


if __name__ == "__main__":
    main()
