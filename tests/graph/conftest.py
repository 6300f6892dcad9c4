"""Graph builders shared by the graph tests: the contract's standard text-to-image graph and edges."""

from __future__ import annotations

import copy
from typing import Any

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


def t2i_graph(
    *,
    prompt: str = "a lighthouse at dusk",
    seed: int = 42,
    size: int = 64,
    steps: int = 4,
    scheduler: str = "euler",
    cfg_scale: float = 7.5,
    model: dict[str, str] | None = None,
    metadata: bool = True,
) -> dict[str, Any]:
    """The standard text-to-image graph of API.md, at test size."""
    model = copy.deepcopy(model or MODEL)
    nodes: dict[str, Any] = {
        "model": {"id": "model", "type": "main_model_loader", "model": model},
        "pos": {"id": "pos", "type": "compel", "prompt": prompt},
        "neg": {"id": "neg", "type": "compel", "prompt": ""},
        "noise": {"id": "noise", "type": "noise", "seed": seed, "width": size, "height": size},
        "denoise": {
            "id": "denoise",
            "type": "denoise_latents",
            "steps": steps,
            "cfg_scale": cfg_scale,
            "scheduler": scheduler,
        },
        "decode": {"id": "decode", "type": "l2i"},
    }
    edges = [
        edge("model", "clip", "pos", "clip"),
        edge("model", "clip", "neg", "clip"),
        edge("model", "unet", "denoise", "unet"),
        edge("pos", "conditioning", "denoise", "positive_conditioning"),
        edge("neg", "conditioning", "denoise", "negative_conditioning"),
        edge("noise", "noise", "denoise", "noise"),
        edge("denoise", "latents", "decode", "latents"),
        edge("model", "vae", "decode", "vae"),
    ]
    if metadata:
        nodes["meta"] = {
            "id": "meta",
            "type": "metadata_accumulator",
            "generation_mode": "txt2img",
            "positive_prompt": prompt,
            "negative_prompt": "",
            "seed": seed,
            "width": size,
            "height": size,
            "steps": steps,
            "cfg_scale": cfg_scale,
            "scheduler": scheduler,
            "model": copy.deepcopy(model),
        }
        edges.append(edge("meta", "metadata", "decode", "metadata"))
    return {"id": "t2i", "nodes": nodes, "edges": edges}
