"""The optional stages of the standard graph (server/graph/standard/builder.py adds them where settings ask)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

import server.graph.standard.a1111_prompt as a1111_prompt
from server.graph.standard.settings import GenerationSettings, HiresSettings, InpaintRegion, RefinerSettings

if TYPE_CHECKING:
    from server.graph.standard.draft import Builder, Output


def prompts(graph: Builder) -> None:
    """`pos` and `neg`: the prompts' conditioning. With A1111's syntax a prompt that changes over the steps is a
    `conditioning_schedule` of one encoding per entry (`pos_1`, `pos_2`...); any other prompt one node. A hires
    pass has a schedule of its own over its steps (`hires_pos`, `hires_neg`) where it differs from the first's."""
    settings = graph.settings
    for node_id, text in (("pos", settings.prompt), ("neg", settings.negative_prompt)):
        if settings.prompt_syntax != "a1111":
            _encoder(graph, node_id, text)
            continue
        run = int(settings.steps * settings.strength) if settings.init_image is not None else settings.steps
        if settings.mask_image is not None and settings.strength >= 1:
            run = settings.steps
        first = a1111_prompt.schedule(text, settings.steps, run=run)
        _scheduled(graph, node_id, first)
        if settings.hires is not None:
            steps = settings.hires.steps or settings.steps
            hires = a1111_prompt.schedule(
                text, steps, run=int(steps * settings.hires.strength), first_pass_steps=settings.steps
            )
            _scheduled(graph, f"hires_{node_id}", hires, same_as=(node_id, first))


def _scheduled(
    graph: Builder,
    node_id: str,
    schedule: list[tuple[float, str]],
    same_as: tuple[str, list[tuple[float, str]]] | None = None,
) -> None:
    if same_as is not None and same_as[1] == schedule:
        graph.conditioning_of[node_id] = same_as[0]
        return
    entries = [(until, a1111_prompt.to_compel(text)) for until, text in schedule]
    if len(entries) == 1:
        _encoder(graph, node_id, entries[0][1])
        return
    collect = graph.add(f"{node_id}_entries", "collect")
    for index, (_, entry) in enumerate(entries, start=1):
        graph.wire((_encoder(graph, f"{node_id}_{index}", entry), "conditioning"), collect, "item")
    graph.add(node_id, "conditioning_schedule", until=[until for until, _ in entries])
    graph.wire((collect, "collection"), node_id, "conditionings")


def _encoder(graph: Builder, node_id: str, prompt: str) -> str:
    settings = graph.settings
    graph.encoders.append(node_id)
    long_prompt = {"long_prompt": "chunks"} if settings.prompt_syntax == "a1111" else {}
    if not graph.sdxl:
        return graph.add(node_id, "compel", prompt=prompt, **long_prompt)
    size = {
        "original_width": settings.width,
        "original_height": settings.height,
        "target_width": settings.width,
        "target_height": settings.height,
    }
    return graph.add(node_id, "sdxl_compel_prompt", prompt=prompt, style="", **size, **long_prompt)


def model_parts(graph: Builder) -> tuple[Output, Output, Output, Output]:
    """(unet, clip, clip2, vae) outputs after the LoRAs, clip skip and VAE the settings name."""
    settings, sdxl = graph.settings, graph.sdxl
    unet: Output = ("model", "unet")
    clip: Output = ("model", "clip")
    clip2: Output = ("model", "clip2")
    vae: Output = ("model", "vae")
    for index, lora in enumerate(settings.loras, start=1):
        node_id = graph.add(
            f"lora_{index}",
            "sdxl_lora_loader" if sdxl else "lora_loader",
            lora=msgspec.to_builtins(lora.lora),
            weight=lora.weight,
        )
        graph.wire(unet, node_id, "unet")
        graph.wire(clip, node_id, "clip")
        if sdxl:
            graph.wire(clip2, node_id, "clip2")
        unet, clip, clip2 = (node_id, "unet"), (node_id, "clip"), (node_id, "clip2")
    if settings.clip_skip:
        graph.add("clip_skip", "clip_skip", skipped_layers=settings.clip_skip)
        graph.wire(clip, "clip_skip", "clip")
        clip = ("clip_skip", "clip")
        if sdxl:
            graph.add("clip2_skip", "clip_skip", skipped_layers=settings.clip_skip)
            graph.wire(clip2, "clip2_skip", "clip")
            clip2 = ("clip2_skip", "clip")
    if settings.vae is not None:
        graph.add("vae", "vae_loader", vae_model=msgspec.to_builtins(settings.vae))
        vae = ("vae", "vae")
    if settings.tiling:
        graph.add("seamless", "seamless", seamless_x=True, seamless_y=True)
        graph.wire(unet, "seamless", "unet")
        graph.wire(vae, "seamless", "vae")
        unet, vae = ("seamless", "unet"), ("seamless", "vae")
    return unet, clip, clip2, vae


