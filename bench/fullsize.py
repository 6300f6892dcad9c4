"""Real-size generation: imagegraph vs diffusers' StableDiffusionPipeline, each in its own process, on the same
full-size SD-1.5-architecture folder (random weights, written once by `make-tiny-model --full-size` into a
cache folder), same prompt, seed, scheduler (euler) and steps.

Per side: the first image from a cold process (imagegraph: a server that is up but has not imported torch nor
loaded the model; the pipeline: a fresh interpreter that imports diffusers, loads and runs), the warm end-to-end
time at each size (imagegraph: POST /sessions → PNG on disk; median of alternating runs, so both see the same
load), and the process's peak RSS (VmHWM). Then "three models in turn": a fresh server with `ram_cache_gb` set
to hold one model generates with three different full-size models and the first again; its peak RSS should stay
near one model's, not three. The same with a cache big enough for all three shows what the limit saves.

On a GPU (`--device cuda`) the plan is another: SD-1.5 at 512² and SDXL at 1024², 20 steps, fp16, each the
pipeline's it/s against imagegraph's with its default settings and with `compile: unet` (in the same run),
the peak VRAM of each (torch's allocator; ours from `/app/memory`), then SDXL through `offload: model` in a
server process capped at 6 GB (`torch.cuda.set_per_process_memory_fraction`). `--gpu-plan --tiny` runs that
plan with the tiny models on any device, to try every path of it before a GPU's short lease.

Run:  .venv/bin/python bench/fullsize.py                        # CPU: 256² and 512², 3 steps (~15 min, 12 GB)
      .venv/bin/python bench/fullsize.py --device cuda          # GPU plan (writes SD-1.5 and SDXL first)
      .venv/bin/python bench/fullsize.py --gpu-plan --tiny      # the GPU plan's paths with the tiny models
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
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from server.graph.schedulers import make_scheduler
model, device, dtype, size, steps, prompt = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
sdxl = (__import__("pathlib").Path(model) / "text_encoder_2").is_dir()
extra = {} if sdxl else {"safety_checker": None, "requires_safety_checker": False}
pipe = (StableDiffusionXLPipeline if sdxl else StableDiffusionPipeline).from_pretrained(
    model, local_files_only=True, torch_dtype=getattr(torch, dtype), **extra).to(device)
pipe.set_progress_bar_config(disable=True)
pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
step_times = []

def at_step_end(pipe, index, timestep, tensors):
    if device == "cuda":
        torch.cuda.synchronize()  # the step's kernels done: the step's real time
    step_times.append(time.perf_counter())
    return tensors

def run(size):
    step_times.clear()
    begin = time.perf_counter()
    pipe(prompt, negative_prompt="", num_inference_steps=steps, guidance_scale=7.5, height=size, width=size,
         generator=torch.Generator("cpu").manual_seed(42), callback_on_step_end=at_step_end).images[0].save(sys.argv[8])
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - begin

run(size)
print(json.dumps({"cold": time.time() - start}), flush=True)
for line in sys.stdin:
    seconds = run(int(line))
    per_step = (step_times[-1] - step_times[0]) / max(1, len(step_times) - 1)
    vram = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    print(json.dumps({"seconds": seconds, "per_step": per_step, "peak_rss_mib": peak_rss(),
                      "peak_vram_mib": vram}), flush=True)
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
        return self.measure(size)["seconds"]

    def measure(self, size: int) -> dict[str, Any]:
        """One image: `seconds` end to end, `per_step` (seconds a denoising step), `peak_vram_mib` (CUDA)."""
        assert self.process.stdin is not None
        self.process.stdin.write(f"{size}\n")
        self.process.stdin.flush()
        return self._answer()

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


def start_server(
    root: Path, device: str, dtype: str, extra_env: dict[str, str] | None = None, prelude: str = ""
) -> Server:
    saved = dict(os.environ)
    os.environ.update(extra_env or {})
    try:
        return Server(root, device, dtype, prelude)
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


# The GPU plan: each base at the size it is made for, 20 steps, fp16 (`--device cuda`, or `--gpu-plan --tiny` on
# the CPU to try the script's every path with the tiny models in a minute).
GPU_PLAN = (("sd-1", 512), ("sdxl", 1024))
# What `offload: model` must get SDXL through: a 6 GB card.
VRAM_CAP_GIB = 6.0


def gpu_models(args: argparse.Namespace) -> dict[str, Path]:
    from server.models.fullsize import write_full_size_model

    if args.tiny:
        from server.models.tiny import write_tiny_model
        from server.models.tiny_sdxl import write_tiny_model_of_base

        folder = args.cache / "tiny"
        writers = {"sd-1": write_tiny_model, "sdxl": lambda out: write_tiny_model_of_base(out, "sdxl")}
    else:
        folder = args.cache
        writers = {base: (lambda out, base=base: write_full_size_model(out, base)) for base, _ in GPU_PLAN}
    models = {}
    for base, _ in GPU_PLAN:
        out = folder / f"{base}-random-0"
        if not out.is_dir():
            started = time.perf_counter()
            writers[base](out)
            print(f"wrote {out} in {time.perf_counter() - started:.0f} s", flush=True)
        models[base] = out
    return models


def gpu_plan(args: argparse.Namespace, dtype: str, tmp: Path) -> None:
    """it/s of imagegraph (default settings, then `compile: unet`) against the pipeline in the same run, peak VRAM
    of each, and SDXL through `offload: model` under a 6 GB cap."""
    steps, runs = args.steps, args.runs
    models = gpu_models(args)
    for base, size in GPU_PLAN:
        if base not in args.bases:
            continue
        size = size // 8 if args.tiny else size
        pipeline = PipelineProcess(models[base], args.device, dtype, size, steps, tmp / f"pipeline-{base}.png")
        theirs = [pipeline.measure(size) for _ in range(runs)]
        their_rate = 1 / median([t["per_step"] for t in theirs])
        their_peaks = [t["peak_vram_mib"] for t in theirs if t["peak_vram_mib"] is not None]
        their_vram = f"{max(their_peaks):,.0f} MiB" if their_peaks else "n/a"
        pipeline.stop()
        for label, env in (("default", {}), ("compile=unet", {"IMAGEGRAPH_COMPILE": "unet"})):
            server = start_server(tmp / f"root-{base}-{label}", args.device, dtype, env)
            try:
                model_id = server.register(models[base])
                first, _, _ = server.run(graph(model_id, size, steps))  # loads (and compiles) at this size
                ours = [server.run(graph(model_id, size, steps)) for _ in range(runs)]
                rate = 1 / median([per_step for _, per_step, _ in ours])
                peak = server.http.get("/app/memory").json()["device_peak_bytes"]
            finally:
                server.stop()
            goal = "≥ 1.3× (compiled vs the pipeline's default)" if env else "≥ 1.0×"
            vram = f"{peak / 2**20:,.0f} MiB" if peak is not None else "n/a"
            print(
                f"{base} {size}², {steps} steps, {dtype}, {label}: imagegraph {rate:.2f} it/s "
                f"(end to end {median([e for e, _, _ in ours]):.2f} s; first run {first:.1f} s) | pipeline "
                f"{their_rate:.2f} it/s (end to end {median([t['seconds'] for t in theirs]):.2f} s) | "
                f"{rate / their_rate:.3f}× (goal {goal}); peak VRAM imagegraph {vram} | pipeline {their_vram}",
                flush=True,
            )
    # SDXL on a small card: the process may not allocate more than the cap; `offload: model` keeps only the
    # running node's part on the GPU.
    base, size = GPU_PLAN[-1]
    if base not in args.bases:
        return
    size = size // 8 if args.tiny else size
    prelude = ""
    if args.device == "cuda":
        prelude = (
            "import torch; total = torch.cuda.get_device_properties(0).total_memory; "
            f"torch.cuda.set_per_process_memory_fraction(min(1.0, {VRAM_CAP_GIB} * 2**30 / total))"
        )
    server = start_server(tmp / "root-offload", args.device, dtype, {"IMAGEGRAPH_OFFLOAD": "model"}, prelude)
    try:
        model_id = server.register(models[base])
        seconds, per_step, _ = server.run(graph(model_id, size, steps))
        peak = server.http.get("/app/memory").json()["device_peak_bytes"]
        vram = f"{peak / 2**20:,.0f} MiB" if peak is not None else "n/a"
        print(
            f"{base} {size}², {steps} steps, offload=model under a {VRAM_CAP_GIB:g} GiB cap: completed in "
            f"{seconds:.1f} s ({1 / per_step:.2f} it/s), peak VRAM {vram}",
            flush=True,
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
    parser.add_argument("--gpu-plan", action="store_true", help="the GPU measurements (the default with --device cuda)")
    parser.add_argument("--tiny", action="store_true", help="the GPU plan with the tiny models, to try it anywhere")
    parser.add_argument(
        "--bases", nargs="+", default=[base for base, _ in GPU_PLAN], help="the GPU plan's bases (to split it)"
    )
    args = parser.parse_args()
    args.sizes = args.sizes or [256, 512]
    dtype = "float16" if args.fp16 else "float32"
    if args.device == "cuda" or args.gpu_plan:
        if args.device == "cuda":
            import torch

            dtype = "float16"
            args.steps = 20 if args.steps == 3 else args.steps
            print(f"GPU: {torch.cuda.get_device_name(0)}, torch {torch.__version__}", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-fullsize-") as tmp:
            gpu_plan(args, dtype, Path(tmp))
        return
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
