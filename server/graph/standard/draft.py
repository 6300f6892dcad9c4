"""The graph a builder is putting together: nodes by id and the edges between them, in the JSON shape
POST /sessions/ takes. Its own module so that the stages and the builder both use it without importing
each other."""

from __future__ import annotations

from typing import Any

from server.graph.standard.settings import GenerationSettings


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


Output = tuple[str, str]


class Builder:
    def __init__(self, settings: GenerationSettings) -> None:
        self.settings = settings
        self.sdxl = settings.model.base_model == "sdxl"
        self.nodes: dict[str, Any] = {}
        self.edges: list[dict[str, Any]] = []
        # The prompt nodes: each takes the text encoder(s).
        self.encoders: list[str] = []
        # The node giving a pass's conditioning where it is not the node of that name (`hires_pos` → `pos`
        # when the hires pass's prompt schedule is the first pass's).
        self.conditioning_of: dict[str, str] = {}

    def add(self, node_id: str, node_type: str, **fields: Any) -> str:
        self.nodes[node_id] = {"id": node_id, "type": node_type, **fields}
        return node_id

    def wire(self, source: Output, destination: str, field: str) -> None:
        self.edges.append(edge(*source, destination, field))
