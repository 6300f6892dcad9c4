"""Real-size generation: imagegraph vs diffusers' StableDiffusionPipeline, each in its own process, on the same
full-size SD-1.5-architecture folder (random weights, written once by `make-tiny-model --full-size` into a
cache folder), same prompt, seed, scheduler (euler) and steps.

Per side: the first image from a cold process (imagegraph: a server that is up but has not imported torch nor
loaded the model; the pipeline: a fresh interpreter that imports diffusers, loads and runs), the warm end-to-end
time at each size (imagegraph: POST /sessions → PNG on disk; median of alternating runs, so both see the same
load), and the process's peak RSS (VmHWM). Then "three models in turn": a fresh server with `ram_cache_gb` set
to hold one model generates with three different full-size models and the first again; its peak RSS should stay
near one model's, not three. The same with a cache big enough for all three shows what the limit saves.

Run:  .venv/bin/python bench/fullsize.py                        # CPU: 256² and 512², 3 steps (~15 min, 12 GB)
      .venv/bin/python bench/fullsize.py --device cuda --fp16 --size 512 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from common import median
from generate import PROMPT, Server, graph

REPO = Path(__file__).resolve().parent.parent

# A pipeline process that stays up: it reports its cold start, then runs one image per line it reads.
PIPELINE_WORKER = """
import json, resource, sys, time
start = float(sys.argv[1])
import torch
from diffusers import StableDiffusionPipeline
from server.graph.schedulers import make_scheduler
model, device, dtype, size, steps, prompt = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
pipe = StableDiffusionPipeline.from_pretrained(model, local_files_only=True, safety_checker=None,
    requires_safety_checker=False, torch_dtype=getattr(torch, dtype)).to(device)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)

def run(size):
    begin = time.perf_counter()
    pipe(prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
         generator=torch.Generator("cpu").manual_seed(42)).images[0].save(sys.argv[8])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - begin

run(size)
print(json.dumps({"cold": time.time() - start}), flush=True)
for line in sys.stdin:
    seconds = run(int(line))
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak_rss()}), flush=True)
"""

PEAK_RSS = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
"""


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


class PipelineProcess:
    def __init__(self, model: Path, device: str, dtype: str, size: int, steps: int, out: Path) -> None:
        start = time.time()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PEAK_RSS + PIPELINE_WORKER,
                str(start),
                str(model),
                device,
                dtype,
                str(size),
                str(steps),
                PROMPT,
                str(out),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        self.cold = self._answer()["cold"]

    def _answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the pipeline process ended (exit {self.process.wait()})")
        return json.loads(line)

    def run(self, size: int) -> float:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{size}\n")
        self.process.stdin.flush()
        return self._answer()["seconds"]

    def peak_rss_mib(self) -> float:
        return peak_rss_mib(self.process.pid)

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=120)


def ensure_models(cache: Path, count: int) -> list[Path]:
    from server.models.fullsize import write_full_size_model

    models = []
    for seed in range(count):
        folder = cache / f"sd15-random-{seed}"
        if not folder.is_dir():
            started = time.perf_counter()
            write_full_size_model(folder, "sd-1", seed=seed)
            print(f"wrote {folder} in {time.perf_counter() - started:.0f} s")
        models.append(folder)
    return models


