"""Noise, the denoising loop, and the VAE both ways (`l2i` latents → image, `i2l` image → latents).
The torch work itself is in server/graph/denoise.py; these nodes connect it to the graph."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from server.graph.context import InvocationContext, NodeError
from server.graph.denoise import LATENT_SCALE, as_conditioning, decode_latents, denoise, encode_image, make_noise
from server.graph.fields import (
    BoardField,
    ConditioningField,
    CoreMetadata,
    ImageField,
    LatentsField,
    UNetField,
    VaeField,
)
from server.graph.nodes.base import REQUIRED, SEED_MAX, WIRE, WIRE_REQUIRED, Node, Output
from server.graph.schedulers import SCHEDULER_NAMES, make_scheduler
from server.models import adapters

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
    the same image on every device."""

    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] = 0
    width: Dimension = 512
    height: Dimension = 512
    use_cpu: bool = True
    output = NoiseOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> NoiseOutput:
        noise = make_noise(self.seed, self.width, self.height, "cpu" if self.use_cpu else ctx.device)
        name = ctx.put_tensor("noise", noise)
        return NoiseOutput(noise=LatentsField(latents_name=name, seed=self.seed), width=self.width, height=self.height)


Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class DenoiseLatentsNode(Node, tag="denoise_latents", kw_only=True):
    """The diffusion loop, for SD-1, SD-2 (epsilon and v-prediction) and SDXL UNets: text-to-image from
    `noise`, or image-to-image from `latents` with `strength` (0 keeps the latents, 1 replaces them entirely).
    `denoising_end` < 1 stops part-way and hands on noisy latents; `denoising_start` > 0 continues such latents
    (an SDXL base/refiner split; noise is added only if wired). Reports every step, with a preview, and stops
    on cancel."""

    positive_conditioning: Annotated[ConditioningField | None, WIRE_REQUIRED] = None
    negative_conditioning: Annotated[ConditioningField | None, WIRE_REQUIRED] = None
    noise: Annotated[LatentsField | None, WIRE] = None
    latents: Annotated[LatentsField | None, WIRE] = None
    unet: Annotated[UNetField | None, WIRE_REQUIRED] = None
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 10
    cfg_scale: Annotated[float, msgspec.Meta(ge=0, le=200)] = 7.5
    scheduler: Scheduler = "euler"
    strength: Fraction = 1.0
    denoising_start: Fraction = 0.0
    denoising_end: Fraction = 1.0
    output = LatentsOutput
    category = "latents"

    def invoke(self, ctx: InvocationContext) -> LatentsOutput:
        assert self.unet is not None and self.positive_conditioning and self.negative_conditioning
        if self.noise is None and self.latents is None:
            raise NodeError("wire `noise` (text-to-image) or `latents` (image-to-image)")
        noise = ctx.get_tensor(self.noise.latents_name) if self.noise is not None else None
        init = ctx.get_tensor(self.latents.latents_name) if self.latents is not None else None
        if noise is not None and init is not None and noise.shape != init.shape:
            raise NodeError(f"`noise` is {_size(noise)} but `latents` are {_size(init)}; make them the same size")
        if self.denoising_start >= self.denoising_end:
            raise NodeError(
                f"`denoising_start` ({self.denoising_start}) must be below `denoising_end` ({self.denoising_end})"
            )
        if self.denoising_start > 0 and (init is None or self.strength < 1):
            raise NodeError("`denoising_start` continues `latents`: wire them, and leave `strength` at 1")
        positive = as_conditioning(ctx.get_tensor(self.positive_conditioning.conditioning_name))
        negative = as_conditioning(ctx.get_tensor(self.negative_conditioning.conditioning_name))
        if positive.embeds.shape[1:] != negative.embeds.shape[1:] or (positive.pooled is None) != (
            negative.pooled is None
        ):
            raise NodeError("the positive and negative conditioning come from different text encoders")
        unet = ctx.load_model(self.unet.model, "unet")
        expected = unet.config.cross_attention_dim
        if positive.embeds.shape[-1] != expected or (positive.pooled is None) == (
            unet.config.addition_embed_type == "text_time"
        ):
            raise NodeError(
                f"the conditioning ({positive.embeds.shape[-1]} wide) is not for this UNet ({expected} wide"
                f"{', SDXL' if unet.config.addition_embed_type == 'text_time' else ''}): encode the prompts with the "
                "text encoders of the same model"
            )
        scheduler = make_scheduler(self.scheduler, ctx.load_model(self.unet.model, "scheduler"))
        seed = self.noise.seed if self.noise is not None and self.noise.seed is not None else 0
        loras = ctx.load_loras(self.unet.loras)
        sdxl = self.unet.model.base_model.startswith("sdxl")
        try:
            with adapters.active(unet, "unet", loras, sdxl=sdxl):
                latents = self._denoise(ctx, unet, scheduler, positive, negative, noise, init, seed)
        except adapters.AdapterError as exc:
            raise NodeError(str(exc)) from None
        name = ctx.put_tensor("latents", latents)
        height, width = latents.shape[-2] * LATENT_SCALE, latents.shape[-1] * LATENT_SCALE
        return LatentsOutput(latents=LatentsField(latents_name=name, seed=seed), width=width, height=height)

    def _denoise(
        self,
        ctx: InvocationContext,
        unet: Any,
        scheduler: Any,
        positive: Any,
        negative: Any,
        noise: Any,
        init: Any,
        seed: int,
    ) -> Any:
        assert self.unet is not None
        return denoise(
            unet=unet,
            scheduler=scheduler,
            positive=positive,
            negative=negative,
            noise=noise,
            init_latents=init,
            steps=self.steps,
            cfg_scale=self.cfg_scale,
            strength=self.strength,
            seed=seed,
            denoising_start=self.denoising_start,
            denoising_end=self.denoising_end,
            zeros_for_empty_negative=bool(ctx.pipeline_config(self.unet.model).get("force_zeros_for_empty_prompt")),
            before_step=ctx.check_canceled,
            after_step=ctx.progress,
        )


class TextToLatentsNode(DenoiseLatentsNode, tag="t2l", kw_only=True):
    """`denoise_latents` under its InvokeAI 3.0 name."""


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
        image = decode_latents(ctx.load_model(self.vae.model, "vae"), latents)
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
        latents = encode_image(ctx.load_model(self.vae.model, "vae"), image)
        name = ctx.put_tensor("latents", latents)
        height, width = latents.shape[-2] * LATENT_SCALE, latents.shape[-1] * LATENT_SCALE
        return LatentsOutput(latents=LatentsField(latents_name=name), width=width, height=height)


def _size(latents: Any) -> str:
    return f"{latents.shape[-1] * LATENT_SCALE}×{latents.shape[-2] * LATENT_SCALE}"
