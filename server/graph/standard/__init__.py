"""The standard generation graphs (docs/api.md §Sessions and graphs), built from one settings Struct.

This is the one builder: the web UI asks for its graphs through `POST /api/v1/app/graph`, the A1111 routes,
`imagegraph generate`, the benchmarks and the tests call it directly, and `examples/txt2img.json` is its output
(a test keeps them equal). Field names of the graphs are part of the contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import msgspec

from server.graph.nodes.latents import Scheduler
from server.graph.standard.builder import SettingsProblem, build_graph
from server.graph.standard.draft import edge
from server.graph.standard.settings import (
    ControlSettings,
    GenerationSettings,
    HiresSettings,
    LoraSetting,
    OutpaintSettings,
    RefinerSettings,
)
from server.models.schema import ModelIdentifier

__all__ = [
    "ControlSettings",
    "GenerationSettings",
    "HiresSettings",
    "LoraSetting",
    "OutpaintSettings",
    "RefinerSettings",
    "SettingsProblem",
    "build_graph",
    "edge",
    "txt2img_graph",
]


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
