"""Generation end to end through imagegraph vs diffusers' StableDiffusionPipeline in-process, same components,
seed, scheduler (euler) and steps; and the same for the tiny SDXL model against StableDiffusionXLPipeline.

imagegraph: POST /sessions, PUT /invoke, wait for `session_complete` on the WebSocket, GET the session, image
file on disk. The server runs with the node cache off, so every run recomputes everything, like the pipeline.
The two alternate run by run so machine noise hits both alike. Also reported: each side's time per denoising
step (the executor's own overhead per step is the difference), and idle-to-first-image (a fresh server, torch
not even imported yet, model not loaded) beside a fresh process doing the same with the pipeline. The SDXL
row runs on the same server after the SD-1 rows, and checks that both sides drew the same pixels.

Run:  .venv/bin/python bench/generate.py                      # tiny model, 128 and 256 px, 20 steps, CPU
      .venv/bin/python bench/generate.py --only sdxl --runs 9 # the tiny SDXL model alone, 128 px
      .venv/bin/python bench/generate.py --full-size --device cuda --fp16 --size 512
          # SD-1.5-sized random weights (UNet 860M parameters); for a GPU machine, slow and 4 GB+ on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
from common import free_port, median, wait_for_200

from server.graph.standard import txt2img_graph

PROMPT = "a lighthouse at dusk, oil painting"
SEED = 42
CFG = 7.5
SCHEDULER = "euler"

COLD_PIPELINE = """
import sys, time, torch
start = float(sys.argv[1])
from diffusers import StableDiffusionPipeline
from server.graph.schedulers import make_scheduler
pipe = StableDiffusionPipeline.from_pretrained(sys.argv[2], local_files_only=True, safety_checker=None,
    requires_safety_checker=False, torch_dtype=getattr(torch, sys.argv[4])).to(sys.argv[3])
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
size, steps = int(sys.argv[5]), int(sys.argv[6])
image = pipe(sys.argv[7], negative_prompt="", num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
    generator=torch.Generator("cpu").manual_seed(42)).images[0]
image.save(sys.argv[8])
print(time.time() - start)
"""


# -- the model -----------------------------------------------------------------------------------------


def write_model(folder: Path, full_size: bool) -> Path:
    if not full_size:
        from server.models.tiny import write_tiny_model

        return write_tiny_model(folder / "tiny", "diffusers")
    from server.models.fullsize import write_full_size_model

    return write_full_size_model(folder / "sd15-random")


def write_sdxl_model(folder: Path) -> Path:
    """The tiny SDXL model (both text encoders, the `text_time` UNet), as the project's writer makes it."""
    from server.models.tiny import write_tiny_model

    return write_tiny_model(folder / "tiny-sdxl", "diffusers", base="sdxl")


# -- diffusers in-process -----------------------------------------------------------------------------


class Pipeline:
    def __init__(self, model: Path, device: str, dtype: str, *, sdxl: bool = False) -> None:
        import torch
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        from server.graph.schedulers import make_scheduler

        self.torch = torch
        self.device = device
        self.sdxl = sdxl
        self.image: Any = None  # the last run's PIL image
        if sdxl:
            pipe = StableDiffusionXLPipeline.from_pretrained(
                model, local_files_only=True, torch_dtype=getattr(torch, dtype)
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                model,
                local_files_only=True,
                safety_checker=None,
                requires_safety_checker=False,
                torch_dtype=getattr(torch, dtype),
            )
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.pipe.scheduler = make_scheduler(SCHEDULER, self.pipe.scheduler.config)

    def _sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def run(self, size: int, steps: int) -> tuple[float, float]:
        """(seconds for the image, seconds per denoising step)."""
        stamps: list[float] = []

        def on_step(pipe, step, timestep, kwargs):
            self._sync()
            stamps.append(time.perf_counter())
            return kwargs

        self._sync()
        start = time.perf_counter()
        self.image = self.pipe(
            PROMPT,
            # SDXL: no negative prompt is what our empty one means (zeros, as `force_zeros_for_empty_prompt` says).
            negative_prompt=None if self.sdxl else "",
            num_inference_steps=steps,
            guidance_scale=CFG,
            height=size,
            width=size,
            generator=self.torch.Generator("cpu").manual_seed(SEED),
            callback_on_step_end=on_step,
        ).images[0]
        self.image.load()
        self._sync()
        return time.perf_counter() - start, (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def cold_pipeline(model: Path, device: str, dtype: str, size: int, steps: int, out: Path) -> float:
    start = time.time()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            COLD_PIPELINE,
            str(start),
            str(model),
            device,
            dtype,
            str(size),
            str(steps),
            PROMPT,
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
        check=True,
    )
    return float(result.stdout.strip().splitlines()[-1])


