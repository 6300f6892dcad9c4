"""The diffusion loop and the VAE both ways, as plain functions of loaded components (the nodes in
nodes/latents.py wire them to the graph).

The loop is the one of diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline - the same
scheduler calls, the same classifier-free guidance, the same random stream - so the same components, seed,
scheduler and steps give the same pixels; tests/graph/test_denoise.py holds it to that. Owning the loop is
what lets every step report progress and stop on cancel."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.graph import control

if TYPE_CHECKING:
    from server.graph.control import PreparedControl

LATENT_CHANNELS = 4
# SD-1/2 VAEs downsample by 8 (LAB.md: the tiny model keeps that on purpose).
LATENT_SCALE = 8

StepCallback = Callable[[int, int, Any], None]


def make_noise(seed: int, width: int, height: int, device: Any = "cpu") -> Any:
    """Gaussian noise for a width×height image, float32 whatever the model's precision, so a seed gives the
    same numbers on every device when `device` is the CPU (the default)."""
    import torch

    generator = torch.Generator(device).manual_seed(seed)
    shape = (1, LATENT_CHANNELS, height // LATENT_SCALE, width // LATENT_SCALE)
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)


def blend_noise(noise: Any, other: Any, strength: float) -> Any:
    """Spherical interpolation from `noise` (strength 0) to `other` (1), per latent pixel across channels:
    A1111's variation seeds. Gaussian noise keeps its spread along the arc, where a straight mix would shrink
    it (and wash the image out) halfway."""
    import torch

    if strength <= 0:
        return noise
    if strength >= 1:
        return other
    unit = noise / noise.norm(dim=1, keepdim=True)
    other_unit = other / other.norm(dim=1, keepdim=True)
    cosine = (unit * other_unit).sum(dim=1, keepdim=True).clamp(-1, 1)
    if cosine.mean() > 0.9995:  # nearly parallel: the arc is a line
        return (1 - strength) * noise + strength * other
    omega = torch.acos(cosine)
    return (torch.sin((1 - strength) * omega) * noise + torch.sin(strength * omega) * other) / torch.sin(omega)


@dataclass
class TextConditioning:
    """A prompt as the UNet takes it: SD-1/2 need only `embeds`; SDXL also the second encoder's pooled output
    and the time ids (original size, crop, target size; the refiner: an aesthetic score instead of a size)."""

    embeds: Any
    pooled: Any | None = None
    time_ids: tuple[float, ...] | None = None
    # Encoded from an empty prompt: SDXL models that say `force_zeros_for_empty_prompt` then take zeros instead.
    empty: bool = False
    # A long prompt (more than one 77-token chunk) carries the empty prompt's encoding of one chunk: the shorter
    # of the positive and negative conditioning is padded with it, as A1111 and compel do.
    padding: Any | None = None


@dataclass
class ConditioningSchedule:
    """Conditionings that take turns over the steps (A1111's prompt editing and alternation): each entry is used
    while the step index is below `until` × the number of steps; the last entry's `until` is 1."""

    entries: list[tuple[float, TextConditioning]]

    def at(self, index: int, total: int) -> TextConditioning:
        for until, conditioning in self.entries[:-1]:
            if index < until * total:
                return conditioning
        return self.entries[-1][1]


Conditioning = TextConditioning | ConditioningSchedule


@dataclass
class DenoiseMask:
    """Where to repaint, for the loop (made by server/graph/inpaint.py)."""

    mask: Any  # 1 × 1 × h × w at latent size, 1 where the latents are repainted
    masked_latents: Any | None = None  # 1 × 4 × h × w: the masked image, encoded (inpaint UNets only)


def as_conditioning(value: Any) -> Conditioning:
    if isinstance(value, TextConditioning | ConditioningSchedule):
        return value
    return TextConditioning(embeds=value)


def conditioning_entries(value: Conditioning) -> list[TextConditioning]:
    return [entry for _, entry in value.entries] if isinstance(value, ConditioningSchedule) else [value]


def _at(value: Conditioning, index: int, total: int) -> TextConditioning:
    return value.at(index, total) if isinstance(value, ConditioningSchedule) else value


def denoise(
    *,
    unet: Any,
    scheduler: Any,
    positive: Any,
    negative: Any,
    noise: Any | None,
    init_latents: Any | None,
    steps: int,
    cfg_scale: float,
    strength: float,
    seed: int,
    denoising_start: float = 0.0,
    denoising_end: float = 1.0,
    zeros_for_empty_negative: bool = False,
    controls: Sequence[PreparedControl] = (),
    mask: DenoiseMask | None = None,
    before_step: Callable[[], None] | None = None,
    after_step: StepCallback | None = None,
) -> Any:
    """Text-to-image from `noise` (init_latents None), or image-to-image from `init_latents` skipping the first
    (1 - strength) of the steps, with `noise` added at the first remaining step when given. `denoising_start`
    / `denoising_end` split one schedule between two runs as diffusers' SDXL pipelines do: the first stops at
    `denoising_end` and returns noisy latents, the second starts at `denoising_start` from them, adding noise
    only if `noise` is given. Returns latents; nothing to do returns `init_latents` untouched. `before_step` may
    raise to stop (cancel); `after_step(step, total, latents)` reports progress.

    `controls` add ControlNet residuals (server/graph/control.py); `mask` repaints only where it is white, as
    StableDiffusionInpaintPipeline does: a 4-channel UNet gets the original (`init_latents`) put back outside the
    mask after every step, a 9-channel one the mask and masked image as extra channels; at strength 1 it starts
    from pure noise. Where the pipelines sample the VAE's posterior with the generator we take its mean (one image,
    one result), so the generator's only draw before the loop is the noise's, which we repeat."""
    import torch

    device, dtype = unet.device, unet.dtype
    positive, negative = as_conditioning(positive), as_conditioning(negative)
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    train_steps = scheduler.config.num_train_timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    if noise is not None and denoising_start == 0:
        # The pipelines draw their initial noise from the generator they then hand to the scheduler; drawing
        # the same numbers leaves ours in the same state, so ancestral samplers (euler_a, ddpm) match too.
        torch.randn(noise.shape, generator=generator, dtype=torch.float32)
    if mask is not None and (init_latents is None or noise is None):
        raise ValueError("inpainting needs the original's latents and noise")
    if init_latents is None or (mask is not None and strength >= 1):
        if noise is None:
            raise ValueError("text-to-image needs noise")
        latents = noise.to(device, dtype) * scheduler.init_noise_sigma
        if mask is not None and hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
    else:
        if denoising_start > 0:
            # StableDiffusionXLImg2ImgPipeline.get_timesteps with denoising_start.
            cutoff = round(train_steps - denoising_start * train_steps)
            count = int((timesteps < cutoff).sum().item())
            if scheduler.order == 2 and count % 2 == 0:
                count += 1  # never stop between a second-order step's two evaluations
            t_start = len(timesteps) - count
        else:
            t_start = (steps - min(int(steps * strength), steps)) * scheduler.order
        timesteps = timesteps[t_start:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start)
        if len(timesteps) == 0:
            return init_latents
        latents = init_latents.to(device, dtype)
        if noise is not None:
            latents = scheduler.add_noise(latents, noise.to(device, dtype), timesteps[:1])
    if denoising_end < 1:
        cutoff = round(train_steps - denoising_end * train_steps)
        timesteps = timesteps[: len([t for t in timesteps if t >= cutoff])]

    step_parameters = inspect.signature(scheduler.step).parameters
    step_kwargs: dict[str, Any] = {}
    if "eta" in step_parameters:
        step_kwargs["eta"] = 0.0
    if "generator" in step_parameters:
        step_kwargs["generator"] = generator
    guided = cfg_scale > 1.0  # the pipeline's rule: no unconditional pass at cfg ≤ 1
    conditioned: dict[tuple[int, int], tuple[Any, dict[str, Any] | None]] = {}

    def conditioning_at(index: int) -> tuple[Any, dict[str, Any] | None]:
        pair = _at(positive, index, total), _at(negative, index, total)
        key = id(pair[0]), id(pair[1])
        if key not in conditioned:
            conditioned[key] = _unet_conditioning(*pair, guided, zeros_for_empty_negative, device, dtype)
        return conditioned[key]

    total = len(timesteps)
    conditioning_at(0)  # a mismatch of the two fails before the first step
    extra_channels = _inpaint_channels(unet, mask, guided, device, dtype)
    blend = mask is not None and extra_channels is None
    with torch.inference_mode():
        for index, timestep in enumerate(timesteps):
            if before_step is not None:
                before_step()
            context, added = conditioning_at(index)
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            down, mid = control.residuals(controls, index, total, model_input, timestep, context, added, guided)
            if extra_channels is not None:
                model_input = torch.cat([model_input, extra_channels], dim=1)
            noise_pred = unet(
                model_input,
                timestep,
                encoder_hidden_states=context,
                added_cond_kwargs=added,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
                return_dict=False,
            )[0]
            if guided:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + cfg_scale * (text - uncond)
            latents = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=False)[0]
            if blend:
                assert mask is not None and init_latents is not None and noise is not None
                # Outside the mask, the original, noised to where the next step starts.
                kept = init_latents.to(device, dtype)
                if index < total - 1:
                    kept = scheduler.add_noise(kept, noise.to(device, dtype), timesteps[index + 1 : index + 2])
                keep = mask.mask.to(device, dtype)
                latents = (1 - keep) * kept + keep * latents
            if after_step is not None:
                after_step(index + 1, total, latents)
    return latents


