"""The diffusion loop and the VAE both ways, as plain functions of loaded components (the nodes in
nodes/latents.py wire them to the graph).

The loop is the one of diffusers' StableDiffusionPipeline / StableDiffusionImg2ImgPipeline - the same
scheduler calls, the same classifier-free guidance, the same random stream - so the same components, seed,
scheduler and steps give the same pixels; tests/graph/test_denoise.py holds it to that. Owning the loop is
what lets every step report progress and stop on cancel."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

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
    before_step: Callable[[], None] | None = None,
    after_step: StepCallback | None = None,
) -> Any:
    """Text-to-image from `noise` (init_latents None), or image-to-image from `init_latents` skipping the first
    (1 - strength) of the steps, with `noise` added at the first remaining step when given. Returns latents;
    strength 0 returns `init_latents` untouched. `before_step` may raise to stop (cancel); `after_step(step,
    total, latents)` reports progress."""
    import torch

    device, dtype = unet.device, unet.dtype
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    generator = torch.Generator("cpu").manual_seed(seed)
    if init_latents is None:
        if noise is None:
            raise ValueError("text-to-image needs noise")
        # The pipeline draws its initial noise from the generator it then hands to the scheduler; drawing
        # the same numbers leaves ours in the same state, so ancestral samplers (euler_a, ddpm) match too.
        torch.randn(noise.shape, generator=generator, dtype=torch.float32)
        latents = noise.to(device, dtype) * scheduler.init_noise_sigma
    else:
        order = scheduler.order
        t_start = steps - min(int(steps * strength), steps)
        timesteps = timesteps[t_start * order :]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * order)
        if len(timesteps) == 0:
            return init_latents
        latents = init_latents.to(device, dtype)
        if noise is not None:
            latents = scheduler.add_noise(latents, noise.to(device, dtype), timesteps[:1])

    step_parameters = inspect.signature(scheduler.step).parameters
    step_kwargs: dict[str, Any] = {}
    if "eta" in step_parameters:
        step_kwargs["eta"] = 0.0
    if "generator" in step_parameters:
        step_kwargs["generator"] = generator
    guided = cfg_scale > 1.0  # the pipeline's rule: no unconditional pass at cfg ≤ 1
    positive = positive.to(device, dtype)
    context = torch.cat([negative.to(device, dtype), positive]) if guided else positive
    total = len(timesteps)
    with torch.inference_mode():
        for index, timestep in enumerate(timesteps):
            if before_step is not None:
                before_step()
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, timestep)
            noise_pred = unet(model_input, timestep, encoder_hidden_states=context, return_dict=False)[0]
            if guided:
                uncond, text = noise_pred.chunk(2)
                noise_pred = uncond + cfg_scale * (text - uncond)
            latents = scheduler.step(noise_pred, timestep, latents, **step_kwargs, return_dict=False)[0]
            if after_step is not None:
                after_step(index + 1, total, latents)
    return latents


def decode_latents(vae: Any, latents: Any) -> Any:
    """Latents → a PIL image, with the pipeline's own post-processing so pixels match it exactly."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    with torch.inference_mode():
        decoded = vae.decode(latents.to(vae.device, vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
    return VaeImageProcessor(vae_scale_factor=LATENT_SCALE).postprocess(decoded, output_type="pil")[0]


def encode_image(vae: Any, image: Any) -> Any:
    """A PIL image → latents: the distribution's mean (no sampling), so one image always gives one result."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    pixels = VaeImageProcessor(vae_scale_factor=LATENT_SCALE).preprocess(image.convert("RGB"))
    with torch.inference_mode():
        return vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
