"""Model manager benchmarks against a real `imagegraph serve`:

1. `/api/v1/models/search` over a generated tree of 100,000 files in 10,000 folders (a few hundred model
   files, some diffusers folders, hidden folders) vs a plain `os.walk` + extension filter over the same tree
   (the floor; goal: at most 1.5x).
2. `POST /api/v1/models/sync` with 1,000 registered models and nothing changed (goal: under 200 ms).
3. Autoimport latency: from renaming a checkpoint into `autoimport/main` to `models_changed` arriving on the
   WebSocket, with no request (p50 and max of 20 drops; goal: under 1 s).

Run: .venv/bin/python bench/models.py [--runs 5] [--files 100000] [--folders 10000] [--models 1000] [--drops 20]"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import free_port, median, percentile, wait_for_200

SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def make_tree(top: Path, files: int, folders: int) -> int:
    """`folders` folders three levels deep holding `files` files; every ~300th file a model; a few
    diffusers folders and hidden folders. Returns the number of model files os.walk's filter finds."""
    per_folder = files // folders
    models = 0
    n = 0
    for i in range(folders):
        folder = top / f"a{i % 10}" / f"b{i % 100}" / f"c{i}"
        if i % 500 == 1:
            folder = top / f"a{i % 10}" / ".hidden" / f"c{i}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 1000 == 2:
            (folder / "model_index.json").write_text("{}")
        for j in range(per_folder):
            n += 1
            if n % 300 == 0:
                name = f"model{n}{SUFFIXES[n % len(SUFFIXES)]}"
                models += 1
            else:
                name = f"file{j}.{('png', 'txt', 'json', 'jpg')[j % 4]}"
            fd = os.open(folder / name, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
    return models


def walk_floor(top: Path) -> list[str]:
    found = []
    for folder, _, names in os.walk(top):
        for name in names:
            if name.lower().endswith(SUFFIXES):
                found.append(os.path.join(folder, name))
    return found


class Server:
    def __init__(self, root: Path, watch: bool) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "IMAGEGRAPH_WATCH": "true" if watch else "false"}
        command = [sys.executable, "-m", "server", "serve", "--root", str(root), "--port", str(self.port)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        wait_for_200(f"{self.url}/health")

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.url + path, timeout=120) as response:
            return json.loads(response.read())

    def post(self, path: str) -> object:
        request = urllib.request.Request(self.url + path, data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def bench_search(work: Path, runs: int, files: int, folders: int) -> None:
    tree = work / "tree"
    started = time.monotonic()
    models = make_tree(tree, files, folders)
    print(
        f"search: tree of {files} files in {folders} folders ({models} model files) built in {time.monotonic() - started:.1f} s"
    )
    server = Server(work / "root-search", watch=False)
    try:
        query = "/api/v1/models/search?" + urllib.parse.urlencode({"search_path": str(tree)})
        floor_times, ours_times = [], []
        for _ in range(runs + 1):  # the first round warms the dentry cache for both
            t = time.perf_counter()
            walk_floor(tree)
            floor_times.append(time.perf_counter() - t)
            t = time.perf_counter()
            result = server.get(query)
            ours_times.append(time.perf_counter() - t)
        floor, ours = median(floor_times[1:]), median(ours_times[1:])
        print(
            f"search: /models/search {ours * 1000:.0f} ms ({len(result)} results) vs os.walk + filter {floor * 1000:.0f} ms"
        )
        print(f"search: ratio {ours / floor:.2f}x (goal <= 1.5x), median of {runs}")
    finally:
        server.stop()


def bench_sync(work: Path, runs: int, models: int, checkpoint: Path) -> None:
    root = work / "root-sync"
    folder = root / "models" / "sd-1" / "main"
    folder.mkdir(parents=True)
    for i in range(models):
        os.link(checkpoint, folder / f"m{i:04d}.safetensors")  # 1,000 real checkpoints, one file's disk space
    server = Server(root, watch=False)
    try:
        deadline = time.monotonic() + 300
        while len(server.get("/api/v1/models/")["models"]) < models:  # the start-up sync registers them
            if time.monotonic() > deadline:
                raise TimeoutError("start-up sync did not register every model")
            time.sleep(0.2)
        times = []
        for _ in range(max(runs * 4, 20)):
            t = time.perf_counter()
            result = server.post("/api/v1/models/sync")
            times.append(time.perf_counter() - t)
            assert result == {"added": [], "removed": [], "updated": []}, result
        print(
            f"sync: {models} registered, nothing changed: median {median(times) * 1000:.1f} ms, "
            f"p95 {percentile(times, 95) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms (goal < 200 ms)"
        )
    finally:
        server.stop()


def bench_autoimport(work: Path, drops: int, checkpoint: Path) -> None:
    from websockets.sync.client import connect

    root = work / "root-watch"
    server = Server(root, watch=True)
    try:
        staging = root / "staging"
        staging.mkdir()
        target = root / "autoimport" / "main"
        latencies = []
        with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            time.sleep(1.0)  # the start-up sync and the watches are in place
            for i in range(drops):
                source = staging / f"drop{i}.safetensors"
                shutil.copyfile(checkpoint, source)
                t = time.perf_counter()
                os.rename(source, target / source.name)
                while True:
                    message = json.loads(ws.recv(timeout=30))
                    if message["type"] == "models_changed" and f"sd-1/main/drop{i}" in message["added"]:
                        break
                latencies.append(time.perf_counter() - t)
                time.sleep(0.2)
        print(
            f"autoimport: rename -> models_changed p50 {median(latencies) * 1000:.0f} ms, "
            f"max {max(latencies) * 1000:.0f} ms over {drops} drops (goal < 1000 ms)"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=1_000)
    parser.add_argument("--drops", type=int, default=20)
    parser.add_argument("--only", choices=["search", "sync", "autoimport"])
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from server.models.tiny import write_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        work = Path(tmp)
        checkpoint = write_tiny_model(work / "tiny.safetensors", "checkpoint")
        if args.only in (None, "search"):
            bench_search(work, args.runs, args.files, args.folders)
        if args.only in (None, "sync"):
            bench_sync(work, args.runs, args.models, checkpoint)
        if args.only in (None, "autoimport"):
            bench_autoimport(work, args.drops, checkpoint)


if __name__ == "__main__":
    main()