# -- imagegraph over HTTP and the WebSocket -------------------------------------------------------------


class Server:
    def __init__(self, root: Path, device: str, precision: str, prelude: str = "") -> None:
        """`prelude`: Python run in the server process before the server starts (a VRAM cap, say)."""
        self.root = root
        self.port = free_port()
        env = {
            **os.environ,
            "IMAGEGRAPH_NODE_CACHE_ENTRIES": "0",  # recompute everything, as the pipeline does
            "IMAGEGRAPH_WATCH": "false",
            "IMAGEGRAPH_DEVICE": device,
            "IMAGEGRAPH_PRECISION": precision,
        }
        start = (
            ["-c", f"{prelude}\nfrom server.cli import main\nraise SystemExit(main())"] if prelude else ["-m", "server"]
        )
        self.process = subprocess.Popen(
            [sys.executable, *start, "serve", "--root", str(root), "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).resolve().parent.parent,
        )
        wait_for_200(f"http://127.0.0.1:{self.port}/health")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}/api/v1", timeout=600)
        self.events: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        threading.Thread(target=self._listen, args=(ready,), daemon=True).start()
        ready.wait(30)

    def _listen(self, ready: threading.Event) -> None:
        from websockets.exceptions import ConnectionClosed
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{self.port}/ws", max_size=None) as ws:
            ws.send(json.dumps({"type": "subscribe", "sessions": "*"}))
            ready.set()
            try:
                for frame in ws:
                    event = json.loads(frame)
                    session_id = event.get("session_id")
                    if session_id:
                        self._queue(session_id).put(event)
            except ConnectionClosed:
                pass  # the server stopping at the end of the run

    def _queue(self, session_id: str) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self.events.setdefault(session_id, queue.Queue())

    def register(self, model: Path) -> dict[str, str]:
        response = self.http.post("/models/import", json={"location": str(model)})
        response.raise_for_status()
        config = response.json()
        return {key: config[key] for key in ("model_name", "base_model", "model_type")}

    def run(self, graph: dict[str, Any]) -> tuple[float, float, Path]:
        """(seconds from POST to the image on disk, seconds per denoising step, the image file)."""
        start = time.perf_counter()
        session_id = self.http.post("/sessions/", json=graph).json()["id"]
        self.http.put(f"/sessions/{session_id}/invoke").raise_for_status()
        events = self._queue(session_id)
        progress: list[float] = []
        while True:
            event = events.get(timeout=3600)
            if event["type"] == "generator_progress":
                progress.append(datetime.fromisoformat(event["timestamp"]).timestamp())
            if event["type"] == "session_complete":
                break
        session = self.http.get(f"/sessions/{session_id}").json()
        if session["status"] != "completed":
            raise RuntimeError(f"session {session['status']}: {session['errors']}")
        path = self.root / "outputs" / "images" / session["results"]["decode"]["image"]["image_name"]
        if not path.is_file():
            raise RuntimeError(f"{path} is not on disk")
        elapsed = time.perf_counter() - start
        return elapsed, (progress[-1] - progress[0]) / max(1, len(progress) - 1), path

    def stop(self) -> None:
        self.http.close()
        self.process.terminate()
        self.process.wait(timeout=60)


def graph(model: dict[str, str], size: int, steps: int) -> dict[str, Any]:
    return txt2img_graph(
        model,
        PROMPT,
        seed=SEED,
        width=size,
        height=size,
        steps=steps,
        cfg_scale=CFG,
        scheduler=SCHEDULER,
        graph_id="bench",
    )


# -- main ----------------------------------------------------------------------------------------------


def measure(server: Server, pipeline: Pipeline, model_id: dict[str, str], size: int, steps: int, runs: int) -> Path:
    """One row: a warm-up each, then `runs` alternating rounds (ours, then the pipeline). Returns our last image."""
    server.run(graph(model_id, size, steps))  # warm-up
    pipeline.run(size, steps)
    ours, theirs = [], []
    path = Path()
    for _ in range(runs):
        elapsed, per_step, path = server.run(graph(model_id, size, steps))
        ours.append((elapsed, per_step))
        theirs.append(pipeline.run(size, steps))
    row = [f"{size:4d}"]
    for pick in (median, min):
        ours_s, ours_step = pick([t for t, _ in ours]), pick([s for _, s in ours])
        theirs_s, theirs_step = pick([t for t, _ in theirs]), pick([s for _, s in theirs])
        row.append(
            f"{theirs_s:.3f} | {ours_s:.3f} | {ours_s / theirs_s:.3f} | {theirs_step * 1000:.2f} "
            f"| {ours_step * 1000:.2f} | {(ours_step - theirs_step) * 1000:+.2f}"
        )
    print(f"{row[0]} | {row[1]}\n     [{row[2]}]")
    median_step = median([s for _, s in ours]), median([s for _, s in theirs])
    print(f"     denoising: {1 / median_step[1]:.1f} it/s pipeline, {1 / median_step[0]:.1f} it/s imagegraph")
    # Each round's two runs follow each other, so they share the machine's load of that moment; the median of the
    # rounds' own ratios is the figure least moved by a neighbour's burst on a shared machine.
    paired = sorted(o / p for (o, _), p in zip(ours, [t for t, _ in theirs], strict=True))
    print(f"     per round: ratio median {median(paired):.3f} (range {paired[0]:.3f}-{paired[-1]:.3f})")
    return path


