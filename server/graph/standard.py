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


class RefinerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An SDXL refiner taking over the base's schedule at `switch_at` (diffusers' "ensemble of experts")."""

    model: ModelIdentifier
    switch_at: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.8
    # Of the whole schedule, as the base's steps are; defaults: the base's steps, CFG scale and scheduler.
    steps: Annotated[int, msgspec.Meta(ge=1, le=1000)] | None = None
    cfg_scale: Annotated[float, msgspec.Meta(ge=0, le=200)] | None = None
    scheduler: Scheduler | None = None
    aesthetic_score: Annotated[float, msgspec.Meta(ge=0, le=10)] = 6.0
    negative_aesthetic_score: Annotated[float, msgspec.Meta(ge=0, le=10)] = 2.5


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
    # SDXL only: a refiner model for the last part of the schedule.
    refiner: RefinerSettings | None = None
    # A `metadata_accumulator` wired to `l2i.metadata` embeds the settings in the PNG.
    metadata: bool = True
    graph_id: str = "t2i"


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


class SettingsProblem(ValueError):
    """Settings that make no graph (a refiner for an SD-1 model...); `field` names the setting at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class _Builder:
    def __init__(self) -> None:
        self.nodes: dict[str, Any] = {}
        self.edges: list[dict[str, Any]] = []

    def add(self, node_id: str, node_type: str, **fields: Any) -> str:
        self.nodes[node_id] = {"id": node_id, "type": node_type, **fields}
        return node_id

    def wire(self, source: tuple[str, str], destination: str, field: str) -> None:
        self.edges.append(edge(*source, destination, field))


def build_graph(settings: GenerationSettings) -> dict[str, Any]:
    """The graph for `settings`, as JSON-ready dicts (what POST /sessions/ takes). An SDXL model gets the SDXL
    nodes (and its refiner, if one is set); SD-1 and SD-2 the contract's standard graph."""
    sdxl = settings.model.base_model == "sdxl"
    if settings.refiner is not None and not sdxl:
        raise SettingsProblem(
            "refiner", f"a refiner goes with an SDXL model; {settings.model.key} is {settings.model.base_model}"
        )
    if settings.refiner is not None and settings.refiner.model.base_model != "sdxl-refiner":
        raise SettingsProblem("refiner", f"the refiner must be an sdxl-refiner model, not {settings.refiner.model.key}")
    model = msgspec.to_builtins(settings.model)
    size = {"width": settings.width, "height": settings.height}
    sampling = {"steps": settings.steps, "cfg_scale": settings.cfg_scale, "scheduler": settings.scheduler}
    graph = _Builder()
    if sdxl:
        sdxl_size = {
            "original_width": settings.width,
            "original_height": settings.height,
            "target_width": settings.width,
            "target_height": settings.height,
        }
        graph.add("model", "sdxl_model_loader", model=model)
        graph.add("pos", "sdxl_compel_prompt", prompt=settings.prompt, style="", **sdxl_size)
        graph.add("neg", "sdxl_compel_prompt", prompt=settings.negative_prompt, style="", **sdxl_size)
    else:
        graph.add("model", "main_model_loader", model=model)
        graph.add("pos", "compel", prompt=settings.prompt)
        graph.add("neg", "compel", prompt=settings.negative_prompt)
    graph.add("noise", "noise", seed=settings.seed, **size)
    split = {"denoising_end": settings.refiner.switch_at} if settings.refiner is not None else {}
    graph.add("denoise", "denoise_latents", **sampling, **split)
    graph.add("decode", "l2i")
    # The model's parts pass through each LoRA, then the text encoders through clip_skip, on their way to use.
    unet, clip, clip2, vae = ("model", "unet"), ("model", "clip"), ("model", "clip2"), ("model", "vae")
    for index, lora in enumerate(settings.loras, start=1):
        node_id = graph.add(
            f"lora_{index}",
            "sdxl_lora_loader" if sdxl else "lora_loader",
            lora=msgspec.to_builtins(lora.lora),
            weight=lora.weight,
        )
        graph.wire(unet, node_id, "unet")
        graph.wire(clip, node_id, "clip")
        if sdxl:
            graph.wire(clip2, node_id, "clip2")
        unet, clip, clip2 = (node_id, "unet"), (node_id, "clip"), (node_id, "clip2")
    if settings.clip_skip:
        graph.add("clip_skip", "clip_skip", skipped_layers=settings.clip_skip)
        graph.wire(clip, "clip_skip", "clip")
        clip = ("clip_skip", "clip")
        if sdxl:
            graph.add("clip2_skip", "clip_skip", skipped_layers=settings.clip_skip)
            graph.wire(clip2, "clip2_skip", "clip")
            clip2 = ("clip2_skip", "clip")
    if settings.vae is not None:
        graph.add("vae", "vae_loader", vae_model=msgspec.to_builtins(settings.vae))
        vae = ("vae", "vae")
    for prompt in ("pos", "neg"):
        graph.wire(clip, prompt, "clip")
        if sdxl:
            graph.wire(clip2, prompt, "clip2")
    graph.wire(unet, "denoise", "unet")
    graph.wire(("pos", "conditioning"), "denoise", "positive_conditioning")
    graph.wire(("neg", "conditioning"), "denoise", "negative_conditioning")
    graph.wire(("noise", "noise"), "denoise", "noise")
    latents = ("denoise", "latents")
    if settings.refiner is not None:
        latents, refiner_vae = _add_refiner(graph, settings, settings.refiner, latents)
        vae = vae if settings.vae is not None else refiner_vae
    graph.wire(latents, "decode", "latents")
    graph.wire(vae, "decode", "vae")
    if settings.metadata:
        graph.add("meta", "metadata_accumulator", **_metadata(settings, model, size, sampling))
        graph.wire(("meta", "metadata"), "decode", "metadata")
    return {"id": settings.graph_id, "nodes": graph.nodes, "edges": graph.edges}


