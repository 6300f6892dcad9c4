"""Cold start to the first /health 200, and idle RSS: `imagegraph serve` vs a bare Starlette app (the floor).

The server's bytecode is compiled first (as `scripts/setup` and any regular install do). Two cold starts of
imagegraph are measured: the first start on an empty root (it creates the folders and the
database) and a restart on an existing root (what a user does every other time).

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

REPO = Path(__file__).resolve().parent.parent
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
    subprocess.run([sys.executable, "-m", "compileall", "-q", "server"], check=True, cwd=REPO)
    first, again, bare = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as root:
            port = free_port()
            command = [sys.executable, "-m", "server", "serve", "--root", root, "--port", str(port)]
            first.append(measure(command, port))
            port = free_port()
            command[-1] = str(port)
            again.append(measure(command, port))
        port = free_port()
        bare.append(measure([sys.executable, "-c", BARE_APP, str(port)], port))
    bare_start, bare_rss = median([t for t, _ in bare]), median([r for _, r in bare])
    print(f"runs: {args.runs} (median)")
    print(
        f"bare Starlette:                first /health 200 after {bare_start * 1000:.0f} ms, idle RSS {bare_rss:.1f} MiB"
    )
    for label, runs in (("first start (empty root)", first), ("restart (existing root)", again)):
        start, rss = median([t for t, _ in runs]), median([r for _, r in runs])
        # Each round starts ours and the bare app back to back, so the pair shares the machine's load of the
        # moment: the median of the rounds' own ratios is the figure a neighbour's burst moves least.
        paired = median([ours / floor for (ours, _), (floor, _) in zip(runs, bare, strict=True)])
        print(
            f"imagegraph, {label}: first /health 200 after {start * 1000:.0f} ms ({start / bare_start:.2f}x; "
            f"per round {paired:.2f}x), idle RSS {rss:.1f} MiB ({rss / bare_rss:.2f}x)  (goal <= 1.5x)"
        )


if __name__ == "__main__":
    main()
