"""Soak, the long form of tests/reliability/test_load.py: 50 concurrent clients for 60 s against one
`imagegraph serve` process (uploads, lists, DTO / metadata / thumbnail / full reads, deletes, tiny-model
sessions at 64×64 and 2-4 steps), with a WebSocket client subscribed to everything. Prints requests, read
latencies (p50/p99 per kind), what was made and deleted, and the server's RSS before and after (after a
warm-up, so torch and the model are in the baseline), then every problem found (none expected: exit 1 if any).

Run: .venv/bin/python bench/soak.py [--seconds 60] [--clients 50] [--warmup 10]"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from server.models.tiny import write_tiny_model
from tests.reliability.load import SERVER_ENV, run_load
from tests.reliability.process import ServerProcess


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = write_tiny_model(folder / "tiny", "diffusers")
        with ServerProcess(folder / "root", folder / "server.log", env=SERVER_ENV) as server:
            report = asyncio.run(
                run_load(server, model, clients=args.clients, seconds=args.seconds, warmup=args.warmup, seed=args.seed)
            )
    print(report.summary())
    problems = report.problems()
    for problem in problems:
        print(f"PROBLEM: {problem}")
    print("no problems" if not problems else f"{len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
