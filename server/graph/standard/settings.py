"""GenerationSettings: what a person sets on the Generate page (or an A1111 client sends), from which the one
builder makes the graph. Every field has a default but the model; `POST /api/v1/app/graph` decodes it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from server.graph.fields import ControlMode, ResizeMode
from server.graph.nodes.base import SEED_MAX
from server.graph.nodes.latents import Dimension, Scheduler
from server.models.schema import ModelIdentifier

Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]
Steps = Annotated[int, msgspec.Meta(ge=1, le=1000)]
CfgScale = Annotated[float, msgspec.Meta(ge=0, le=200)]
Margin = Annotated[int, msgspec.Meta(ge=0, le=4096, multiple_of=8)]


class LoraSetting(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lora: ModelIdentifier
    weight: Annotated[float, msgspec.Meta(ge=-10, le=10)] = 0.75


class RefinerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An SDXL refiner taking over the base's schedule at `switch_at` (diffusers' "ensemble of experts")."""

    model: ModelIdentifier
    switch_at: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.8
    # Of the whole schedule, as the base's steps are; defaults: the base's steps, CFG scale and scheduler.
    steps: Steps | None = None
    cfg_scale: CfgScale | None = None
    scheduler: Scheduler | None = None
    aesthetic_score: Annotated[float, msgspec.Meta(ge=0, le=10)] = 6.0
    negative_aesthetic_score: Annotated[float, msgspec.Meta(ge=0, le=10)] = 2.5


class ControlSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A ControlNet guiding the generation with an image of the gallery (made into an edge map first, when
    `processor` says so)."""

    image: str
    model: ModelIdentifier
    weight: Annotated[float, msgspec.Meta(ge=-1, le=2)] = 1.0
    begin: Fraction = 0.0
    end: Fraction = 1.0
    mode: ControlMode = "balanced"
    resize_mode: ResizeMode = "just_resize"
    processor: Literal["none", "canny"] = "none"
    low_threshold: Annotated[int, msgspec.Meta(ge=0, le=255)] = 100
    high_threshold: Annotated[int, msgspec.Meta(ge=0, le=255)] = 200


class HiresSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A second pass at a larger size (hires fix): the first image's latents resized (or the image decoded,
    upscaled with an `upscale` model or resized in pixels with `image_resize`, and encoded again), then denoised
    at `strength`."""

    scale: Annotated[float, msgspec.Meta(gt=1, le=4)] = 2.0
    strength: Fraction = 0.5
    steps: Steps | None = None
    upscaler: ModelIdentifier | None = None
    latent_mode: Literal["nearest", "nearest-exact", "bilinear", "bicubic", "area"] = "bilinear"
    antialias: bool = False
    # Resize the decoded first image in pixels instead of its latents (A1111's `Lanczos` / `Nearest` hires
    # upscalers); ignored when `upscaler` is set, whose output is resized with Lanczos.
    image_resize: Literal["lanczos", "nearest"] | None = None


class OutpaintSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How far to extend the init image on each side (the new area is painted; `width`/`height` are then the
    extended canvas's size)."""

    left: Margin = 0
    right: Margin = 0
    top: Margin = 0
    bottom: Margin = 0
    fill: Literal["edge", "fill"] = "edge"


class InpaintRegion(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The part of the init image to inpaint at the settings' size (A1111's "only masked"), in its pixels."""

    x: Annotated[int, msgspec.Meta(ge=0, le=16384)]
    y: Annotated[int, msgspec.Meta(ge=0, le=16384)]
    width: Annotated[int, msgspec.Meta(ge=1, le=16384)]
    height: Annotated[int, msgspec.Meta(ge=1, le=16384)]


class GenerationSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a person sets on the Generate page; everything else of the graph follows from it."""

    model: ModelIdentifier
    prompt: str = ""
    negative_prompt: str = ""
    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] = 42
    # A1111's variation seeds: the noise moved toward this seed's by `variation_strength` (0: the seed alone).
    variation_seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] | None = None
    variation_strength: Fraction = 0.0
    width: Dimension = 512
    height: Dimension = 512
    steps: Steps = 20
    cfg_scale: CfgScale = 7.5
    scheduler: Scheduler = "euler"
    # Applied in this order (a `lora_loader` each, chained between the model and its users).
    loras: list[LoraSetting] = []
    # A registered VAE instead of the model's own.
    vae: ModelIdentifier | None = None
    # Text-encoder layers skipped from the end (1: the penultimate layer, A1111's "CLIP skip 2").
    clip_skip: Annotated[int, msgspec.Meta(ge=0, le=31)] = 0
    # SDXL only: a refiner model for the last part of the schedule.
    refiner: RefinerSettings | None = None
    # Image to image: an image of the gallery, resized to width × height, changed by `strength`.
    init_image: str | None = None
    strength: Fraction = 0.75
    # Inpainting: where to repaint the init image (white); outside it the result keeps the init image's pixels.
    mask_image: str | None = None
    # Inpaint only this box of the init image (and mask), at width × height, then paste it back at its own size
    # through the mask; the result keeps the init image's size.
    inpaint_region: InpaintRegion | None = None
    # Outpainting: extend the init image's canvas (its new area is the mask).
    outpaint: OutpaintSettings | None = None
    controls: list[ControlSettings] = []
    hires: HiresSettings | None = None
    # Tileable images: the UNet's and VAE's convolutions wrap around (a `seamless` node).
    tiling: bool = False
    # How to read the prompts: compel's weighting syntax (`word++`, `(word)1.3`), or AUTOMATIC1111's (`(word:1.3)`,
    # `[from:to:when]` editing, `[a|b]` alternation, BREAK; long prompts in 75-token chunks). LoRA tags and
    # embedding names are the caller's to resolve (the /sdapi/v1 routes do).
    prompt_syntax: Literal["compel", "a1111"] = "compel"
    # AUTOMATIC1111's infotext for the image, kept in its metadata (`parameters`).
    infotext: str | None = None
    # A `metadata_accumulator` wired to the final image embeds the settings in the PNG.
    metadata: bool = True
    graph_id: str = "t2i"