def start_server(root: Path, device: str, dtype: str, extra_env: dict[str, str] | None = None) -> Server:
    saved = dict(os.environ)
    os.environ.update(extra_env or {})
    try:
        return Server(root, device, dtype)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def compare(model: Path, args: argparse.Namespace, dtype: str, tmp: Path) -> None:
    sizes, steps = args.sizes, args.steps
    server = start_server(tmp / "root-compare", args.device, dtype)
    try:
        model_id = server.register(model)
        ours_cold, _, _ = server.run(graph(model_id, sizes[0], steps))
        pipeline = PipelineProcess(model, args.device, dtype, sizes[0], steps, tmp / "pipeline.png")
        try:
            print(
                f"first image ({sizes[0]}², {steps} steps) from a cold process: imagegraph {ours_cold:.1f} s "
                f"(server up, torch not imported, model not loaded) | pipeline {pipeline.cold:.1f} s "
                f"(interpreter start, imports, load, run) | {ours_cold / pipeline.cold:.2f}× (goal ≤ 1.2×)"
            )
            for size in sizes:
                if size != sizes[0]:  # one warm-up at each new size
                    server.run(graph(model_id, size, steps))
                    pipeline.run(size)
                ours, theirs = [], []
                for _ in range(args.runs):
                    ours.append(server.run(graph(model_id, size, steps))[0])
                    theirs.append(pipeline.run(size))
                print(
                    f"warm {size}², {steps} steps, median of {args.runs}: imagegraph {median(ours):.2f} s | "
                    f"pipeline {median(theirs):.2f} s | {median(ours) / median(theirs):.3f}× (goal ≤ 1.05×); "
                    f"runs {' '.join(f'{t:.2f}' for t in ours)} | {' '.join(f'{t:.2f}' for t in theirs)}"
                )
            ours_rss, theirs_rss = peak_rss_mib(server.process.pid), pipeline.peak_rss_mib()
            print(
                f"peak RSS: imagegraph {ours_rss:,.0f} MiB | pipeline {theirs_rss:,.0f} MiB | "
                f"{ours_rss / theirs_rss:.3f}× (goal ≤ 1.15×)"
            )
        finally:
            pipeline.stop()
    finally:
        server.stop()


def models_in_turn(models: list[Path], args: argparse.Namespace, dtype: str, tmp: Path, cache_gb: float) -> None:
    server = start_server(
        tmp / f"root-turns-{cache_gb:g}", args.device, dtype, {"IMAGEGRAPH_RAM_CACHE_GB": f"{cache_gb:g}"}
    )
    try:
        ids = [server.register(model) for model in models]
        peaks = []
        for model_id in [*ids, ids[0]]:
            server.run(graph(model_id, args.turn_size, 1))
            peaks.append(peak_rss_mib(server.process.pid))
        memory = server.http.get("/app/memory").json()
        held = ", ".join(f"{part['model'].split('/')[-1]}/{part['submodel']}" for part in memory["parts"])
        print(
            f"three models in turn, then the first again, ram_cache_gb {cache_gb:g}: peak RSS after each "
            f"{' → '.join(f'{p:,.0f}' for p in peaks)} MiB; {memory['loads']} parts read from disk; "
            f"cache now {memory['ram']['bytes'] / 1024**3:.2f} GiB: {held}"
        )
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, action="append", dest="sizes", help="image side in px (repeatable)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3, help="timed warm runs per side and size")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--fp16", action="store_true", help="float16 weights and activations (GPU)")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "imagegraph-bench")
    parser.add_argument("--turn-size", type=int, default=256, help="image side for the three-models run")
    parser.add_argument("--skip", action="append", default=[], choices=["compare", "turns"])
    args = parser.parse_args()
    args.sizes = args.sizes or [256, 512]
    dtype = "float16" if args.fp16 else "float32"
    models = ensure_models(args.cache, 1 if "turns" in args.skip else 3)
    print(f"device {args.device}, {dtype}, SD-1.5 architecture, random weights, euler, cfg 7.5")
    with tempfile.TemporaryDirectory(prefix="bench-fullsize-") as tmp:
        if "compare" not in args.skip:
            compare(models[0], args, dtype, Path(tmp))
        if "turns" not in args.skip:
            # fp32 SD-1.5 is 4.0 GiB of weights (UNet 3.2, text encoder 0.5, VAE 0.3): 5 GiB holds one model.
            one = 5.0 if dtype == "float32" else 2.5
            models_in_turn(models, args, dtype, Path(tmp), one)
            models_in_turn(models, args, dtype, Path(tmp), 4 * one)


if __name__ == "__main__":
    main()
