"""`metadata_accumulator`: collects the generation settings (CoreMetadata) that `l2i` embeds in the PNG."""

from __future__ import annotations

from typing import Annotated, Any

from server.graph.context import InvocationContext
from server.graph.fields import CoreMetadata, LoraMetadata
from server.graph.nodes.base import REQUIRED, Node, Output
from server.models.schema import ModelIdentifier


class MetadataOutput(Output, tag="metadata_accumulator_output"):
    metadata: CoreMetadata


class MetadataAccumulatorNode(Node, tag="metadata_accumulator", kw_only=True):
    """Every CoreMetadata field as an input; wire `metadata` into `l2i` to embed it."""

    generation_mode: Annotated[str | None, REQUIRED] = None
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
    loras: list[LoraMetadata] | None = None
    strength: float | None = None
    init_image: str | None = None
    vae: ModelIdentifier | None = None
    output = MetadataOutput
    category = "metadata"
    names_references = False

    def invoke(self, ctx: InvocationContext) -> MetadataOutput:
        values = {name: getattr(self, name) for name in CoreMetadata.__struct_fields__}
        return MetadataOutput(metadata=CoreMetadata(**values))
