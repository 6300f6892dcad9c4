"""`denoise_latents` (and `t2l`, its InvokeAI 3.0 name): the diffusion loop as a node. It gathers what the loop
needs - conditioning, noise or latents, the UNet with its LoRAs, ControlNets, an inpainting mask - checks that the
parts belong together, and runs server/graph/denoise.py on the worker thread."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from server.graph import seamless
from server.graph.context import InvocationContext, NodeError
from server.graph.control import PreparedControl, prepare_image
from server.graph.denoise import (
    LATENT_SCALE,
    Conditioning,
    DenoiseMask,
    as_conditioning,
    conditioning_entries,
    denoise,
)
from server.graph.fields import ConditioningField, ControlField, DenoiseMaskField, LatentsField, UNetField
from server.graph.nodes.base import WIRE, WIRE_REQUIRED, Node
from server.graph.nodes.latents import LatentsOutput, Scheduler, size_text
from server.graph.schedulers import make_scheduler
from server.models import adapters

Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class DenoiseLatentsNode(Node, tag="denoise_latents", kw_only=True):
    """The diffusion loop, for SD-1, SD-2 (epsilon and v-prediction) and SDXL UNets: text-to-image from
    `noise`, or image-to-image from `latents` with `strength` (0 keeps the latents, 1 replaces them entirely).
    `denoising_end` < 1 stops part-way and hands on noisy latents; `denoising_start` > 0 continues such latents
    (an SDXL base/refiner split; noise is added only if wired). `control`: one `controlnet` output or a
    `collect` of several. `denoise_mask` (from `create_denoise_mask`): repaint only where the mask is white.
    Reports every step, with a preview, and stops on cancel."""

    positive_conditioning: Annotated[ConditioningField | None, WIRE_REQUIRED] = None
    negative_conditioning: Annotated[ConditioningField | None, WIRE_REQUIRED] = None
    noise: Annotated[LatentsField | None, WIRE] = None
    latents: Annotated[LatentsField | None, WIRE] = None
    unet: Annotated[UNetField | None, WIRE_REQUIRED] = None
    control: Annotated[ControlField | list[ControlField] | None, WIRE] = None
    denoise_mask: Annotated[DenoiseMaskField | None, WIRE] = None
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
            raise NodeError(
                f"`noise` is {size_text(noise)} but `latents` are {size_text(init)}; make them the same size"
            )
        if self.denoising_start >= self.denoising_end:
            raise NodeError(
                f"`denoising_start` ({self.denoising_start}) must be below `denoising_end` ({self.denoising_end})"
            )
        if self.denoising_start > 0 and (init is None or self.strength < 1):
            raise NodeError("`denoising_start` continues `latents`: wire them, and leave `strength` at 1")
        positive = as_conditioning(ctx.get_tensor(self.positive_conditioning.conditioning_name))
        negative = as_conditioning(ctx.get_tensor(self.negative_conditioning.conditioning_name))
        unet = ctx.load_model(self.unet.model, "unet")
        _check_conditioning(unet, positive, negative)
        reference = noise if noise is not None else init
        assert reference is not None
        latent_shape = reference.shape
        mask = self._mask(ctx, init, noise, latent_shape)
        controls = self._controls(ctx, unet, latent_shape)
        scheduler = make_scheduler(self.scheduler, ctx.load_model(self.unet.model, "scheduler"))
        seed = self.noise.seed if self.noise is not None and self.noise.seed is not None else 0
        loras = ctx.load_loras(self.unet.loras)
        sdxl = self.unet.model.base_model.startswith("sdxl")
        try:
            with adapters.active(unet, "unet", loras, sdxl=sdxl), seamless.tiled(unet, self.unet.seamless_axes):
                latents = denoise(
                    unet=ctx.unet_runner(unet),
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
                    zeros_for_empty_negative=bool(
                        ctx.pipeline_config(self.unet.model).get("force_zeros_for_empty_prompt")
                    ),
                    controls=controls,
                    mask=mask,
                    before_step=ctx.check_canceled,
                    after_step=ctx.progress,
                )
        except adapters.AdapterError as exc:
            raise NodeError(str(exc)) from None
        except ValueError as exc:
            raise NodeError(str(exc)) from None
        name = ctx.put_tensor("latents", latents)
        height, width = latents.shape[-2] * LATENT_SCALE, latents.shape[-1] * LATENT_SCALE
        return LatentsOutput(latents=LatentsField(latents_name=name, seed=seed), width=width, height=height)

    def _mask(self, ctx: InvocationContext, init: Any, noise: Any, latent_shape: Any) -> DenoiseMask | None:
        if self.denoise_mask is None:
            return None
        mask = ctx.get_tensor(self.denoise_mask.mask_name)
        if tuple(mask.shape[-2:]) != tuple(latent_shape[-2:]):
            raise NodeError(
                f"the mask is for {size_text(mask)} images, these latents are {size_text(init if init is not None else noise)}"
            )
        if init is None or noise is None:
            raise NodeError("inpainting needs the original image's `latents` (from `i2l`) and `noise` wired")
        masked = self.denoise_mask.masked_latents_name
        return DenoiseMask(mask=mask, masked_latents=ctx.get_tensor(masked) if masked else None)

    def _controls(self, ctx: InvocationContext, unet: Any, latent_shape: Any) -> list[PreparedControl]:
        assert self.unet is not None
        given = self.control if isinstance(self.control, list) else [self.control] if self.control else []
        height, width = latent_shape[-2] * LATENT_SCALE, latent_shape[-1] * LATENT_SCALE
        prepared = []
        for item in given:
            if item.control_model.base_model != self.unet.model.base_model:
                raise NodeError(
                    f"ControlNet {item.control_model.key} is for {item.control_model.base_model} models, not "
                    f"{self.unet.model.key}"
                )
            if item.begin_step_percent >= item.end_step_percent:
                raise NodeError(
                    f"ControlNet {item.control_model.key}: begin_step_percent must be below end_step_percent"
                )
            image = ctx.open_image(item.image.image_name)
            prepared.append(
                PreparedControl(
                    model=ctx.load_model(item.control_model),
                    image=prepare_image(image, width, height, item.resize_mode, unet.device, unet.dtype),
                    weight=item.control_weight,
                    begin=item.begin_step_percent,
                    end=item.end_step_percent,
                    mode=item.control_mode,
                )
            )
        return prepared


def _check_conditioning(unet: Any, positive: Conditioning, negative: Conditioning) -> None:
    expected = unet.config.cross_attention_dim
    sdxl_unet = unet.config.addition_embed_type == "text_time"
    reference = conditioning_entries(negative)[0]
    for entry in conditioning_entries(positive) + conditioning_entries(negative):
        if entry.embeds.shape[-1] != reference.embeds.shape[-1] or (entry.pooled is None) != (reference.pooled is None):
            raise NodeError("the positive and negative conditioning come from different text encoders")
        if entry.embeds.shape[-1] != expected or (entry.pooled is None) == sdxl_unet:
            raise NodeError(
                f"the conditioning ({entry.embeds.shape[-1]} wide) is not for this UNet ({expected} wide"
                f"{', SDXL' if sdxl_unet else ''}): encode the prompts with the text encoders of the same model"
            )


class TextToLatentsNode(DenoiseLatentsNode, tag="t2l", kw_only=True):
    """`denoise_latents` under its InvokeAI 3.0 name."""