@dataclass
class Canvas:
    image: Output  # the init image as denoised (resized, or extended)
    mask: Output | None  # where it is repainted (white), at the same size


def init_image(graph: Builder, vae: Output) -> Canvas:
    """The init image resized to the settings' size and encoded into the denoise's latents; with a mask (or an
    extended canvas), the denoise mask too."""
    settings = graph.settings
    assert settings.init_image is not None
    size = {"width": settings.width, "height": settings.height}
    graph.add("init_image", "image", image={"image_name": settings.init_image})
    source: Output = ("init_image", "image")
    mask: Output | None = None
    if settings.outpaint is not None:
        margins = msgspec.to_builtins(settings.outpaint)
        graph.add("pad", "img_pad", is_intermediate=True, **margins)
        graph.wire(source, "pad", "image")
        source, mask = ("pad", "image"), ("pad", "mask")
    region = settings.inpaint_region
    if region is not None:
        box = {"x": region.x, "y": region.y, "width": region.width, "height": region.height}
        graph.add("init_crop", "img_crop", is_intermediate=True, **box)
        graph.wire(source, "init_crop", "image")
        source = ("init_crop", "image")
    graph.add("init_resize", "img_resize", is_intermediate=True, resample_mode="lanczos", **size)
    graph.wire(source, "init_resize", "image")
    image: Output = ("init_resize", "image")
    graph.add("encode", "i2l")
    graph.wire(image, "encode", "image")
    graph.wire(vae, "encode", "vae")
    graph.wire(("encode", "latents"), "denoise", "latents")
    if settings.mask_image is not None:
        graph.add("mask_image", "image", image={"image_name": settings.mask_image})
        mask = ("mask_image", "image")
        if region is not None:
            graph.add("mask_crop", "img_crop", is_intermediate=True, **box)
            graph.wire(mask, "mask_crop", "image")
            mask = ("mask_crop", "image")
    if mask is None:
        return Canvas(image=image, mask=None)
    graph.add("mask_resize", "img_resize", is_intermediate=True, resample_mode="nearest", **size)
    graph.wire(mask, "mask_resize", "image")
    mask = ("mask_resize", "image")
    graph.add("mask", "create_denoise_mask")
    graph.wire(image, "mask", "image")
    graph.wire(mask, "mask", "mask")
    graph.wire(vae, "mask", "vae")
    graph.wire(("mask", "denoise_mask"), "denoise", "denoise_mask")
    return Canvas(image=image, mask=mask)


def paste_region(graph: Builder, region: InpaintRegion) -> str:
    """The inpainted region (`paste`) back at its own size onto the whole init image, through its part of the
    mask (A1111's "only masked"); returns the final node."""
    graph.nodes["paste"]["is_intermediate"] = True
    graph.add(
        "region_resize",
        "img_resize",
        is_intermediate=True,
        resample_mode="lanczos",
        width=region.width,
        height=region.height,
    )
    graph.wire(("paste", "image"), "region_resize", "image")
    graph.add("region_paste", "img_paste", x=region.x, y=region.y)
    graph.wire(("init_image", "image"), "region_paste", "base_image")
    graph.wire(("region_resize", "image"), "region_paste", "image")
    graph.wire(("mask_crop", "image"), "region_paste", "mask")
    return "region_paste"


