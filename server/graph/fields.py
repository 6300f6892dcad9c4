"""Values that travel along edges between nodes.

Tensors never leave the process: a `LatentsField` or `ConditioningField` names a tensor the running
session (or the node cache) holds, so session results stay small JSON. Model handles name a registered
model; the submodel is loaded only by the node that uses it."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from server.models.schema import ModelIdentifier


class ImageField(msgspec.Struct):
    image_name: str


class BoardField(msgspec.Struct):
    board_id: str


class LatentsField(msgspec.Struct):
    latents_name: str
    # The seed the noise came from, so a denoise can continue the same random stream (ancestral samplers).
    seed: int | None = None


class ConditioningField(msgspec.Struct):
    conditioning_name: str


class LoraField(msgspec.Struct):
    """A LoRA (or LyCORIS) model and the weight it is applied with."""

    lora: ModelIdentifier
    weight: float


ControlMode = Literal["balanced", "more_prompt", "more_control", "unbalanced"]
ResizeMode = Literal["just_resize", "crop_resize", "fill_resize"]


class ControlField(msgspec.Struct, kw_only=True):
    """A ControlNet and the image that guides it, with how strongly and over which part of the schedule."""

    image: ImageField
    control_model: ModelIdentifier
    control_weight: float = 1.0
    begin_step_percent: float = 0.0
    end_step_percent: float = 1.0
    control_mode: ControlMode = "balanced"
    resize_mode: ResizeMode = "just_resize"


class DenoiseMaskField(msgspec.Struct, kw_only=True):
    """Where to repaint (the mask, at latent size) and, for inpaint models, the masked image's latents."""

    mask_name: str
    masked_latents_name: str | None = None


class UNetField(msgspec.Struct, kw_only=True):
    model: ModelIdentifier
    # Applied in order while the UNet runs; the base weights are never changed.
    loras: list[LoraField] = []
    # Axes ("x", "y") along which its convolutions wrap around while it runs (server/graph/seamless.py).
    seamless_axes: list[str] = []


class ClipField(msgspec.Struct, kw_only=True):
    model: ModelIdentifier
    # Which text encoder of the model: the first (SD-1/2, SDXL's CLIP-L) or SDXL's second (OpenCLIP-G).
    submodel: str = "text_encoder"
    loras: list[LoraField] = []
    # Layers skipped from the end (A1111's CLIP skip minus one: 1 uses the penultimate layer's output).
    skipped_layers: int = 0


class VaeField(msgspec.Struct):
    model: ModelIdentifier
    seamless_axes: list[str] = []


class CoreMetadata(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The generation settings embedded in a PNG as `invokeai_metadata` (docs/api.md §PNG metadata)."""

    generation_mode: str
    # AUTOMATIC1111's infotext of the same generation (the /sdapi/v1 routes set it): also written as the PNG's
    # tEXt `parameters`, so A1111 tools read the image too.
    parameters: str | None = None
    positive_prompt: str | None = None
    negative_prompt: str | None = None
    width: int | None = None
    height: int | None = None
    seed: int | None = None
    rand_device: str | None = None
    cfg_scale: float | None = None
    steps: int | None = None
    scheduler: str | None = None
    clip_skip: int | None = None
    model: ModelIdentifier | None = None
    controlnets: list[Any] | None = None
    loras: list[LoraField] | None = None
    strength: float | None = None
    init_image: str | None = None
    vae: ModelIdentifier | None = None
    # SDXL's refiner, where one took over the schedule (InvokeAI's names).
    refiner_model: ModelIdentifier | None = None
    refiner_start: float | None = None
    refiner_steps: int | None = None
    refiner_cfg_scale: float | None = None
    refiner_scheduler: str | None = None
    refiner_positive_aesthetic_score: float | None = None
    refiner_negative_aesthetic_score: float | None = None
    # A hires pass (InvokeAI's names), where one ran.
    hrf_enabled: bool | None = None
    hrf_method: str | None = None
    hrf_strength: float | None = None
    hrf_scale: float | None = None
    hrf_width: int | None = None
    hrf_height: int | None = None


# The name each value type has in the node catalogue and in edge type checks.
TYPE_NAMES: dict[type, str] = {
    ImageField: "image",
    BoardField: "board",
    LatentsField: "latents",
    ConditioningField: "conditioning",
    UNetField: "unet",
    ClipField: "clip",
    VaeField: "vae",
    ModelIdentifier: "model",
    CoreMetadata: "metadata",
    LoraField: "lora",
    ControlField: "control",
    DenoiseMaskField: "denoise_mask",
}
