"""`/sdapi/v1/*`: AUTOMATIC1111's API over our queue, gallery and models (docs/api.md §AUTOMATIC1111-compatible
API). Requests become the standard graphs (server/graph/standard) through translate.py; images come back as
base64 PNGs, the same files the gallery holds, with the A1111 infotext in their `parameters` chunk."""

from __future__ import annotations

from starlette.routing import Route

from server.graph.schedulers import SCHEDULER_NAMES
from server.http.a1111 import extras, generation, listings, translate

# Paths below /sdapi/v1.
routes = [
    Route("/txt2img", generation.txt2img, methods=["POST"]),
    Route("/img2img", generation.img2img, methods=["POST"]),
    Route("/options", listings.get_options, methods=["GET"]),
    Route("/options", listings.set_options, methods=["POST"]),
    Route("/sd-models", listings.sd_models, methods=["GET"]),
    Route("/sd-vae", listings.sd_vae, methods=["GET"]),
    Route("/samplers", listings.samplers, methods=["GET"]),
    Route("/schedulers", listings.schedulers, methods=["GET"]),
    Route("/upscalers", listings.upscalers, methods=["GET"]),
    Route("/latent-upscale-modes", listings.latent_upscale_modes, methods=["GET"]),
    Route("/loras", listings.loras, methods=["GET"]),
    Route("/embeddings", listings.embeddings_list, methods=["GET"]),
    Route("/hypernetworks", listings.empty_list("Hypernetworks (none)"), methods=["GET"]),
    Route("/face-restorers", listings.empty_list("Face restorers (none installed)"), methods=["GET"]),
    Route(
        "/realesrgan-models",
        listings.empty_list("Real-ESRGAN models by A1111's list (see /upscalers)"),
        methods=["GET"],
    ),
    Route("/prompt-styles", listings.empty_list("Prompt styles (none)"), methods=["GET"]),
    Route("/scripts", listings.scripts, methods=["GET"]),
    Route("/cmd-flags", listings.cmd_flags, methods=["GET"]),
    Route("/memory", listings.memory, methods=["GET"]),
    Route("/progress", generation.progress, methods=["GET"]),
    Route("/interrupt", generation.interrupt, methods=["POST"]),
    Route("/skip", generation.skip, methods=["POST"]),
    Route("/refresh-checkpoints", listings.refresh_checkpoints, methods=["POST"]),
    Route("/png-info", extras.png_info, methods=["POST"]),
    Route("/extra-single-image", extras.extra_single_image, methods=["POST"]),
    Route("/extra-batch-images", extras.extra_batch_images, methods=["POST"]),
]

assert {ours for ours in translate.SAMPLERS.values()} <= set(SCHEDULER_NAMES)
