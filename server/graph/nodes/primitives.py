"""Values, random integers, ranges, and the two structural nodes: `iterate` (one execution of everything
downstream per item) and `collect` (gather the items back into one collection)."""

from __future__ import annotations

import random
from typing import Annotated, Any

import msgspec

from server.graph.context import InvocationContext, NodeError
from server.graph.nodes.base import REQUIRED, WIRE_REQUIRED, Node, Output


class IntegerOutput(Output, tag="integer_output"):
    value: int


class FloatOutput(Output, tag="float_output"):
    value: float


class StringOutput(Output, tag="string_output"):
    value: str


class BooleanOutput(Output, tag="boolean_output"):
    value: bool


class IntegerCollectionOutput(Output, tag="integer_collection_output"):
    collection: list[int]


class CollectionOutput(Output, tag="collection_output"):
    collection: list[Any]


class IterateOutput(Output, tag="iterate_output"):
    item: Any
    index: int
    total: int


class IntegerNode(Node, tag="integer", kw_only=True):
    """An integer value."""

    value: int = 0
    output = IntegerOutput

    def invoke(self, ctx: InvocationContext) -> IntegerOutput:
        return IntegerOutput(value=self.value)


class FloatNode(Node, tag="float", kw_only=True):
    """A float value."""

    value: float = 0.0
    output = FloatOutput

    def invoke(self, ctx: InvocationContext) -> FloatOutput:
        return FloatOutput(value=self.value)


class StringNode(Node, tag="string", kw_only=True):
    """A string value."""

    value: str = ""
    output = StringOutput

    def invoke(self, ctx: InvocationContext) -> StringOutput:
        return StringOutput(value=self.value)


class BooleanNode(Node, tag="boolean", kw_only=True):
    """A boolean value."""

    value: bool = False
    output = BooleanOutput

    def invoke(self, ctx: InvocationContext) -> BooleanOutput:
        return BooleanOutput(value=self.value)


class RandomIntNode(Node, tag="rand_int", kw_only=True):
    """A random integer in [low, high); a new one on every run (never cached)."""

    low: int = 0
    high: int = 2**31 - 1
    output = IntegerOutput
    cacheable = False

    def invoke(self, ctx: InvocationContext) -> IntegerOutput:
        if self.high <= self.low:
            raise NodeError(f"`high` ({self.high}) must be greater than `low` ({self.low})")
        return IntegerOutput(value=random.randrange(self.low, self.high))


class RangeNode(Node, tag="range", kw_only=True):
    """Integers from `start` up to (not including) `stop`, `step` apart, like Python's range()."""

    start: int = 0
    stop: int = 10
    step: int = 1
    output = IntegerCollectionOutput

    def invoke(self, ctx: InvocationContext) -> IntegerCollectionOutput:
        if self.step == 0:
            raise NodeError("`step` must not be 0")
        values = range(self.start, self.stop, self.step)
        if len(values) > MAX_ITEMS:
            raise NodeError(f"the range holds {len(values)} values; at most {MAX_ITEMS} are allowed")
        return IntegerCollectionOutput(collection=list(values))


# An iterate over more items than this is almost surely a mistake (one execution per item).
MAX_ITEMS = 10_000


class IterateNode(Node, tag="iterate", kw_only=True):
    """Runs everything downstream of `item` once per element of `collection`."""

    collection: Annotated[list[Any] | None, REQUIRED, msgspec.Meta(description="the items; each one execution")] = None
    output = IterateOutput
    cacheable = False  # structural: the executor expands it, it never runs on the worker


class CollectNode(Node, tag="collect", kw_only=True):
    """Gathers `item` from every execution (every iteration, every edge into it) into `collection`."""

    item: Annotated[Any, WIRE_REQUIRED, msgspec.Meta(description="wire one or more edges here")] = None
    output = CollectionOutput
    cacheable = False  # structural, like iterate


STRUCTURAL_TYPES = ("iterate", "collect")
