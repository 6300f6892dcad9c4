"""Node types by name, what each input and output is, and the `/api/v1/nodes/` catalogue - all read from
the node Structs themselves, so the catalogue, validation and the OpenAPI schema cannot disagree."""

from __future__ import annotations

import functools
import typing
from typing import TYPE_CHECKING, Any, Literal, Union

import msgspec
from msgspec import inspect as mi

from server.graph.fields import TYPE_NAMES
from server.graph.nodes import NODE_CLASSES, Node, Output
from server.graph.nodes.base import node_type

InputKind = Literal["any", "connection", "direct"]
# Fields every node has that are not inputs of its own.
_NOT_INPUTS = frozenset({"id", "type"})

NODE_TYPES: dict[str, type[Node]] = {node_type(cls): cls for cls in NODE_CLASSES}
OUTPUT_CLASSES: tuple[type[Output], ...] = tuple(dict.fromkeys(cls.output for cls in NODE_CLASSES))

# The graph payload's node and result types: tagged unions over every registered class (built at run time, so a
# type checker sees their common bases).
if TYPE_CHECKING:
    AnyNode = Node
    AnyOutput = Output
else:
    AnyNode = Union[NODE_CLASSES]  # noqa: UP007
    AnyOutput = Union[OUTPUT_CLASSES]  # noqa: UP007


class InputSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    type: str
    required: bool
    # any: a value or an edge; connection: only an edge; direct: only a value.
    input: InputKind
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None
    choices: list[Any] | None = None
    nullable: bool = False
    description: str | None = None
    # A model input: the type of model it takes (`main`, `lora`, `vae`...), and the bases, when only some fit.
    model_type: str | None = None
    base_models: list[str] | None = None


class OutputSpec(msgspec.Struct):
    name: str
    type: str


class NodeSpec(msgspec.Struct, kw_only=True):
    type: str
    title: str
    description: str
    category: str
    # Whether an identical invocation may be answered from the node cache.
    cacheable: bool
    inputs: list[InputSpec]
    outputs: list[OutputSpec]


class NodeCatalogue(msgspec.Struct):
    nodes: list[NodeSpec]


class FieldInfo(msgspec.Struct, kw_only=True):
    """One input as validation sees it."""

    name: str
    annotation: Any
    type: str
    required: bool
    input: InputKind
    nullable: bool
    choices: tuple[Any, ...] | None = None
    model_type: str | None = None
    base_models: tuple[str, ...] | None = None


def type_name(t: mi.Type) -> str:
    """The catalogue name of a msgspec type: integer, float, string, boolean, image, latents, collection[...]."""
    if isinstance(t, mi.Metadata):
        return type_name(t.type)
    if isinstance(t, mi.UnionType):
        names = [type_name(member) for member in t.types if not isinstance(member, mi.NoneType)]
        return names[0] if len(names) == 1 else "any"
    if isinstance(t, mi.BoolType):
        return "boolean"
    if isinstance(t, mi.IntType):
        return "integer"
    if isinstance(t, mi.FloatType):
        return "float"
    if isinstance(t, mi.StrType):
        return "string"
    if isinstance(t, mi.LiteralType):
        kinds = {type(value) for value in t.values}
        return "integer" if kinds == {int} else "string"
    if isinstance(t, mi.ListType):
        item = type_name(t.item_type)
        return "collection" if item == "any" else f"collection[{item}]"
    if isinstance(t, mi.StructType):
        return TYPE_NAMES.get(t.cls, t.cls.__name__)
    return "any"


def compatible(source: str, destination: str) -> bool:
    """Whether an output of type `source` may feed an input of type `destination`."""
    if source == destination or "any" in (source, destination):
        return True
    if source == "integer" and destination == "float":
        return True
    # A collection of unknown items fits any collection, and any collection fits one of unknown items.
    return (source == "collection" and destination.startswith("collection")) or (
        source.startswith("collection") and destination == "collection"
    )


def _unwrap(t: mi.Type) -> tuple[mi.Type, dict[str, Any], dict[str, Any]]:
    extra: dict[str, Any] = {}
    schema: dict[str, Any] = {}
    while isinstance(t, mi.Metadata):
        extra.update(t.extra or {})
        schema.update(t.extra_json_schema or {})
        t = t.type
    return t, extra, schema


def struct_fields(cls: type[msgspec.Struct]) -> tuple[mi.Field, ...]:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info.fields


@functools.cache
def input_fields(cls: type[Node]) -> dict[str, FieldInfo]:
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for field in struct_fields(cls):
        if field.name in _NOT_INPUTS:
            continue
        inner, extra, _ = _unwrap(field.type)
        nullable = isinstance(inner, mi.UnionType) and any(isinstance(m, mi.NoneType) for m in inner.types)
        fields[field.name] = FieldInfo(
            name=field.name,
            annotation=hints[field.name],
            type=type_name(inner),
            required=field.required or bool(extra.get("required")),
            input=extra.get("input", "any"),
            nullable=nullable,
            choices=_choices(hints[field.name]),
            model_type=extra.get("model_type"),
            base_models=tuple(extra["base_models"]) if extra.get("base_models") else None,
        )
    return fields


@functools.cache
def output_fields(cls: type[Node]) -> dict[str, str]:
    return {field.name: type_name(field.type) for field in struct_fields(cls.output) if field.name != "type"}


def _constraints(t: mi.Type) -> dict[str, Any]:
    if isinstance(t, mi.UnionType):
        found: dict[str, Any] = {}
        for member in t.types:
            found.update(_constraints(member))
        return found
    if isinstance(t, mi.IntType | mi.FloatType):
        found = {}
        if t.ge is not None:
            found["minimum"] = t.ge
        if t.le is not None:
            found["maximum"] = t.le
        if isinstance(t, mi.IntType) and t.multiple_of is not None:
            found["multiple_of"] = t.multiple_of
        return found
    if isinstance(t, mi.Metadata):
        return _constraints(t.type)
    return {}


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    """A Literal's values in declaration order (msgspec's own type info sorts them)."""
    if typing.get_origin(annotation) is typing.Annotated:
        return _choices(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for member in typing.get_args(annotation):
        found = _choices(member)
        if found:
            return found
    return None


def node_spec(cls: type[Node]) -> NodeSpec:
    info = {field.name: field for field in struct_fields(cls)}
    inputs = []
    for name, field in input_fields(cls).items():
        inner, _, schema = _unwrap(info[name].type)
        default = info[name].default
        inputs.append(
            InputSpec(
                name=name,
                type=field.type,
                required=field.required,
                input=field.input,
                default=None if default is msgspec.NODEFAULT else msgspec.to_builtins(default),
                nullable=field.nullable,
                description=schema.get("description"),
                choices=list(field.choices) if field.choices else None,
                model_type=field.model_type,
                base_models=list(field.base_models) if field.base_models else None,
                **_constraints(inner),
            )
        )
    doc = " ".join((cls.__doc__ or "").split())
    return NodeSpec(
        type=node_type(cls),
        title=cls.__name__.removesuffix("Node"),
        description=doc,
        category=cls.category,
        cacheable=cls.cacheable,
        inputs=inputs,
        outputs=[OutputSpec(name=name, type=kind) for name, kind in output_fields(cls).items()],
    )


@functools.cache
def catalogue() -> NodeCatalogue:
    return NodeCatalogue(nodes=[node_spec(cls) for cls in NODE_CLASSES])
