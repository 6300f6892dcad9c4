"""`metadata_accumulator`: collects the generation settings (CoreMetadata) that `l2i` embeds in the PNG.

Its inputs are CoreMetadata's fields, read from that Struct rather than written out again, so the two cannot
drift apart: the node type is built with `msgspec.defstruct` from CoreMetadata's field list."""

from __future__ import annotations

from typing import Annotated, Any, cast

import msgspec

from server.graph.context import InvocationContext
from server.graph.fields import CoreMetadata
from server.graph.nodes.base import REQUIRED, Node, Output


class MetadataOutput(Output, tag="metadata_accumulator_output"):
    metadata: CoreMetadata


def _invoke(self: Any, ctx: InvocationContext) -> MetadataOutput:
    values = {name: getattr(self, name) for name in CoreMetadata.__struct_fields__}
    return MetadataOutput(metadata=CoreMetadata(**values))


def _inputs() -> list[tuple[str, Any, Any]]:
    inputs: list[tuple[str, Any, Any]] = []
    for field in msgspec.structs.fields(CoreMetadata):
        if field.required:
            # Required in the record; as an input it may also arrive along an edge.
            inputs.append((field.name, Annotated[field.type | None, REQUIRED], None))
        else:
            inputs.append((field.name, field.type, field.default))
    return inputs


MetadataAccumulatorNode = cast(
    type[Node],
    msgspec.defstruct(
        "MetadataAccumulatorNode",
        _inputs(),
        bases=(Node,),
        tag="metadata_accumulator",
        kw_only=True,
        module=__name__,
        namespace={
            "__doc__": "Every CoreMetadata field as an input; wire `metadata` into `l2i` to embed it.",
            "output": MetadataOutput,
            "category": "metadata",
            "names_references": False,
            "invoke": _invoke,
        },
    ),
)
