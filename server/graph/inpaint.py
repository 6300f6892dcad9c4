"""Masks for inpainting (torch work, on the worker thread), made as diffusers' StableDiffusionInpaintPipeline makes
them: the mask binarised at 0.5 and shrunk to latent size (nearest), the masked image (the original where the
mask is black, grey where it is white) encoded for inpaint-variant UNets.

White means repaint. A normal (4-channel) UNet repaints by blending: after every step, what lies outside the mask
is put back from the original's latents, noised to the next step. An inpaint (9-channel) UNet sees the mask and
the masked image's latents as five extra input channels."""

from __future__ import annotations

from typing import Any

from server.graph.denoise import LATENT_SCALE


def mask_pixels(mask: Any, width: int, height: int) -> Any:
    """The mask image as 1 × 1 × H × W in {0, 1} at the image's size (resized if it is not)."""
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(
        vae_scale_factor=LATENT_SCALE, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    return processor.preprocess(mask, height=height, width=width)


def latent_mask(pixels: Any) -> Any:
    import torch

    height, width = pixels.shape[-2:]
    return torch.nn.functional.interpolate(pixels, size=(height // LATENT_SCALE, width // LATENT_SCALE))


def masked_image_latents(vae: Any, image: Any, pixels: Any) -> Any:
    """The image with the repainted area greyed out, encoded with the VAE (its mean: one image, one result)."""
    import torch
    from diffusers.image_processor import VaeImageProcessor

    height, width = pixels.shape[-2:]
    original = VaeImageProcessor(vae_scale_factor=LATENT_SCALE).preprocess(
        image.convert("RGB"), height=height, width=width
    )
    masked = original * (pixels < 0.5)
    with torch.inference_mode():
        encoded = vae.encode(masked.to(vae.device, vae.dtype)).latent_dist.mode()
    return encoded * vae.config.scaling_factor