def _inpaint_channels(unet: Any, mask: DenoiseMask | None, guided: bool, device: Any, dtype: Any) -> Any | None:
    """The mask and masked-image latents an inpaint (9-channel) UNet takes beside the latents; None for others."""
    import torch

    channels = unet.config.in_channels
    if channels == 4:
        return None
    if mask is None or mask.masked_latents is None:
        raise ValueError(
            f"this UNet takes {channels} input channels: an inpaint model needs a `denoise_mask` made with the VAE"
        )
    extra = torch.cat([mask.mask.to(device, dtype), mask.masked_latents.to(device, dtype)], dim=1)
    return torch.cat([extra] * 2) if guided else extra


def _unet_conditioning(
    positive: TextConditioning, negative: TextConditioning, guided: bool, zeros: bool, device: Any, dtype: Any
) -> tuple[Any, dict[str, Any] | None]:
    """The UNet's `encoder_hidden_states` and (SDXL) `added_cond_kwargs`, negative first when guided."""
    import torch

    if positive.embeds.shape[-1] != negative.embeds.shape[-1] or (positive.pooled is None) != (negative.pooled is None):
        raise ValueError("the positive and negative conditioning come from different text encoders")
    negative_embeds, negative_pooled = negative.embeds, negative.pooled
    positive_embeds = positive.embeds
    if positive_embeds.shape[1] != negative_embeds.shape[1]:
        positive_embeds, negative_embeds = _same_length(positive, negative)
    if zeros and negative.empty:
        # StableDiffusionXLPipeline with no negative prompt: zeros, when the model's config says so.
        negative_embeds = torch.zeros_like(positive_embeds)
        negative_pooled = torch.zeros_like(positive.pooled) if positive.pooled is not None else None
    positive_embeds = positive_embeds.to(device, dtype)
    context = torch.cat([negative_embeds.to(device, dtype), positive_embeds]) if guided else positive_embeds
    if positive.pooled is None:
        return context, None
    assert negative_pooled is not None and positive.time_ids is not None and negative.time_ids is not None
    pooled = positive.pooled.to(device, dtype)
    time_ids = torch.tensor([positive.time_ids], dtype=dtype, device=device)
    if guided:
        pooled = torch.cat([negative_pooled.to(device, dtype), pooled])
        time_ids = torch.cat([torch.tensor([negative.time_ids], dtype=dtype, device=device), time_ids])
    return context, {"text_embeds": pooled, "time_ids": time_ids}


