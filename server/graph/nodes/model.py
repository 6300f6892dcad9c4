"""`main_model_loader`: names a main model and hands out handles to its parts. It loads nothing; each part
is loaded by the node that uses it, so a run whose prompts come from the cache never loads the text encoder."""

from __future__ import annotations

from typing import Annotated

import msgspec

from server.graph.context import InvocationContext, NodeError
from server.graph.fields import ClipField, UNetField, VaeField
from server.graph.nodes.base import WIRE, Node, Output, model_input
from server.models.schema import ModelIdentifier


class ModelLoaderOutput(Output, tag="model_loader_output"):
    unet: UNetField
    clip: ClipField
    vae: VaeField


class MainModelLoaderNode(Node, tag="main_model_loader", kw_only=True):
    """A main (Stable Diffusion) model: UNet, CLIP text encoder and VAE handles."""

    model: Annotated[ModelIdentifier, model_input("main", bases=("sd-1", "sd-2"))]
    output = ModelLoaderOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> ModelLoaderOutput:
        if self.model.model_type != "main":
            raise NodeError(f"`model` must be a main model, not a {self.model.model_type} model")
        return ModelLoaderOutput(
            unet=UNetField(model=self.model), clip=ClipField(model=self.model), vae=VaeField(model=self.model)
        )


class SeamlessOutput(Output, tag="seamless_output"):
    unet: UNetField | None
    vae: VaeField | None


class SeamlessNode(Node, tag="seamless", kw_only=True):
    """Tileable images: the UNet and VAE handles passed through with their convolutions wrapping around along
    x and/or y while they run (A1111's `tiling`). Wire either or both."""

    unet: Annotated[UNetField | None, WIRE] = None
    vae: Annotated[VaeField | None, WIRE] = None
    seamless_x: bool = True
    seamless_y: bool = True
    output = SeamlessOutput
    category = "models"

    def invoke(self, ctx: InvocationContext) -> SeamlessOutput:
        if self.unet is None and self.vae is None:
            raise NodeError("wire `unet`, `vae` or both")
        axes = [axis for axis, on in (("x", self.seamless_x), ("y", self.seamless_y)) if on]
        return SeamlessOutput(
            unet=msgspec.structs.replace(self.unet, seamless_axes=axes) if self.unet is not None else None,
            vae=msgspec.structs.replace(self.vae, seamless_axes=axes) if self.vae is not None else None,
        )
