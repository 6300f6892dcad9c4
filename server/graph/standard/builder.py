"""The one builder of standard graphs: GenerationSettings in, the graph POST /sessions/ takes out.

An SDXL model gets the SDXL nodes; SD-1 and SD-2 the contract's standard graph. Optional stages join it where
the settings ask: LoRAs, clip skip and a VAE on the model's parts, an init image (image to image), a mask
(inpainting, pasted back onto the init image so nothing outside the mask changes) or an extended canvas
(outpainting), ControlNets, an SDXL refiner, a hires pass. Node ids and fields are part of the contract:
`decode` is always the `l2i` of the last denoise, and `examples/txt2img.json` is what plain settings give."""

from __future__ import annotations

from typing import Any

import msgspec

import server.graph.standard.stages as stages
from server.graph.standard.draft import Builder, Output
from server.graph.standard.settings import GenerationSettings


class SettingsProblem(ValueError):
    """Settings that make no graph (a refiner for an SD-1 model, a mask without an image...); `field` names
    the setting at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _check(settings: GenerationSettings) -> None:
    sdxl = settings.model.base_model == "sdxl"
    if settings.refiner is not None and not sdxl:
        raise SettingsProblem(
            "refiner", f"a refiner goes with an SDXL model; {settings.model.key} is {settings.model.base_model}"
        )
    if settings.refiner is not None and settings.refiner.model.base_model != "sdxl-refiner":
        raise SettingsProblem("refiner", f"the refiner must be an sdxl-refiner model, not {settings.refiner.model.key}")
    if settings.mask_image is not None and settings.init_image is None:
        raise SettingsProblem("mask_image", "a mask repaints part of an init image: give `init_image` too")
    if settings.outpaint is not None:
        if settings.init_image is None:
            raise SettingsProblem("outpaint", "outpainting extends an init image: give `init_image` too")
        if settings.mask_image is not None:
            raise SettingsProblem("outpaint", "outpainting makes its own mask: leave `mask_image` out")
    if settings.hires is not None and settings.init_image is not None:
        raise SettingsProblem("hires", "the hires pass follows text to image; leave it out with an init image")
    if settings.hires is not None and settings.refiner is not None:
        raise SettingsProblem("hires", "a hires pass and a refiner do not go together; choose one")
    if settings.inpaint_region is not None and settings.mask_image is None:
        raise SettingsProblem("inpaint_region", "an inpaint region is part of an inpainting: give `mask_image` too")
    if settings.variation_strength > 0 and settings.variation_seed is None:
        raise SettingsProblem(
            "variation_seed", "`variation_strength` moves the noise toward a `variation_seed`: give one"
        )


def build_graph(settings: GenerationSettings) -> dict[str, Any]:
    """The graph for `settings`, as JSON-ready dicts (what POST /sessions/ takes). SettingsProblem if the
    settings make none."""
    _check(settings)
    graph = Builder(settings)
    sdxl = graph.sdxl
    model = msgspec.to_builtins(settings.model)
    graph.add("model", "sdxl_model_loader" if sdxl else "main_model_loader", model=model)
    size = {"width": settings.width, "height": settings.height}
    sampling = {"steps": settings.steps, "cfg_scale": settings.cfg_scale, "scheduler": settings.scheduler}
    stages.prompts(graph)
    variation = {}
    if settings.variation_strength > 0:
        variation = {"variation_seed": settings.variation_seed, "variation_strength": settings.variation_strength}
    graph.add("noise", "noise", seed=settings.seed, **size, **variation)
    split = {"denoising_end": settings.refiner.switch_at} if settings.refiner is not None else {}
    strength = {"strength": settings.strength} if settings.init_image is not None else {}
    graph.add("denoise", "denoise_latents", **sampling, **strength, **split)
    graph.add("decode", "l2i")
    unet, clip, clip2, vae = stages.model_parts(graph)
    for encoder in graph.encoders:
        graph.wire(clip, encoder, "clip")
        if sdxl:
            graph.wire(clip2, encoder, "clip2")
    graph.wire(unet, "denoise", "unet")
    graph.wire(("pos", "conditioning"), "denoise", "positive_conditioning")
    graph.wire(("neg", "conditioning"), "denoise", "negative_conditioning")
    graph.wire(("noise", "noise"), "denoise", "noise")
    canvas = stages.init_image(graph, vae) if settings.init_image is not None else None
    stages.controls(graph)
    latents: Output = ("denoise", "latents")
    if settings.refiner is not None:
        latents, refiner_vae = stages.refiner(graph, settings.refiner, latents)
        vae = vae if settings.vae is not None else refiner_vae
    if settings.hires is not None:
        latents = stages.hires(graph, settings.hires, latents, unet, vae)
    graph.wire(latents, "decode", "latents")
    graph.wire(vae, "decode", "vae")
    final = "decode"
    if canvas is not None and canvas.mask is not None:
        # Inpainting ends by pasting the result onto the init image through the mask: nothing outside it changes.
        graph.nodes["decode"]["is_intermediate"] = True
        final = graph.add("paste", "img_paste")
        graph.wire(canvas.image, "paste", "base_image")
        graph.wire(("decode", "image"), "paste", "image")
        graph.wire(canvas.mask, "paste", "mask")
        if settings.inpaint_region is not None:
            final = stages.paste_region(graph, settings.inpaint_region)
    if settings.metadata:
        graph.add("meta", "metadata_accumulator", **stages.metadata(settings, model, size, sampling))
        graph.wire(("meta", "metadata"), final, "metadata")
    return {"id": settings.graph_id, "nodes": graph.nodes, "edges": graph.edges}
