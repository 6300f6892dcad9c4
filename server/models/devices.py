"""Which device and precision generation runs on: CUDA with fp16, else MPS, else CPU with fp32, unless the
`device`/`precision` settings say otherwise.

`guess_device` answers without importing torch (start-up must not pay for it): it looks for a CUDA build of
torch and an NVIDIA device node. The executor replaces the guess with torch's own answer on first use."""

from __future__ import annotations

import importlib.util
import platform
import re
from pathlib import Path
from typing import Any

_DTYPES = {"float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}


def guess_device(setting: str) -> str:
    if setting != "auto":
        return setting
    spec = importlib.util.find_spec("torch")
    if spec is not None and spec.origin:
        version_file = Path(spec.origin).parent / "version.py"
        try:
            text = version_file.read_text(encoding="utf-8")
        except OSError:
            text = ""
        cuda_build = re.search(r"^cuda(?:: \S+)? = '[\d.]+'", text, re.MULTILINE) is not None
        if cuda_build and (Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()):
            return "cuda"
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        return "mps"
    return "cpu"


def resolve_device(setting: str, precision: str) -> tuple[Any, Any]:
    """(torch.device, torch.dtype) for the settings; imports torch."""
    import torch

    if setting == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    else:
        name = setting
    device = torch.device(name)
    return device, auto_dtype(device) if precision == "auto" else getattr(torch, _DTYPES[precision])


def auto_dtype(device: Any) -> Any:
    """fp16 where it is fast and safe; on CUDA cards whose fp16 gives NaN (black images) in SD, bf16 where the
    card has it, else fp32; fp32 on the CPU (fp16 is slow there) and on MPS (some ops lack it)."""
    import torch

    if device.type != "cuda":
        return torch.float32
    if fp16_unsafe(torch.cuda.get_device_name(device)):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.float16


def fp16_unsafe(device_name: str) -> bool:
    """The GTX 16xx cards (Turing without tensor cores), which A1111 users run with `--no-half` because SD's
    fp16 UNet and VAE give NaN there."""
    return re.search(r"\bGTX 16\d\d\b", device_name) is not None