def _add_refiner(
    graph: _Builder, settings: GenerationSettings, refiner: RefinerSettings, latents: tuple[str, str]
) -> tuple[tuple[str, str], tuple[str, str]]:
    """The refiner's loader, prompts and denoise, continuing the base's latents; returns (latents, vae)."""
    size = {"original_width": settings.width, "original_height": settings.height}
    graph.add("refiner_model", "sdxl_refiner_model_loader", model=msgspec.to_builtins(refiner.model))
    graph.add(
        "refiner_pos",
        "sdxl_refiner_compel_prompt",
        style=settings.prompt,
        aesthetic_score=refiner.aesthetic_score,
        **size,
    )
    graph.add(
        "refiner_neg",
        "sdxl_refiner_compel_prompt",
        style=settings.negative_prompt,
        aesthetic_score=refiner.negative_aesthetic_score,
        **size,
    )
    graph.add(
        "refiner_denoise",
        "denoise_latents",
        steps=refiner.steps or settings.steps,
        cfg_scale=refiner.cfg_scale if refiner.cfg_scale is not None else settings.cfg_scale,
        scheduler=refiner.scheduler or settings.scheduler,
        denoising_start=refiner.switch_at,
    )
    for prompt in ("refiner_pos", "refiner_neg"):
        graph.wire(("refiner_model", "clip2"), prompt, "clip2")
    graph.wire(("refiner_model", "unet"), "refiner_denoise", "unet")
    graph.wire(("refiner_pos", "conditioning"), "refiner_denoise", "positive_conditioning")
    graph.wire(("refiner_neg", "conditioning"), "refiner_denoise", "negative_conditioning")
    graph.wire(latents, "refiner_denoise", "latents")
    return ("refiner_denoise", "latents"), ("refiner_model", "vae")


def _metadata(
    settings: GenerationSettings, model: Any, size: dict[str, int], sampling: dict[str, Any]
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "generation_mode": "sdxl_txt2img" if settings.model.base_model == "sdxl" else "txt2img",
        "positive_prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "seed": settings.seed,
        **size,
        **sampling,
        "model": model,
    }
    if settings.loras:
        fields["loras"] = [msgspec.to_builtins(lora) for lora in settings.loras]
    if settings.vae is not None:
        fields["vae"] = msgspec.to_builtins(settings.vae)
    if settings.clip_skip:
        fields["clip_skip"] = settings.clip_skip
    refiner = settings.refiner
    if refiner is not None:
        fields.update(
            refiner_model=msgspec.to_builtins(refiner.model),
            refiner_start=refiner.switch_at,
            refiner_steps=refiner.steps or settings.steps,
            refiner_cfg_scale=refiner.cfg_scale if refiner.cfg_scale is not None else settings.cfg_scale,
            refiner_scheduler=refiner.scheduler or settings.scheduler,
            refiner_positive_aesthetic_score=refiner.aesthetic_score,
            refiner_negative_aesthetic_score=refiner.negative_aesthetic_score,
        )
    return fields


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
