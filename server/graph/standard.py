"""The standard generation graphs (docs/api.md §Sessions and graphs), built from one settings Struct.

This is the one builder: the web UI asks for its graphs through `POST /api/v1/app/graph`, `imagegraph
generate`, the benchmarks and the tests call it directly, and `examples/txt2img.json` is its output (a test
keeps them equal). Field names of the graphs are part of the contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, cast

import msgspec

from server.graph.nodes.base import SEED_MAX
from server.graph.nodes.latents import Dimension, Scheduler
from server.models.schema import ModelIdentifier


class LoraSetting(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    lora: ModelIdentifier
    weight: Annotated[float, msgspec.Meta(ge=-10, le=10)] = 0.75


class GenerationSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a person sets on the Generate page; everything else of the graph follows from it."""

    model: ModelIdentifier
    prompt: str = ""
    negative_prompt: str = ""
    seed: Annotated[int, msgspec.Meta(ge=0, le=SEED_MAX)] = 42
    width: Dimension = 512
    height: Dimension = 512
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 20
    cfg_scale: Annotated[float, msgspec.Meta(ge=0, le=200)] = 7.5
    scheduler: Scheduler = "euler"
    # Applied in this order (a `lora_loader` each, chained between the model and its users).
    loras: list[LoraSetting] = []
    # A registered VAE instead of the model's own.
    vae: ModelIdentifier | None = None
    # Text-encoder layers skipped from the end (1: the penultimate layer, A1111's "CLIP skip 2").
    clip_skip: Annotated[int, msgspec.Meta(ge=0, le=31)] = 0
    # A `metadata_accumulator` wired to `l2i.metadata` embeds the settings in the PNG.
    metadata: bool = True
    graph_id: str = "t2i"


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


def build_graph(settings: GenerationSettings) -> dict[str, Any]:
    """The graph for `settings`, as JSON-ready dicts (what POST /sessions/ takes)."""
    model = msgspec.to_builtins(settings.model)
    size = {"width": settings.width, "height": settings.height}
    sampling = {"steps": settings.steps, "cfg_scale": settings.cfg_scale, "scheduler": settings.scheduler}
    nodes: dict[str, Any] = {
        "model": {"id": "model", "type": "main_model_loader", "model": model},
        "pos": {"id": "pos", "type": "compel", "prompt": settings.prompt},
        "neg": {"id": "neg", "type": "compel", "prompt": settings.negative_prompt},
        "noise": {"id": "noise", "type": "noise", "seed": settings.seed, **size},
        "denoise": {"id": "denoise", "type": "denoise_latents", **sampling},
        "decode": {"id": "decode", "type": "l2i"},
    }
    # The model's parts pass through each LoRA, then the text encoder through clip_skip, on their way to use.
    edges: list[dict[str, Any]] = []
    unet, clip, vae = ("model", "unet"), ("model", "clip"), ("model", "vae")
    for index, lora in enumerate(settings.loras, start=1):
        node_id = f"lora_{index}"
        nodes[node_id] = {
            "id": node_id,
            "type": "lora_loader",
            "lora": msgspec.to_builtins(lora.lora),
            "weight": lora.weight,
        }
        edges += [edge(*unet, node_id, "unet"), edge(*clip, node_id, "clip")]
        unet, clip = (node_id, "unet"), (node_id, "clip")
    if settings.clip_skip:
        nodes["clip_skip"] = {"id": "clip_skip", "type": "clip_skip", "skipped_layers": settings.clip_skip}
        edges.append(edge(*clip, "clip_skip", "clip"))
        clip = ("clip_skip", "clip")
    if settings.vae is not None:
        nodes["vae"] = {"id": "vae", "type": "vae_loader", "vae_model": msgspec.to_builtins(settings.vae)}
        vae = ("vae", "vae")
    edges += [
        edge(*clip, "pos", "clip"),
        edge(*clip, "neg", "clip"),
        edge(*unet, "denoise", "unet"),
        edge("pos", "conditioning", "denoise", "positive_conditioning"),
        edge("neg", "conditioning", "denoise", "negative_conditioning"),
        edge("noise", "noise", "denoise", "noise"),
        edge("denoise", "latents", "decode", "latents"),
        edge(*vae, "decode", "vae"),
    ]
    if settings.metadata:
        nodes["meta"] = {
            "id": "meta",
            "type": "metadata_accumulator",
            "generation_mode": "txt2img",
            "positive_prompt": settings.prompt,
            "negative_prompt": settings.negative_prompt,
            "seed": settings.seed,
            **size,
            **sampling,
            "model": model,
        }
        if settings.loras:
            nodes["meta"]["loras"] = [msgspec.to_builtins(lora) for lora in settings.loras]
        if settings.vae is not None:
            nodes["meta"]["vae"] = msgspec.to_builtins(settings.vae)
        if settings.clip_skip:
            nodes["meta"]["clip_skip"] = settings.clip_skip
        edges.append(edge("meta", "metadata", "decode", "metadata"))
    return {"id": settings.graph_id, "nodes": nodes, "edges": edges}


def txt2img_graph(
    model: dict[str, str],
    prompt: str,
    *,
    negative: str = "",
    seed: int = 42,
    width: int = 512,
    height: int = 512,
    steps: int = 20,
    cfg_scale: float = 7.5,
    scheduler: str = "euler",
    metadata: bool = True,
    graph_id: str = "t2i",
    loras: Sequence[tuple[dict[str, str], float]] = (),
    vae: dict[str, str] | None = None,
    clip_skip: int = 0,
) -> dict[str, Any]:
    """`build_graph` with keyword arguments (scripts and tests). Values are not checked here (the server checks
    the graph), so a test can build a graph the server must refuse."""
    settings = GenerationSettings(
        model=msgspec.convert(model, ModelIdentifier),
        prompt=prompt,
        negative_prompt=negative,
        seed=seed,
        width=width,
        height=height,
        steps=steps,
        cfg_scale=cfg_scale,
        scheduler=cast(Scheduler, scheduler),
        metadata=metadata,
        graph_id=graph_id,
        loras=[LoraSetting(lora=msgspec.convert(lora, ModelIdentifier), weight=weight) for lora, weight in loras],
        vae=msgspec.convert(vae, ModelIdentifier) if vae is not None else None,
        clip_skip=clip_skip,
    )
    return build_graph(settings)
