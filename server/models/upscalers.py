"""Upscaler models (ESRGAN, RealESRGAN, SwinIR, HAT, DAT, ... whatever spandrel reads), recognised, loaded and run.

Recognising a file reads its header only: spandrel's architectures are told apart by their tensor names and
shapes, so the probe hands it tensors on the `meta` device (no data) and builds the model there to learn its
scale. Loading reads the weights ourselves, pickles only through `weights_only`, and gives spandrel the state
dict (its own `.pth` reader unpickles with a restricted unpickler, not `weights_only`).

Running tiles the image: each tile is upscaled with a margin of context around it, of which only the tile's own
part is kept, so memory stays bounded and no seam shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Context kept around each tile, in input pixels: wider than the receptive field that matters for these nets.
TILE_OVERLAP = 32
_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


class NotAnUpscaler(Exception):
    """The tensors are no architecture spandrel knows; the message says why."""


@dataclass(frozen=True)
class UpscalerInfo:
    architecture: str
    scale: int
    input_channels: int
    output_channels: int


def describe(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str] | None = None) -> UpscalerInfo:
    """What an upscaler's tensors are, from their names and shapes alone."""
    import torch

    from server.models.libraries import quiet_ml_libraries

    quiet_ml_libraries()
    from spandrel import MAIN_REGISTRY, ImageModelDescriptor
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    dtypes = dtypes or {}
    state = {
        name: torch.empty(shape, dtype=getattr(torch, _DTYPES.get(dtypes.get(name, "F32"), "float32")), device="meta")
        for name, shape in shapes.items()
    }
    state = canonicalize_state_dict(state)
    support = next((a for a in MAIN_REGISTRY.architectures("detection") if a.architecture.detect(state)), None)
    if support is None:
        raise NotAnUpscaler("its tensors match no upscaler architecture spandrel knows (ESRGAN, SwinIR, HAT, DAT...)")
    try:
        with torch.device("meta"):
            descriptor = support.architecture.load(state)
    except Exception as exc:
        raise NotAnUpscaler(f"it looks like {support.architecture.name} but does not load as one: {exc}") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise NotAnUpscaler(f"{support.architecture.name} is not an image-to-image model (it needs a mask)")
    return UpscalerInfo(
        architecture=support.architecture.name,
        scale=descriptor.scale,
        input_channels=descriptor.input_channels,
        output_channels=descriptor.output_channels,
    )


@dataclass
class Upscaler:
    """A loaded upscaler: spandrel's descriptor, placed on the generation device."""

    descriptor: Any
    label: str

    @property
    def scale(self) -> int:
        return int(self.descriptor.scale)

    def parameters(self) -> Any:
        """For the model cache's byte count."""
        return self.descriptor.model.parameters()

    def buffers(self) -> Any:
        return self.descriptor.model.buffers()


def load(path: Path, label: str, device: Any, dtype: Any) -> Upscaler:
    import torch

    from server.models.libraries import quiet_ml_libraries
    from server.models.weights import read_state_dict

    quiet_ml_libraries()
    from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

    state = read_state_dict(path)
    try:
        descriptor = ModelLoader(device="cpu").load_from_state_dict(state)
    except UnsupportedModelError as exc:
        raise NotAnUpscaler(f"{label}: {exc}") from None
    if not isinstance(descriptor, ImageModelDescriptor):
        raise NotAnUpscaler(f"{label} is not an image-to-image model")
    descriptor.eval()
    descriptor.to(device)
    # Half precision only where the architecture supports it (spandrel says which); else fp32.
    if dtype == torch.float16 and descriptor.supports_half:
        descriptor.half()
    elif dtype == torch.bfloat16 and descriptor.supports_bfloat16:
        descriptor.bfloat16()
    return Upscaler(descriptor=descriptor, label=label)


def upscale(upscaler: Upscaler, image: Any, tile_size: int, on_tile: Any = None) -> Any:
    """A PIL image `scale` times larger. `tile_size` 0 runs the whole image at once; otherwise tiles of that many
    input pixels a side, each with TILE_OVERLAP pixels of context. An alpha channel is resized with Lanczos.
    `on_tile(done, total)` after each tile (progress; may raise to stop)."""
    import numpy as np
    import torch
    from PIL import Image

    descriptor = upscaler.descriptor
    scale = upscaler.scale
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    rgb = image.convert("L" if descriptor.input_channels == 1 else "RGB")
    pixels = np.asarray(rgb, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    height, width = tensor.shape[-2:]
    out = np.zeros((height * scale, width * scale, descriptor.output_channels), dtype=np.uint8)
    step = tile_size if tile_size > 0 else max(height, width)
    tiles = [(y, x) for y in range(0, height, step) for x in range(0, width, step)]
    parameter = next(descriptor.model.parameters())
    with torch.inference_mode():
        for done, (y, x) in enumerate(tiles, start=1):
            y1, x1 = min(y + step, height), min(x + step, width)
            # The tile plus its margin of context, clamped to the image.
            top, left = max(0, y - TILE_OVERLAP), max(0, x - TILE_OVERLAP)
            bottom, right = min(height, y1 + TILE_OVERLAP), min(width, x1 + TILE_OVERLAP)
            piece = tensor[:, :, top:bottom, left:right].to(parameter.device, parameter.dtype)
            result = descriptor(piece).clamp(0, 1)
            keep = result[0, :, (y - top) * scale : (y1 - top) * scale, (x - left) * scale : (x1 - left) * scale]
            rows = (keep.permute(1, 2, 0).float().cpu().numpy() * 255.0).round().astype(np.uint8)
            out[y * scale : y1 * scale, x * scale : x1 * scale] = rows
            if on_tile is not None:
                on_tile(done, len(tiles))
    result_image = Image.fromarray(out[:, :, 0] if out.shape[2] == 1 else out, "L" if out.shape[2] == 1 else "RGB")
    if alpha is not None:
        result_image = result_image.convert("RGBA")
        result_image.putalpha(alpha.resize(result_image.size, Image.Resampling.LANCZOS))
    return result_image
