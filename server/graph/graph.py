"""The graph payload: nodes by id, edges between their fields, and the order to run them in. Checking a graph
is server/graph/validation.py's work."""

from __future__ import annotations

from typing import Any

import msgspec

from server.graph.registry import AnyNode


class EdgeConnection(msgspec.Struct):
    node_id: str
    field: str


class Edge(msgspec.Struct):
    source: EdgeConnection
    destination: EdgeConnection


class Graph(msgspec.Struct, kw_only=True):
    id: str
    nodes: dict[str, AnyNode] = {}
    edges: list[Edge] = []


class GraphInput(msgspec.Struct, kw_only=True):
    """What POST /sessions decodes before validation: only the outer shape, so node and edge problems can
    all be found and reported together."""

    id: str | None = None
    nodes: dict[str, Any] = {}
    edges: list[Any] = []


def topological_order(graph: Graph) -> list[str]:
    """Node ids so that every edge goes forward; ties keep the graph's own node order."""
    position = {node_id: i for i, node_id in enumerate(graph.nodes)}
    indegree = dict.fromkeys(graph.nodes, 0)
    successors: dict[str, list[str]] = {}
    for edge in graph.edges:
        indegree[edge.destination.node_id] += 1
        successors.setdefault(edge.source.node_id, []).append(edge.destination.node_id)
    ready = sorted((n for n, d in indegree.items() if d == 0), key=position.__getitem__)
    order = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for target in successors.get(node, []):
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)
                ready.sort(key=position.__getitem__)
    return order