def controls(graph: Builder) -> None:
    """A `controlnet` per ControlNet (its image through `canny_image_processor` first, when asked), into the
    denoise (through a `collect` when there are several)."""
    wired: list[Output] = []
    for index, control in enumerate(graph.settings.controls, start=1):
        image: dict[str, Any] = {"image": {"image_name": control.image}}
        node_id = f"control_{index}"
        if control.processor == "canny":
            graph.add(
                f"canny_{index}",
                "canny_image_processor",
                low_threshold=control.low_threshold,
                high_threshold=control.high_threshold,
                is_intermediate=True,
                **image,
            )
            image = {}
        graph.add(
            node_id,
            "controlnet",
            control_model=msgspec.to_builtins(control.model),
            control_weight=control.weight,
            begin_step_percent=control.begin,
            end_step_percent=control.end,
            control_mode=control.mode,
            resize_mode=control.resize_mode,
            **image,
        )
        if control.processor == "canny":
            graph.wire((f"canny_{index}", "image"), node_id, "image")
        wired.append((node_id, "control"))
    if len(wired) == 1:
        graph.wire(wired[0], "denoise", "control")
    elif wired:
        graph.add("controls", "collect")
        for output in wired:
            graph.wire(output, "controls", "item")
        graph.wire(("controls", "collection"), "denoise", "control")


def refiner(graph: Builder, settings: RefinerSettings, latents: Output) -> tuple[Output, Output]:
    """The refiner's loader, prompts and denoise, continuing the base's latents; returns (latents, vae)."""
    generation = graph.settings
    size = {"original_width": generation.width, "original_height": generation.height}
    graph.add("refiner_model", "sdxl_refiner_model_loader", model=msgspec.to_builtins(settings.model))
    graph.add(
        "refiner_pos",
        "sdxl_refiner_compel_prompt",
        style=generation.prompt,
        aesthetic_score=settings.aesthetic_score,
        **size,
    )
    graph.add(
        "refiner_neg",
        "sdxl_refiner_compel_prompt",
        style=generation.negative_prompt,
        aesthetic_score=settings.negative_aesthetic_score,
        **size,
    )
    graph.add(
        "refiner_denoise",
        "denoise_latents",
        steps=settings.steps or generation.steps,
        cfg_scale=settings.cfg_scale if settings.cfg_scale is not None else generation.cfg_scale,
        scheduler=settings.scheduler or generation.scheduler,
        denoising_start=settings.switch_at,
    )
    for prompt in ("refiner_pos", "refiner_neg"):
        graph.wire(("refiner_model", "clip2"), prompt, "clip2")
    graph.wire(("refiner_model", "unet"), "refiner_denoise", "unet")
    graph.wire(("refiner_pos", "conditioning"), "refiner_denoise", "positive_conditioning")
    graph.wire(("refiner_neg", "conditioning"), "refiner_denoise", "negative_conditioning")
    graph.wire(latents, "refiner_denoise", "latents")
    return ("refiner_denoise", "latents"), ("refiner_model", "vae")


def _hires_method(hires: HiresSettings) -> str:
    if hires.upscaler is not None:
        return "esrgan"
    return hires.image_resize or hires.latent_mode


def hires_size(settings: GenerationSettings, hires: HiresSettings) -> tuple[int, int]:
    """The second pass's width and height: the first's times `scale`, to a multiple of 8."""
    return (round(settings.width * hires.scale / 8) * 8, round(settings.height * hires.scale / 8) * 8)


