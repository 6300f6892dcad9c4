"""Making images bigger: `esrgan` (an upscaler model read by spandrel, tiled so memory stays bounded) and the
latent resizes `lresize` / `lscale` for a hires pass (txt2img → `lscale` → `denoise_latents` at strength < 1)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import LATENT_SCALE
from server.graph.fields import ImageField, LatentsField
from server.graph.nodes.base import REQUIRED, WIRE_REQUIRED, Node, model_input
from server.graph.nodes.image import ImageOperation
from server.graph.nodes.latents import Dimension, ImageOutput, LatentsOutput
from server.models import upscalers
from server.models.schema import ModelIdentifier

LatentMode = Literal["nearest", "nearest-exact", "bilinear", "bicubic", "area"]


class ESRGANNode(ImageOperation, tag="esrgan", kw_only=True):
    """Upscale with an `upscale` model (ESRGAN, RealESRGAN, SwinIR, HAT, DAT... whatever spandrel reads) to the
    model's scale, `tile_size` pixels at a time with overlapping context (0: the whole image at once)."""

    image: Annotated[ImageField | None, REQUIRED] = None
    model: Annotated[ModelIdentifier, model_input("upscale")]
    tile_size: Annotated[int, msgspec.Meta(ge=0, le=4096)] = 512
    category = "upscale"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.image is not None
        upscaler = ctx.load_model(self.model)
        image = ctx.open_image(self.image.image_name)

        def tile_done(done: int, total: int) -> None:
            ctx.check_canceled()
            if total > 1:
                ctx.progress(done, total, None)

        try:
            result = upscalers.upscale(upscaler, image, self.tile_size, on_tile=tile_done)
        except RuntimeError as exc:  # out of memory, mostly: smaller tiles help
            raise NodeError(f"upscaling with {self.model.key} failed: {exc}; try a smaller tile_size") from None
        return self._save(ctx, result)


class LatentsResizeNode(Node, tag="lresize", kw_only=True):
    """Latents resized for an image of `width`×`height` (a hires pass continues them at strength < 1)."""

    latents: Annotated[LatentsField | None, WIRE_REQUIRED] = None
    width: Dimension = 512
    height: Dimension = 512
    mode: LatentMode = "bilinear"
    antialias: bool = False
    output = LatentsOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> LatentsOutput:
        assert self.latents is not None
        latents = ctx.get_tensor(self.latents.latents_name)
        size = (self.height // LATENT_SCALE, self.width // LATENT_SCALE)
        return _resized(ctx, self.latents, latents, size, self.mode, self.antialias)


class LatentsScaleNode(Node, tag="lscale", kw_only=True):
    """Latents scaled by `scale_factor` (2: an image twice as wide and high)."""

    latents: Annotated[LatentsField | None, WIRE_REQUIRED] = None
    scale_factor: Annotated[float, msgspec.Meta(gt=0, le=8)] = 2.0
    mode: LatentMode = "bilinear"
    antialias: bool = False
    output = LatentsOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> LatentsOutput:
        assert self.latents is not None
        latents = ctx.get_tensor(self.latents.latents_name)
        size = (round(latents.shape[-2] * self.scale_factor), round(latents.shape[-1] * self.scale_factor))
        if min(size) < 1:
            raise NodeError(f"scale_factor {self.scale_factor} leaves no latents")
        return _resized(ctx, self.latents, latents, size, self.mode, self.antialias)


def _resized(
    ctx: InvocationContext, field: LatentsField, latents: object, size: tuple[int, int], mode: str, antialias: bool
) -> LatentsOutput:
    import torch

    smooth = mode in ("bilinear", "bicubic")
    with torch.inference_mode():
        resized = torch.nn.functional.interpolate(
            latents,  # type: ignore[arg-type]
            size=size,
            mode=mode,
            antialias=antialias and smooth,
            **({"align_corners": False} if smooth else {}),
        )
    name = ctx.put_tensor("latents", resized)
    return LatentsOutput(
        latents=LatentsField(latents_name=name, seed=field.seed),
        width=size[1] * LATENT_SCALE,
        height=size[0] * LATENT_SCALE,
    )
