"""The graph as every image embeds it (`invokeai_graph`): the session's graph without its `metadata_accumulator`
nodes and their edges, handled as raw JSON.

A session row is several kilobytes of JSON (graph, results, errors); `/metadata` needs only its graph, and of
the graph only each node's `type` and each edge's node ids. Nodes and edges stay `msgspec.Raw` (bytes that are
never turned into objects) and are re-emitted as they were."""

from __future__ import annotations

import msgspec

ACCUMULATOR_TYPE = "metadata_accumulator"


class _NodeType(msgspec.Struct):
    type: str = ""


class _EdgeEnd(msgspec.Struct):
    node_id: str


class _EdgeEnds(msgspec.Struct):
    source: _EdgeEnd
    destination: _EdgeEnd


class _RawGraph(msgspec.Struct):
    id: str | None = None
    nodes: dict[str, msgspec.Raw] = {}
    edges: list[msgspec.Raw] = []


class _SessionGraph(msgspec.Struct):
    # msgspec decodes `Raw` only on its own, not in a union; an absent graph stays empty.
    graph: msgspec.Raw = msgspec.Raw()


_graph_decoder = msgspec.json.Decoder(_RawGraph)
_node_decoder = msgspec.json.Decoder(_NodeType)
_edge_decoder = msgspec.json.Decoder(_EdgeEnds)
_session_decoder = msgspec.json.Decoder(_SessionGraph)
_encoder = msgspec.json.Encoder()


def _stripped(graph_json: str | bytes) -> bytes:
    graph = _graph_decoder.decode(graph_json)
    accumulators = {
        node_id for node_id, raw in graph.nodes.items() if _node_decoder.decode(raw).type == ACCUMULATOR_TYPE
    }
    if not accumulators:
        return graph_json.encode() if isinstance(graph_json, str) else bytes(graph_json)
    nodes = {node_id: raw for node_id, raw in graph.nodes.items() if node_id not in accumulators}
    # A new list, not removal while iterating: two edges from the same accumulator in a row are both dropped.
    edges = []
    for raw in graph.edges:
        ends = _edge_decoder.decode(raw)
        if ends.source.node_id not in accumulators and ends.destination.node_id not in accumulators:
            edges.append(raw)
    return _encoder.encode(_RawGraph(id=graph.id, nodes=nodes, edges=edges))


def stripped_graph_json(graph_json: str | bytes) -> str:
    """The graph JSON without any `metadata_accumulator` node or any edge that touches one.

    Raises `msgspec.DecodeError` (a `ValueError`) when `graph_json` is not a graph."""
    return _stripped(graph_json).decode()


def session_graph_raw(session_json: str | bytes) -> msgspec.Raw | None:
    """The session's graph with accumulators removed, as raw JSON, from the stored session string."""
    graph = bytes(_session_decoder.decode(session_json).graph)
    if graph in (b"", b"null"):
        return None
    return msgspec.Raw(_stripped(graph))
