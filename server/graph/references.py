"""The second half of checking a graph: what it names must exist and fit. Every model input names a registered
model of its type (and base, where the input says); an adapter (a LoRA, a ControlNet) is of the base of the
main model it is wired to; every image exists; every `<name>` embedding in a prompt can be taken by the
prompt's text encoder. Found when the session is created rather than halfway through a run."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from server.graph.fields import ImageField
from server.graph.graph import Edge, Graph, GraphInput
from server.graph.registry import input_fields
from server.graph.validation import GraphInvalid, Loc, Problem, validate_graph
from server.models import embeddings
from server.models.schema import ModelIdentifier


class ModelLookup(Protocol):
    async def ready(self) -> object: ...

    def get(self, base_model: str, model_type: str, model_name: str) -> Any:
        """The registered model; KeyError when there is none."""
        ...

    def list_models(self, base_models: Sequence[str] | None = None, model_type: str | None = None) -> list[Any]: ...

    def embedding_widths(self, config: Any) -> dict[str, int]: ...

    def text_encoder_width(self, config: Any, part: str = "text_encoder") -> int | None: ...


class ImageLookup(Protocol):
    async def get_dto(self, image_name: str) -> object | None: ...


async def check_graph(data: GraphInput, models: ModelLookup, images: ImageLookup) -> tuple[Graph | None, list[Problem]]:
    """A graph checked as every route that takes one checks it (sessions, workflows): its shape, types, edges
    and cycles, then what it names. (graph, []) when it is fine, (None, problems) otherwise."""
    try:
        graph = validate_graph(data)
    except GraphInvalid as exc:
        return None, exc.problems
    problems = await missing_references(graph, models, images)
    return (None, problems) if problems else (graph, [])


async def missing_references(graph: Graph, models: ModelLookup, images: ImageLookup) -> list[Problem]:
    """Models and images the graph names that do not exist or do not fit: found now rather than halfway through a
    run. A model input must name a registered model of its type (and base, where the input says), and an adapter
    (a LoRA, a ControlNet) must be of the base of the main model it is wired to."""
    problems = []
    await models.ready()
    for node_id, node in graph.nodes.items():
        if not node.names_references:
            continue
        fields = input_fields(type(node))
        for name in node.__struct_fields__:
            value = getattr(node, name)
            loc: Loc = ("nodes", node_id, name)
            if isinstance(value, ModelIdentifier):
                field = fields.get(name)
                wanted = field.model_type if field is not None else None
                if wanted is not None and value.model_type != wanted:
                    problems.append(Problem(loc=loc, msg=f"`{node_id}.{name}` takes a {wanted} model, not {value.key}"))
                    continue
                try:
                    models.get(value.base_model, value.model_type, value.model_name)
                except KeyError:
                    problems.append(
                        Problem(loc=loc, msg=f"model {value.key} is not registered; see GET /api/v1/models/")
                    )
                    continue
                bases = field.base_models if field is not None else None
                if bases and value.base_model not in bases:
                    problems.append(
                        Problem(
                            loc=loc,
                            msg=f"`{node_id}.{name}` takes a model of base {' or '.join(bases)}; {value.key} is "
                            f"{value.base_model}",
                        )
                    )
            elif isinstance(value, ImageField) and await images.get_dto(value.image_name) is None:
                problems.append(Problem(loc=loc, msg=f"image {value.image_name!r} does not exist"))
    incoming: dict[str, list[Edge]] = {}
    for edge in graph.edges:
        if edge.destination.field in MODEL_PART_INPUTS:
            incoming.setdefault(edge.destination.node_id, []).append(edge)
    problems += _mismatched_bases(graph, incoming)
    problems += await asyncio.to_thread(_unusable_embeddings, graph, incoming, models)
    return problems


def _main_model(
    graph: Graph, node_id: str, incoming: dict[str, list[Edge]], seen: set[str] | None = None
) -> ModelIdentifier | None:
    """The main model whose parts reach `node_id` along its wired model inputs, if one does."""
    seen = set() if seen is None else seen
    if node_id in seen:
        return None
    seen.add(node_id)
    for edge in incoming.get(node_id, []):
        source = graph.nodes[edge.source.node_id]
        model = getattr(source, "model", None)
        if isinstance(model, ModelIdentifier) and model.model_type == "main":
            return model
        found = _main_model(graph, edge.source.node_id, incoming, seen)
        if found is not None:
            return found
    return None


def _unusable_embeddings(graph: Graph, incoming: dict[str, list[Edge]], models: ModelLookup) -> list[Problem]:
    """`<name>` in a prompt that names a registered embedding the prompt's text encoder cannot take."""
    problems = []
    for node_id, node in graph.nodes.items():
        prompt_fields = [name for name in ("prompt", "style") if isinstance(getattr(node, name, None), str)]
        mentions = {name: embeddings.mentioned(getattr(node, name)) for name in prompt_fields}
        if not any(mentions.values()):
            continue
        main = _main_model(graph, node_id, incoming)
        if main is None:
            continue
        named = {config.model_name: config for config in models.list_models(None, "embedding")}
        try:
            main_config = models.get(main.base_model, main.model_type, main.model_name)
        except KeyError:
            continue  # reported as not registered
        for field_name, names in mentions.items():
            for name in names:
                usable = models.list_models(list(embeddings.usable_bases(main.base_model)), "embedding")
                config = embeddings.by_name(usable, main.base_model).get(name)
                if config is None:
                    other = named.get(name)
                    if other is not None:
                        problems.append(
                            Problem(
                                loc=("nodes", node_id, field_name),
                                msg=f"`<{name}>` is an embedding for {other.base_model} models; "
                                f"this prompt goes to {main.key}, a {main.base_model} model",
                            )
                        )
                    continue
                widths = models.embedding_widths(config)
                for part, width in widths.items():
                    wanted = models.text_encoder_width(main_config, part)
                    if wanted is not None and width != wanted:
                        problems.append(
                            Problem(
                                loc=("nodes", node_id, field_name),
                                msg=f"`<{name}>` has vectors of width {width}, but the text encoder of "
                                f"{main.key} takes {wanted}",
                            )
                        )
    return problems


def _mismatched_bases(graph: Graph, incoming: dict[str, list[Edge]]) -> list[Problem]:
    problems = []
    for node_id, node in graph.nodes.items():
        for name, field in input_fields(type(node)).items():
            value = getattr(node, name)
            if field.model_type in (None, "main") or not isinstance(value, ModelIdentifier):
                continue
            main = _main_model(graph, node_id, incoming)
            base = main.base_model if main is not None else None
            if base is not None and value.base_model != base:
                problems.append(
                    Problem(
                        loc=("nodes", node_id, name),
                        msg=f"{value.key} is for {value.base_model} models, but `{node_id}` is wired to a {base} model",
                    )
                )
    return problems


# The wired inputs that carry a main model's parts (UNet, text encoders, VAE) from node to node.
MODEL_PART_INPUTS = frozenset({"unet", "clip", "clip2", "vae"})
