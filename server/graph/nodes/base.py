"""What every node is: a msgspec Struct whose fields are its inputs, tagged by its `type`, with an `invoke`
that turns resolved inputs into an output Struct.

An input is given as a value in the graph, or wired from another node's output by an edge (the edge wins),
or both are allowed; the `Meta` markers below say which. A field without a default is required (given or
wired); `WIRE_REQUIRED` marks a wired-only input that must be connected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import msgspec

if TYPE_CHECKING:
    from server.graph.context import InvocationContext
    from server.models.schema import ModelIdentifier

# Only an edge can supply this input (handles to models, tensors): a value in the graph is refused.
WIRE = msgspec.Meta(extra={"input": "connection"}, extra_json_schema={"x-input": "connection"})
WIRE_REQUIRED = msgspec.Meta(
    extra={"input": "connection", "required": True}, extra_json_schema={"x-input": "connection", "x-required": True}
)
# A value or an edge must supply this input. (Declared with a None default rather than none at all, so that a
# node whose required input is wired can still be built from the values given in the graph.)
REQUIRED = msgspec.Meta(extra={"required": True}, extra_json_schema={"x-required": True})
# Only a value in the graph can set this input: no edge may point at it.
DIRECT = msgspec.Meta(extra={"input": "direct"}, extra_json_schema={"x-input": "direct"})


def model_input(model_type: str, *, bases: tuple[str, ...] = ()) -> msgspec.Meta:
    """A model identifier, given as a value, that must name a registered model of `model_type` (and of one of
    `bases`, when given): checked when a session is created, and shown to clients in the node catalogue."""
    extra: dict[str, Any] = {"model_type": model_type, "input": "direct"}
    schema: dict[str, Any] = {"x-model-type": model_type}
    if bases:
        extra["base_models"] = list(bases)
        schema["x-base-models"] = list(bases)
    return msgspec.Meta(extra=extra, extra_json_schema=schema)


# InvokeAI's SEED_MAX: seeds are unsigned 32-bit, like its noise node.
SEED_MAX = 2**32 - 1


class Output(msgspec.Struct, tag_field="type", kw_only=True):
    """An invocation's result; each field is an output edges can start from."""


class Node(msgspec.Struct, tag_field="type", kw_only=True):
    # A graph sent to POST /sessions/ may leave it out: it is the node's key (a built node always has it).
    id: str = ""
    # False runs the node even when an identical invocation is in the node cache (InvokeAI's `use_cache`).
    use_cache: Annotated[bool, DIRECT] = True

    output: ClassVar[type[Output]]
    # Deterministic and free of side effects: its output may be reused for identical inputs.
    cacheable: ClassVar[bool] = True
    category: ClassVar[str] = "primitives"
    # Its model and image inputs name things that must exist (checked when a session is created); False for
    # nodes that only record names, like the metadata accumulator.
    names_references: ClassVar[bool] = True

    def invoke(self, ctx: InvocationContext) -> Output:
        raise NotImplementedError

    def referenced_models(self, models: Any) -> list[ModelIdentifier]:
        """Models the node uses that its inputs do not name (the embeddings a prompt mentions): their files
        are part of its cache key, like those of the models its inputs name."""
        return []


def node_type(cls: type[Node]) -> str:
    return cls.__struct_config__.tag  # type: ignore[return-value]


def as_builtins(value: Any) -> Any:
    return msgspec.to_builtins(value)
