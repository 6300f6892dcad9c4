"""Noise, the denoising loop, and the VAE both ways (`l2i` latents → image, `i2l` image → latents).
The torch work itself is in server/graph/denoise.py; these nodes connect it to the graph."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from server.graph import seamless
from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import LATENT_SCALE, blend_noise, decode_latents, encode_image, make_noise
from server.graph.fields import (
    BoardField,
    CoreMetadata,
    ImageField,
    LatentsField,
    VaeField,
)
from server.graph.nodes.base import REQUIRED, SEED_MAX, WIRE, WIRE_REQUIRED, Node, Output
from server.graph.schedulers import SCHEDULER_NAMES

Scheduler = Literal["ddim", "ddpm", "euler", "euler_a", "heun", "lms", "pndm", "dpmpp_2m", "dpmpp_2m_k", "unipc"]
assert Scheduler.__args__ == SCHEDULER_NAMES  # type: ignore[attr-defined]

Dimension = Annotated[int, msgspec.Meta(ge=64, le=4096, multiple_of=8)]


class NoiseOutput(Output, tag="noise_output"):
    noise: LatentsField
    width: int
    height: int


class LatentsOutput(Output, tag="latents_output"):
    latents: LatentsField
    width: int
    height: int


class ImageOutput(Output, tag="image_output"):
    image: ImageField
    width: int
    height: int


class NoiseNode(Node, tag="noise", kw_only=True):
    """Gaussian noise for a `width`×`height` image, from `seed`. Made on the CPU by default, so a seed gives
    the same image on every device. `variation_strength` > 0 moves it toward `variation_seed`'s noise (A1111's
    variation seeds): small strengths give variations of the seed's image, 1 gives the variation seed's."""

    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] = 0
    width: Dimension = 512
    height: Dimension = 512
    use_cpu: bool = True
    variation_seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] | None = None
    variation_strength: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.0
    output = NoiseOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> NoiseOutput:
        device = "cpu" if self.use_cpu else ctx.device
        noise = make_noise(self.seed, self.width, self.height, device)
        if self.variation_strength > 0:
            if self.variation_seed is None:
                raise NodeError("`variation_strength` needs a `variation_seed`")
            other = make_noise(self.variation_seed, self.width, self.height, device)
            noise = blend_noise(noise, other, self.variation_strength)
        name = ctx.put_tensor("noise", noise)
        return NoiseOutput(noise=LatentsField(latents_name=name, seed=self.seed), width=self.width, height=self.height)


class LatentsToImageNode(Node, tag="l2i", kw_only=True):
    """Decode latents with the VAE and save the image, with the graph and (when `metadata` is wired) the
    generation settings embedded in the PNG."""

    latents: Annotated[LatentsField | None, WIRE_REQUIRED] = None
    vae: Annotated[VaeField | None, WIRE_REQUIRED] = None
    metadata: Annotated[CoreMetadata | None, WIRE] = None
    board: BoardField | None = None
    is_intermediate: bool = False
    output = ImageOutput
    cacheable = False  # it saves a new image every time
    category = "image"

    def invoke(self, ctx: InvocationContext) -> ImageOutput:
        assert self.latents is not None and self.vae is not None
        latents = ctx.get_tensor(self.latents.latents_name)
        vae = ctx.load_model(self.vae.model, "vae")
        with seamless.tiled(vae, self.vae.seamless_axes):
            image = decode_latents(
                vae, latents, tiled=ctx.vae_tiled(latents.shape[-1] * LATENT_SCALE, latents.shape[-2] * LATENT_SCALE)
            )
        ctx.check_canceled()
        metadata = msgspec.json.encode(self.metadata).decode() if self.metadata is not None else None
        dto = ctx.save_image(
            image,
            is_intermediate=self.is_intermediate,
            board_id=self.board.board_id if self.board else None,
            metadata=metadata,
        )
        return ImageOutput(image=ImageField(image_name=dto.image_name), width=dto.width, height=dto.height)


class ImageToLatentsNode(Node, tag="i2l", kw_only=True):
    """Encode an image with the VAE (its mean, so the same image always gives the same latents)."""

    image: Annotated[ImageField | None, REQUIRED] = None
    vae: Annotated[VaeField | None, WIRE_REQUIRED] = None
    output = LatentsOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> LatentsOutput:
        assert self.vae is not None and self.image is not None
        image = ctx.open_image(self.image.image_name)
        if image.width < LATENT_SCALE or image.height < LATENT_SCALE:
            raise NodeError(f"image {self.image.image_name} is smaller than {LATENT_SCALE}×{LATENT_SCALE} pixels")
        vae = ctx.load_model(self.vae.model, "vae")
        with seamless.tiled(vae, self.vae.seamless_axes):
            latents = encode_image(vae, image, tiled=ctx.vae_tiled(image.width, image.height))
        name = ctx.put_tensor("latents", latents)
        height, width = latents.shape[-2] * LATENT_SCALE, latents.shape[-1] * LATENT_SCALE
        return LatentsOutput(latents=LatentsField(latents_name=name), width=width, height=height)


def size_text(latents: Any) -> str:
    return f"{latents.shape[-1] * LATENT_SCALE}×{latents.shape[-2] * LATENT_SCALE}"