def hires(graph: Builder, settings: HiresSettings, latents: Output, unet: Output, vae: Output) -> Output:
    """The hires pass: the latents made larger (resized, or decoded, upscaled by a model and encoded again),
    then denoised again at `strength` with new noise of the larger size."""
    generation = graph.settings
    width, height = hires_size(generation, settings)
    if settings.upscaler is None and settings.image_resize is None:
        graph.add(
            "hires_resize",
            "lresize",
            width=width,
            height=height,
            mode=settings.latent_mode,
            antialias=settings.antialias,
        )
        graph.wire(latents, "hires_resize", "latents")
        larger: Output = ("hires_resize", "latents")
    else:
        graph.add("hires_decode", "l2i", is_intermediate=True)
        graph.wire(latents, "hires_decode", "latents")
        graph.wire(vae, "hires_decode", "vae")
        first: Output = ("hires_decode", "image")
        if settings.upscaler is not None:
            graph.add("hires_upscale", "esrgan", model=msgspec.to_builtins(settings.upscaler), is_intermediate=True)
            graph.wire(first, "hires_upscale", "image")
            first = ("hires_upscale", "image")
        mode = "lanczos" if settings.upscaler is not None else settings.image_resize
        graph.add("hires_image", "img_resize", width=width, height=height, resample_mode=mode, is_intermediate=True)
        graph.wire(first, "hires_image", "image")
        graph.add("hires_encode", "i2l")
        graph.wire(("hires_image", "image"), "hires_encode", "image")
        graph.wire(vae, "hires_encode", "vae")
        larger = ("hires_encode", "latents")
    graph.add("hires_noise", "noise", seed=generation.seed, width=width, height=height)
    graph.add(
        "hires_denoise",
        "denoise_latents",
        steps=settings.steps or generation.steps,
        cfg_scale=generation.cfg_scale,
        scheduler=generation.scheduler,
        strength=settings.strength,
    )
    graph.wire(unet, "hires_denoise", "unet")
    for side in ("pos", "neg"):
        source = side
        if generation.prompt_syntax == "a1111":
            source = graph.conditioning_of.get(f"hires_{side}", f"hires_{side}")
        field = "positive_conditioning" if side == "pos" else "negative_conditioning"
        graph.wire((source, "conditioning"), "hires_denoise", field)
    graph.wire(("hires_noise", "noise"), "hires_denoise", "noise")
    graph.wire(larger, "hires_denoise", "latents")
    return ("hires_denoise", "latents")


def metadata(
    settings: GenerationSettings, model: Any, size: dict[str, int], sampling: dict[str, Any]
) -> dict[str, Any]:
    """The CoreMetadata fields the final image records."""
    mode = (
        "inpaint"
        if settings.mask_image
        else "outpaint"
        if settings.outpaint
        else "img2img"
        if settings.init_image
        else "txt2img"
    )
    fields: dict[str, Any] = {
        "generation_mode": f"sdxl_{mode}" if settings.model.base_model == "sdxl" else mode,
        "positive_prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": settings.seed,
        **size,
        **sampling,
        "model": model,
    }
    if settings.infotext is not None:
        fields["parameters"] = settings.infotext
    if settings.loras:
        fields["loras"] = [msgspec.to_builtins(lora) for lora in settings.loras]
    if settings.vae is not None:
        fields["vae"] = msgspec.to_builtins(settings.vae)
    if settings.clip_skip:
        fields["clip_skip"] = settings.clip_skip
    if settings.init_image is not None:
        fields.update(init_image=settings.init_image, strength=settings.strength)
    if settings.controls:
        fields["controlnets"] = [
            {
                "image": control.image,
                "control_model": msgspec.to_builtins(control.model),
                "control_weight": control.weight,
                "begin_step_percent": control.begin,
                "end_step_percent": control.end,
                "control_mode": control.mode,
                "resize_mode": control.resize_mode,
                "processor": control.processor,
            }
            for control in settings.controls
        ]
    refiner = settings.refiner
    if refiner is not None:
        fields.update(
            refiner_model=msgspec.to_builtins(refiner.model),
            refiner_start=refiner.switch_at,
            refiner_steps=refiner.steps or settings.steps,
            refiner_cfg_scale=refiner.cfg_scale if refiner.cfg_scale is not None else settings.cfg_scale,
            refiner_scheduler=refiner.scheduler or settings.scheduler,
            refiner_positive_aesthetic_score=refiner.aesthetic_score,
            refiner_negative_aesthetic_score=refiner.negative_aesthetic_score,
        )
    if settings.hires is not None:
        width, height = hires_size(settings, settings.hires)
        fields.update(
            hrf_enabled=True,
            hrf_method=_hires_method(settings.hires),
            hrf_strength=settings.hires.strength,
            hrf_scale=settings.hires.scale,
            hrf_width=width,
            hrf_height=height,
        )
    return fields
