"""Masks for inpainting and outpainting: `create_denoise_mask` for `denoise_latents`, `mask_from_alpha`, and
`img_pad` (a larger canvas for outpainting, with the mask of its new area). White always means "repaint"."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.graph import inpaint
from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import LATENT_SCALE
from server.graph.fields import BoardField, DenoiseMaskField, ImageField, VaeField
from server.graph.nodes.base import REQUIRED, WIRE, Node, Output
from server.graph.nodes.image import ImageOperation
from server.graph.nodes.latents import ImageOutput

Margin = Annotated[int, msgspec.Meta(ge=0, le=4096, multiple_of=8)]


class DenoiseMaskOutput(Output, tag="denoise_mask_output"):
    denoise_mask: DenoiseMaskField
    # True when the mask was not the image's size and was stretched to it.
    mask_resized: bool = False


class CreateDenoiseMaskNode(Node, tag="create_denoise_mask", kw_only=True):
    """Where `denoise_latents` repaints: white in `mask`. With `vae` wired, also the masked image's latents that
    inpaint-variant models (9-channel UNets) take. A mask of another size than the image is stretched to it."""

    image: Annotated[ImageField | None, REQUIRED] = None
    mask: Annotated[ImageField | None, REQUIRED] = None
    vae: Annotated[VaeField | None, WIRE] = None
    output = DenoiseMaskOutput
    category = "inpaint"

    def invoke(self, ctx: InvocationContext) -> DenoiseMaskOutput:
        assert self.image is not None and self.mask is not None
        image = ctx.open_image(self.image.image_name)
        if image.width < LATENT_SCALE or image.height < LATENT_SCALE:
            raise NodeError(f"image {self.image.image_name} is smaller than {LATENT_SCALE}×{LATENT_SCALE} pixels")
        mask_image = ctx.open_image(self.mask.image_name)
        width, height = image.width // LATENT_SCALE * LATENT_SCALE, image.height // LATENT_SCALE * LATENT_SCALE
        pixels = inpaint.mask_pixels(mask_image, width, height)
        masked_name = None
        if self.vae is not None:
            vae = ctx.load_model(self.vae.model, "vae")
            masked_name = ctx.put_tensor("masked_latents", inpaint.masked_image_latents(vae, image, pixels))
        mask_name = ctx.put_tensor("mask", inpaint.latent_mask(pixels))
        return DenoiseMaskOutput(
            denoise_mask=DenoiseMaskField(mask_name=mask_name, masked_latents_name=masked_name),
            mask_resized=mask_image.size != image.size,
        )


class MaskFromAlphaNode(ImageOperation, tag="mask_from_alpha", kw_only=True):
    """A mask from an image's transparency: white where it is transparent (to be filled), black where it is
    opaque; `invert` swaps them."""

    image: Annotated[ImageField | None, REQUIRED] = None
    invert: bool = False
    category = "inpaint"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        from PIL import ImageOps

        assert self.image is not None
        image = ctx.open_image(self.image.image_name)
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA", "PA") else None
        if alpha is None:
            raise NodeError(f"image {self.image.image_name} has no transparency to make a mask from")
        mask = ImageOps.invert(alpha)
        return self._save(ctx, ImageOps.invert(mask) if self.invert else mask, category="mask")


class PadOutput(Output, tag="img_pad_output"):
    image: ImageField
    mask: ImageField
    width: int
    height: int


class ImagePadNode(Node, tag="img_pad", kw_only=True):
    """Outpainting's canvas: the image with `left`/`right`/`top`/`bottom` pixels added, filled by stretching its
    edge pixels (`edge`) or with grey (`fill`), and the mask of the added area (white), a few pixels into the
    image too so the seam is repainted."""

    image: Annotated[ImageField | None, REQUIRED] = None
    left: Margin = 0
    right: Margin = 0
    top: Margin = 0
    bottom: Margin = 0
    fill: Literal["edge", "fill"] = "edge"
    # How far into the original the mask reaches, so the new area joins it without a visible seam.
    overlap: Annotated[int, msgspec.Meta(ge=0, le=256)] = 8
    board: BoardField | None = None
    is_intermediate: bool = False
    output = PadOutput
    cacheable = False  # it saves new images
    category = "inpaint"

    def invoke(self, ctx: InvocationContext) -> PadOutput:
        import numpy as np
        from PIL import Image

        assert self.image is not None
        image = ctx.open_image(self.image.image_name).convert("RGB")
        if not (self.left or self.right or self.top or self.bottom):
            raise NodeError("give at least one side to extend (left, right, top or bottom)")
        pixels = np.asarray(image)
        widths = ((self.top, self.bottom), (self.left, self.right), (0, 0))
        padded = (
            np.pad(pixels, widths, mode="edge") if self.fill == "edge" else np.pad(pixels, widths, constant_values=127)
        )
        mask = np.full(padded.shape[:2], 255, dtype=np.uint8)
        inner_top, inner_left = (
            self.top + (self.overlap if self.top else 0),
            self.left + (self.overlap if self.left else 0),
        )
        inner_bottom = self.top + image.height - (self.overlap if self.bottom else 0)
        inner_right = self.left + image.width - (self.overlap if self.right else 0)
        mask[inner_top:inner_bottom, inner_left:inner_right] = 0
        board_id = self.board.board_id if self.board else None
        canvas = ctx.save_image(Image.fromarray(padded, "RGB"), is_intermediate=self.is_intermediate, board_id=board_id)
        mask_dto = ctx.save_image(
            Image.fromarray(mask, "L"), is_intermediate=self.is_intermediate, board_id=board_id, category="mask"
        )
        return PadOutput(
            image=ImageField(image_name=canvas.image_name),
            mask=ImageField(image_name=mask_dto.image_name),
            width=canvas.width,
            height=canvas.height,
        )
