"""The `esrgan` node's tiling: time and peak memory of one upscale of a 1024×1024 image, untiled vs tiled, and how
far the tiled result is from the untiled one (it should be rounding only: no seams).

Each configuration runs in a fresh process, so peak memory is that run's own: on the CPU the growth of the
process's peak RSS (ru_maxrss) over its RSS just before the upscale, on CUDA `torch.cuda.max_memory_allocated`.
The model is a real architecture with random weights, written as safetensors and loaded the way the server
loads upscalers (server/models/upscalers.py); the work is `upscalers.upscale`, what the node runs.

Run:  .venv/bin/python bench/upscale.py                          # Real-ESRGAN Compact x4 (realesr-general-x4v3)
      .venv/bin/python bench/upscale.py --arch x4plus --device cuda   # RRDBNet 23 blocks (RealESRGAN_x4plus)
      .venv/bin/python bench/upscale.py --arch tiny --size 512         # the tests' tiny RRDBNet, seconds
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARCHS = ("compact", "x4plus", "tiny")


def write_model(arch: str, out: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from server.models.libraries import quiet_ml_libraries
    from server.models.tiny_adapters import write_tiny_upscaler

    if arch == "tiny":
        return write_tiny_upscaler(out, scale=2)
    quiet_ml_libraries()
    torch.manual_seed(0)
    if arch == "compact":
        from spandrel.architectures.Compact import Compact

        model: Any = Compact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4, act_type="prelu")
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    # Random weights at the scale of trained ones, so activations stay in range through many layers.
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.ndim == 4:
                parameter.mul_(0.5)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return out


def test_image(size: int) -> Any:
    """Smooth shapes and texture, so a seam would show as a step in the difference."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([np.sin(9 * x + 3 * y), np.cos(7 * y - 2 * x), np.sin(13 * x * y)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 0.15, rgb.shape)
    return Image.fromarray(((rgb + noise).clip(-1, 1) * 127.5 + 127.5).astype("uint8"), "RGB")


def one_run(model_path: Path, size: int, tile: int, device: str, out: Path) -> dict[str, Any]:
    """In this process: load, warm up on a small image, upscale `size`², report time and peak memory."""
    import numpy as np
    import torch

    from server.models.upscalers import load, upscale

    torch.set_grad_enabled(False)
    upscaler = load(model_path, "bench", torch.device(device), torch.float16 if device == "cuda" else torch.float32)
    image = test_image(size)
    upscale(upscaler, test_image(64), 0)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib()
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    result = upscale(upscaler, image, tile)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak_mib = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        # ru_maxrss never drops: the growth over the larger of the peak so far and the RSS now is this run's.
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - max(base, peak_before)) / 1024
    np.save(out, np.asarray(result, dtype=np.uint8))
    return {"tile": tile, "seconds": seconds, "peak_mib": max(peak_mib, 0.0), "size": list(result.size)}


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=ARCHS, default="compact")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tiles", default="0,512,256", help="tile sizes to run; 0 = the whole image at once")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "TILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, tile, out = args.child
        print(json.dumps(one_run(Path(model), args.size, int(tile), args.device, Path(out))))
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        model = write_model(args.arch, Path(tmp) / f"{args.arch}.safetensors")
        runs = []
        for tile in (int(t) for t in args.tiles.split(",")):
            out = Path(tmp) / f"tile{tile}.npy"
            command = [sys.executable, __file__, "--size", str(args.size), "--device", args.device]
            done = subprocess.run(
                [*command, "--child", str(model), str(tile), str(out)], capture_output=True, text=True
            )
            if done.returncode != 0:
                sys.exit(done.stderr)
            run = json.loads(done.stdout.strip().splitlines()[-1])
            run["pixels"] = np.load(out).astype(np.int16)
            runs.append(run)
        whole = next((r for r in runs if r["tile"] == 0), runs[0])
        print(f"{args.arch} on {args.device}, {args.size}×{args.size} → {whole['size'][0]}×{whole['size'][1]}")
        print("| tile size | time | peak memory | vs untiled: mean abs / max diff (0-255) |")
        print("|---|---|---|---|")
        for run in runs:
            diff = np.abs(run["pixels"] - whole["pixels"])
            label = "whole image" if run["tile"] == 0 else f"{run['tile']} px"
            print(
                f"| {label} | {run['seconds']:.2f} s | {run['peak_mib']:,.0f} MiB | "
                f"{diff.mean():.3f} / {int(diff.max())} |"
            )


if __name__ == "__main__":
    main()
