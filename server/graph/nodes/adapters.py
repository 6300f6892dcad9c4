"""Adapters on a main model's parts: `lora_loader` (and SDXL's `sdxl_lora_loader`), `vae_loader`, `clip_skip`.

None of them loads anything: each hands on the handles it was given with something added (a LoRA and its
weight, another VAE, layers to skip), and the node that runs the part applies it for that run only."""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from server.graph.context import InvocationContext, NodeError
from server.graph.fields import ClipField, LoraField, UNetField, VaeField
from server.graph.nodes.base import WIRE, WIRE_REQUIRED, Node, Output, model_input
from server.models.schema import ModelIdentifier

Weight = Annotated[float, msgspec.Meta(ge=-10, le=10, description="how strongly the LoRA applies; may be negative")]


class LoraLoaderOutput(Output, tag="lora_loader_output"):
    unet: UNetField | None
    clip: ClipField | None


class SDXLLoraLoaderOutput(Output, tag="sdxl_lora_loader_output"):
    unet: UNetField | None
    clip: ClipField | None
    clip2: ClipField | None


Handle = TypeVar("Handle", bound=UNetField | ClipField)


def _with_lora(handle: Handle | None, lora: LoraField) -> Handle | None:
    if handle is None:
        return None
    return msgspec.structs.replace(handle, loras=[*handle.loras, lora])


def _check_base(lora: ModelIdentifier, *handles: UNetField | ClipField | None) -> None:
    for handle in handles:
        if handle is not None and handle.model.base_model != lora.base_model:
            raise NodeError(f"LoRA {lora.key} is for {lora.base_model} models, not {handle.model.key}")


class LoraLoaderNode(Node, tag="lora_loader", kw_only=True):
    """Apply a LoRA (kohya, diffusers/PEFT, LyCORIS LoCon/LoHa/LoKr) to the UNet and text encoder wired through
    it. Chain several; the base model is never changed for other runs."""

    lora: Annotated[ModelIdentifier, model_input("lora")]
    weight: Weight = 0.75
    unet: Annotated[UNetField | None, WIRE] = None
    clip: Annotated[ClipField | None, WIRE] = None
    output = LoraLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> LoraLoaderOutput:
        if self.unet is None and self.clip is None:
            raise NodeError(f"wire `unet`, `clip` or both into `{self.id}`: there is nothing to apply the LoRA to")
        _check_base(self.lora, self.unet, self.clip)
        lora = LoraField(lora=self.lora, weight=self.weight)
        return LoraLoaderOutput(unet=_with_lora(self.unet, lora), clip=_with_lora(self.clip, lora))


class SDXLLoraLoaderNode(Node, tag="sdxl_lora_loader", kw_only=True):
    """`lora_loader` for SDXL: the UNet and both text encoders."""

    lora: Annotated[ModelIdentifier, model_input("lora", bases=("sdxl",))]
    weight: Weight = 0.75
    unet: Annotated[UNetField | None, WIRE] = None
    clip: Annotated[ClipField | None, WIRE] = None
    clip2: Annotated[ClipField | None, WIRE] = None
    output = SDXLLoraLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> SDXLLoraLoaderOutput:
        if self.unet is None and self.clip is None and self.clip2 is None:
            raise NodeError(f"wire `unet`, `clip` or `clip2` into `{self.id}`: there is nothing to apply the LoRA to")
        _check_base(self.lora, self.unet, self.clip, self.clip2)
        lora = LoraField(lora=self.lora, weight=self.weight)
        return SDXLLoraLoaderOutput(
            unet=_with_lora(self.unet, lora),
            clip=_with_lora(self.clip, lora),
            clip2=_with_lora(self.clip2, lora),
        )


class VaeLoaderOutput(Output, tag="vae_loader_output"):
    vae: VaeField


class VaeLoaderNode(Node, tag="vae_loader", kw_only=True):
    """A registered VAE, to decode and encode with instead of the main model's own."""

    vae_model: Annotated[ModelIdentifier, model_input("vae")]
    output = VaeLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> VaeLoaderOutput:
        return VaeLoaderOutput(vae=VaeField(model=self.vae_model))


class ClipSkipOutput(Output, tag="clip_skip_output"):
    clip: ClipField


class ClipSkipNode(Node, tag="clip_skip", kw_only=True):
    """Use the output of an earlier layer of the text encoder: 1 is the penultimate layer (A1111's "CLIP skip 2")."""

    clip: Annotated[ClipField | None, WIRE_REQUIRED] = None
    skipped_layers: Annotated[int, msgspec.Meta(ge=0, le=31)] = 0
    output = ClipSkipOutput
    category = "conditioning"

    def invoke(self, ctx: InvocationContext) -> ClipSkipOutput:
        assert self.clip is not None
        return ClipSkipOutput(clip=msgspec.structs.replace(self.clip, skipped_layers=self.skipped_layers))