def same_pixels(path: Path, pipeline: Pipeline) -> str:
    """How far our last PNG is from the pipeline's last image (the same seed and settings drew both)."""
    import numpy as np
    from PIL import Image

    with Image.open(path) as png:
        ours = np.asarray(png.convert("RGB"), dtype=np.int16)
    theirs = np.asarray(pipeline.image.convert("RGB"), dtype=np.int16)
    if ours.shape != theirs.shape:
        return f"sizes differ: {ours.shape} vs {theirs.shape}"
    return f"max pixel difference {int(np.abs(ours - theirs).max())} of 255"


HEADER = "size | pipeline s/img | imagegraph s/img | ratio | pipeline ms/step | imagegraph ms/step | overhead ms/step"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", dest="sizes", help="image side in px (repeatable)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per side and size (after one warm-up)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    parser.add_argument("--fp16", action="store_true", help="float16 weights and activations (GPU)")
    parser.add_argument("--full-size", action="store_true", help="SD-1.5-sized random model instead of the tiny one")
    parser.add_argument(
        "--only",
        choices=["sd-1", "sdxl"],
        help="one model's rows: sd-1 (the sizes and idle to first image) or sdxl (the tiny SDXL model, 128 px)",
    )
    args = parser.parse_args()
    if args.full_size and args.only == "sdxl":
        parser.error("--full-size is an SD-1.5-sized model; there is no full-size SDXL row")
    rows = [args.only] if args.only else ["sd-1"] if args.full_size else ["sd-1", "sdxl"]
    sizes = args.sizes or ([512] if args.full_size else [128, 256])
    sdxl_sizes = args.sizes or [128]
    dtype = "float16" if args.fp16 else "float32"

    with tempfile.TemporaryDirectory(prefix="bench-generate-") as tmp:
        tmp_path = Path(tmp)
        print(
            f"device {args.device}, {dtype}, scheduler {SCHEDULER}, {args.steps} steps, cfg {CFG}, {args.runs} runs each (median)"
        )
        server = Server(tmp_path / "root", args.device, dtype)
        try:
            if "sd-1" in rows:
                started = time.perf_counter()
                model = write_model(tmp_path / "model", args.full_size)
                print(
                    f"model: {'SD-1.5 size, random weights' if args.full_size else 'tiny'} ({time.perf_counter() - started:.1f} s to write)"
                )
                model_id = server.register(model)
                first, _, _ = server.run(graph(model_id, sizes[0], args.steps))
                cold = cold_pipeline(model, args.device, dtype, sizes[0], args.steps, tmp_path / "cold.png")
                print(
                    f"idle to first image ({sizes[0]} px): imagegraph {first:.2f} s (server up, torch not yet imported, "
                    f"model not loaded) | fresh process with the pipeline {cold:.2f} s"
                )
                pipeline = Pipeline(model, args.device, dtype)
                print()
                print("median of the runs [best of the runs: on a busy machine the steadier figure]")
                print(HEADER)
                for size in sizes:
                    measure(server, pipeline, model_id, size, args.steps, args.runs)
                del pipeline
            if "sdxl" in rows:
                started = time.perf_counter()
                model = write_sdxl_model(tmp_path / "model")
                print()
                print(f"SDXL model: tiny ({time.perf_counter() - started:.1f} s to write), StableDiffusionXLPipeline")
                model_id = server.register(model)
                pipeline = Pipeline(model, args.device, dtype, sdxl=True)
                print("median of the runs [best of the runs: on a busy machine the steadier figure]")
                print(HEADER)
                for size in sdxl_sizes:
                    path = measure(server, pipeline, model_id, size, args.steps, args.runs)
                    print(f"     {same_pixels(path, pipeline)}")
            print("goal: ratio <= 1.10 end to end")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
