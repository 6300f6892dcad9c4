"""Checking a graph before it is stored: every node's values against its type, every edge against the types
at both ends, required inputs, cycles. What it names (models, images) is checked by server/graph/references.py.

Validation walks node by node and field by field and collects every problem, rather than decoding the
whole graph with one msgspec union (which stops at the first error): a person fixing a graph sees all of
its problems at once, each with a `loc` like ("nodes", "n3", "steps")."""

from __future__ import annotations

import re
import uuid
from typing import Any

import msgspec

from server.graph.graph import Edge, Graph, GraphInput
from server.graph.nodes import Node
from server.graph.nodes.primitives import CollectNode, IterateNode
from server.graph.registry import NODE_TYPES, compatible, input_fields, output_fields

Loc = tuple[str | int, ...]


class Problem(msgspec.Struct):
    loc: Loc
    msg: str


class GraphInvalid(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems[0].msg if problems else "invalid graph")
        self.problems = problems


def validate_graph(data: GraphInput) -> Graph:
    """A typed Graph, or GraphInvalid listing every problem found."""
    return _Validator(data).run()


class _Validator:
    def __init__(self, data: GraphInput) -> None:
        self.data = data
        self.problems: list[Problem] = []
        self.types: dict[str, type[Node]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        # (destination node, field) -> edges into it, by index
        self.incoming: dict[tuple[str, str], list[tuple[int, Edge]]] = {}
        self.edges: list[tuple[int, Edge]] = []
        # (node, field) whose problem is reported elsewhere (a value where an edge belongs, a broken edge into
        # it): not reported again as missing
        self.refused: set[tuple[str, str]] = set()

    def fail(self, loc: Loc, msg: str) -> None:
        self.problems.append(Problem(loc=loc, msg=msg))

    def run(self) -> Graph:
        for node_id, raw in self.data.nodes.items():
            self.check_node(node_id, raw)
        for index, raw in enumerate(self.data.edges):
            self.check_edge(index, raw)
        self.check_types()
        self.check_required()
        self.check_cycles()
        if self.problems:
            raise GraphInvalid(self.problems)
        nodes = {node_id: self.types[node_id](id=node_id, **self.values[node_id]) for node_id in self.data.nodes}
        edges = [edge for _, edge in self.edges]
        return Graph(id=self.data.id or str(uuid.uuid4()), nodes=nodes, edges=edges)

    def check_node(self, node_id: str, raw: Any) -> None:
        loc: Loc = ("nodes", node_id)
        if not node_id:
            self.fail(loc, "a node id must not be empty")
        if not isinstance(raw, dict):
            self.fail(loc, "a node must be an object with `id`, `type` and its inputs")
            return
        if "id" in raw and raw["id"] != node_id:
            self.fail((*loc, "id"), f"`id` must equal the node's key {node_id!r}, not {raw['id']!r}")
        kind = raw.get("type")
        if not isinstance(kind, str):
            self.fail((*loc, "type"), "`type` is required: one of the node types listed by GET /api/v1/nodes/")
            return
        cls = NODE_TYPES.get(kind)
        if cls is None:
            self.fail((*loc, "type"), f"unknown node type {kind!r}; GET /api/v1/nodes/ lists the known ones")
            return
        self.types[node_id] = cls
        fields = input_fields(cls)
        values: dict[str, Any] = {}
        for name, value in raw.items():
            if name in ("id", "type"):
                continue
            field = fields.get(name)
            if field is None:
                self.fail((*loc, name), f"`{kind}` has no input `{name}`; its inputs: {', '.join(fields)}")
                continue
            if field.input == "connection":
                if value is not None:
                    self.refused.add((node_id, name))
                    self.fail(
                        (*loc, name), f"`{name}` takes its value from an edge only; wire another node's output into it"
                    )
                continue
            try:
                values[name] = msgspec.convert(value, field.annotation)
            except msgspec.ValidationError as exc:
                reason, path = _split_error(exc)
                if field.choices and not path:
                    reason = f"must be one of {', '.join(map(repr, field.choices))}, not {value!r}"
                self.fail((*loc, name, *path), f"`{node_id}.{name}`: {reason}")
        self.values[node_id] = values

    def check_edge(self, index: int, raw: Any) -> None:
        loc: Loc = ("edges", index)
        try:
            edge = msgspec.convert(raw, Edge)
        except msgspec.ValidationError as exc:
            reason, path = _split_error(exc)
            self.fail((*loc, *path), f"edge {index}: {reason}")
            return
        # An edge with a problem still counts as wiring its destination: "missing input" would only repeat it.
        self.refused.add((edge.destination.node_id, edge.destination.field))
        ok = True
        for end, name in ((edge.source, "source"), (edge.destination, "destination")):
            if end.node_id not in self.data.nodes:
                self.fail(
                    (*loc, name, "node_id"), f"edge {index} {name}: there is no node {end.node_id!r} in the graph"
                )
                ok = False
        if not ok:
            return
        source_cls = self.types.get(edge.source.node_id)
        dest_cls = self.types.get(edge.destination.node_id)
        if source_cls is not None and edge.source.field not in output_fields(source_cls):
            outputs = ", ".join(output_fields(source_cls))
            self.fail(
                (*loc, "source", "field"),
                f"edge {index}: `{edge.source.node_id}` has no output `{edge.source.field}`; its outputs: {outputs}",
            )
            ok = False
        if dest_cls is not None:
            field = input_fields(dest_cls).get(edge.destination.field)
            if field is None:
                self.fail(
                    (*loc, "destination", "field"),
                    f"edge {index}: `{edge.destination.node_id}` has no input `{edge.destination.field}`",
                )
                ok = False
            elif field.input == "direct":
                self.fail(
                    (*loc, "destination", "field"),
                    f"edge {index}: `{edge.destination.node_id}.{edge.destination.field}` takes a value, not an edge",
                )
                ok = False
        if source_cls is None or dest_cls is None or not ok:
            return
        key = (edge.destination.node_id, edge.destination.field)
        earlier = self.incoming.get(key, [])
        if earlier and not (dest_cls is CollectNode and edge.destination.field == "item"):
            self.fail(
                (*loc, "destination"),
                f"edge {index}: `{key[0]}.{key[1]}` already has an edge (edge {earlier[0][0]}); an input takes one edge "
                "(only `collect.item` gathers several)",
            )
            return
        self.incoming.setdefault(key, []).append((index, edge))
        self.edges.append((index, edge))

    def output_type(self, node_id: str, field: str, seen: frozenset[str] = frozenset()) -> str:
        """An output's type; an iterate's `item` and a collect's `collection` take theirs from their inputs."""
        cls = self.types[node_id]
        if node_id in seen:
            return "any"
        seen = seen | {node_id}
        if cls is IterateNode and field == "item":
            wired = self.incoming.get((node_id, "collection"))
            if not wired:
                return "any"
            source = wired[0][1].source
            kind = self.output_type(source.node_id, source.field, seen)
            return kind[len("collection[") : -1] if kind.startswith("collection[") else "any"
        if cls is CollectNode and field == "collection":
            kinds = {
                self.output_type(e.source.node_id, e.source.field, seen)
                for _, e in self.incoming.get((node_id, "item"), [])
            }
            return f"collection[{kinds.pop()}]" if len(kinds) == 1 and "any" not in kinds else "collection"
        return output_fields(cls)[field]

    def check_types(self) -> None:
        for index, edge in self.edges:
            source = self.output_type(edge.source.node_id, edge.source.field)
            dest_cls = self.types[edge.destination.node_id]
            dest = input_fields(dest_cls)[edge.destination.field].type
            if not compatible(source, dest):
                self.fail(
                    ("edges", index),
                    f"edge {index}: `{edge.source.node_id}.{edge.source.field}` gives {source} but "
                    f"`{edge.destination.node_id}.{edge.destination.field}` takes {dest}",
                )
        for (node_id, field), wired in self.incoming.items():
            if self.types[node_id] is CollectNode and field == "item" and len(wired) > 1:
                kinds = {self.output_type(e.source.node_id, e.source.field) for _, e in wired}
                if len(kinds - {"any"}) > 1:
                    self.fail(
                        ("nodes", node_id, "item"),
                        f"`{node_id}` collects items of different types ({', '.join(sorted(kinds))}); collect one type",
                    )

    def check_required(self) -> None:
        for node_id, cls in self.types.items():
            for name, field in input_fields(cls).items():
                key = (node_id, name)
                if (
                    not field.required
                    or name in self.values.get(node_id, {})
                    or key in self.incoming
                    or key in self.refused
                ):
                    continue
                how = (
                    "wire another node's output into it"
                    if field.input == "connection"
                    else "give a value or wire an edge into it"
                )
                self.fail(("nodes", node_id, name), f"`{node_id}.{name}` is required: {how}")

    def check_cycles(self) -> None:
        successors: dict[str, list[tuple[str, int]]] = {}
        for index, edge in self.edges:
            successors.setdefault(edge.source.node_id, []).append((edge.destination.node_id, index))
        state: dict[str, int] = {}  # 1 on the DFS stack, 2 done
        for start in self.data.nodes:
            if state.get(start):
                continue
            stack: list[tuple[str, int]] = [(start, 0)]
            path = [start]
            state[start] = 1
            while stack:
                node, position = stack[-1]
                nexts = successors.get(node, [])
                if position == len(nexts):
                    stack.pop()
                    path.pop()
                    state[node] = 2
                    continue
                stack[-1] = (node, position + 1)
                target, index = nexts[position]
                if state.get(target) == 1:
                    cycle = [*path[path.index(target) :], target]
                    self.fail(
                        ("edges", index), f"edge {index} closes a cycle: {' → '.join(cycle)}; a graph must not loop"
                    )
                elif not state.get(target):
                    state[target] = 1
                    stack.append((target, 0))
                    path.append(target)


_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]|\['([^']*)'\]")


def _split_error(exc: msgspec.ValidationError) -> tuple[str, Loc]:
    """msgspec's "Expected `int` >= 1 - at `$.a[0]`" → ("Expected `int` >= 1", ("a", 0))."""
    reason, _, path = str(exc).partition(" - at `")
    parts: list[str | int] = []
    for name, number, key in _PATH_TOKEN.findall(path.rstrip("`").removeprefix("$")):
        parts.append(int(number) if number else (name or key))
    return reason, tuple(parts)