def _same_length(positive: TextConditioning, negative: TextConditioning) -> tuple[Any, Any]:
    """Both conditionings as long as the longer, the shorter padded with empty-prompt chunks."""
    import torch

    longer, shorter = (
        (positive, negative) if positive.embeds.shape[1] > negative.embeds.shape[1] else (negative, positive)
    )
    padding = longer.padding if longer.padding is not None else shorter.padding
    missing = longer.embeds.shape[1] - shorter.embeds.shape[1]
    if padding is None or missing % padding.shape[1]:
        raise ValueError(
            f"the positive conditioning has {positive.embeds.shape[1]} tokens and the negative "
            f"{negative.embeds.shape[1]}: encode both with the same long-prompt setting"
        )
    pad = padding.to(shorter.embeds.device, shorter.embeds.dtype).repeat(1, missing // padding.shape[1], 1)
    padded = torch.cat([shorter.embeds, pad], dim=1)
    return (longer.embeds, padded) if longer is positive else (padded, longer.embeds)


def decode_latents(vae: Any, latents: Any, tiled: bool = False) -> Any:
    """Latents → a PIL image, with the pipeline's own post-processing so pixels match it exactly. `tiled`
    decodes overlapping tiles and blends them (diffusers' tiled VAE): memory bounded by a tile, pixels close to
    the whole decode but not equal."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    scaled = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor
    with torch.inference_mode():
        decoded = (vae.tiled_decode if tiled else vae.decode)(scaled, return_dict=False)[0]
    return VaeImageProcessor(vae_scale_factor=LATENT_SCALE).postprocess(decoded, output_type="pil")[0]


def encode_image(vae: Any, image: Any, tiled: bool = False) -> Any:
    """A PIL image → latents: the distribution's mean (no sampling), so one image always gives one result."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    pixels = VaeImageProcessor(vae_scale_factor=LATENT_SCALE).preprocess(image.convert("RGB"))
    with torch.inference_mode():
        encoded = (vae.tiled_encode if tiled else vae.encode)(pixels.to(vae.device, vae.dtype))
        return encoded.latent_dist.mode() * vae.config.scaling_factor
