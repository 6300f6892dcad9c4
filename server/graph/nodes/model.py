"""`main_model_loader`: names a main model and hands out handles to its parts. It loads nothing; each part
is loaded by the node that uses it, so a run whose prompts come from the cache never loads the text encoder."""

from __future__ import annotations

from typing import Annotated

from server.graph.context import InvocationContext, NodeError
from server.graph.fields import ClipField, UNetField, VaeField
from server.graph.nodes.base import Node, Output, model_input
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
