"""Schema fuzzing, long form: Schemathesis against a real `imagegraph serve` (a subprocess on a throwaway
root holding the tiny models, a board, uploaded images and a generated one), every route, every phase
(examples, coverage, fuzzing, stateful), for as long as you give it, a fresh root and seed each round.
The short form is tests/reliability/test_fuzz.py; the preparation is shared (tests/reliability/fuzz_target.py).

Prints per round and in total: requests tried (Schemathesis' generated test cases), failures (a 500, an
undocumented status, content type or header, a body that does not match its schema, a schema-violating
request accepted), the server's own count of uncaught errors from its log, and its RSS before and after.
Exit status 1 when anything failed.

Run: .venv/bin/python bench/fuzz_soak.py [--minutes 10] [--rounds 2] [--max-examples 500] [--seed N]"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, rss_mib, wait_for_200

from tests.reliability.fuzz_target import (
    fuzz_document,
    fuzz_settings,
    place_models,
    run_fuzzer,
    seed_server,
    write_tiny_models,
)


def one_round(work: Path, tiny: dict[str, Path], minutes: float, max_examples: int, seed: int) -> dict:
    root = work / "root"
    settings = fuzz_settings(root)
    settings.create_layout()
    place_models(settings, tiny)
    port = free_port()
    # The same limits as the test's server: search, import, convert and merge only inside the root.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "IMAGEGRAPH_WATCH": "false", "IMAGEGRAPH_SEARCH_ROOTS": str(root)}
    log_path = work / "server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "server", "serve", "--root", str(root), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_200(f"{url}/health")
        seeded = seed_server(url)
        rss_before = rss_mib(server.pid)
        document = httpx.get(f"{url}/openapi.json").json()
        started = time.monotonic()
        report = run_fuzzer(
            url,
            fuzz_document(document, root, seeded),
            work / "fuzz",
            max_examples=max_examples,
            seed=seed,
            max_time=minutes * 60,
            timeout=minutes * 60 + 1800,
        )
        elapsed = time.monotonic() - started
        healthy = httpx.get(f"{url}/health").status_code == 200
        rss_after = rss_mib(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    uncaught = log_path.read_text(errors="replace").count("uncaught error on")
    return {
        "seed": seed,
        "requests": report.generated,
        "failures": report.failures,
        "errors": report.errors,
        "uncaught": uncaught,
        "healthy": healthy,
        "seconds": elapsed,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "output": report.output,
        "exit_code": report.exit_code,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="fuzzing time per round (default 5)")
    parser.add_argument("--rounds", type=int, default=1, help="fresh root, server and seed each (default 1)")
    parser.add_argument("--max-examples", type=int, default=500, help="examples per route and phase (default 500)")
    parser.add_argument("--seed", type=int, help="first round's seed (default: random); later rounds add 1")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (roots, logs, reports)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = Path(tempfile.mkdtemp(prefix="fuzz-soak-"))
    first_seed = args.seed if args.seed is not None else random.randrange(2**31)
    total_requests = total_failures = total_uncaught = 0
    ok = True
    try:
        tiny = write_tiny_models(work / "tiny")
        for i in range(args.rounds):
            result = one_round(work / f"round-{i}", tiny, args.minutes, args.max_examples, first_seed + i)
            failures = sum(f.get("count", 1) for f in result["failures"]) + len(result["errors"])
            total_requests += result["requests"]
            total_failures += failures
            total_uncaught += result["uncaught"]
            print(
                f"round {i + 1}/{args.rounds} (seed {result['seed']}): {result['requests']:,} requests in "
                f"{result['seconds']:.0f} s, {failures} failures, {result['uncaught']} uncaught server errors, "
                f"healthy after: {result['healthy']}, server RSS {result['rss_before']:.0f} -> "
                f"{result['rss_after']:.0f} MiB",
                flush=True,
            )
            if failures or result["uncaught"] or not result["healthy"] or result["exit_code"]:
                ok = False
                print(result["output"][-20_000:], flush=True)
    finally:
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"total: {total_requests:,} requests over {args.rounds} round(s), {total_failures} failures, "
        f"{total_uncaught} uncaught server errors"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
