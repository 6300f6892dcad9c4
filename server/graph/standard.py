"""The contract's standard text-to-image graph (API.md §Sessions and graphs), as plain JSON-ready dicts.

One builder for everyone who posts it: `imagegraph generate`, the benchmarks and the tests. The web UI builds
the same graph in static/js/graph.js."""

from __future__ import annotations

from typing import Any


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict[str, Any]:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


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
) -> dict[str, Any]:
    """With `metadata`, a `metadata_accumulator` wired to `l2i.metadata` embeds the settings in the PNG."""
    size = {"width": width, "height": height}
    sampling = {"steps": steps, "cfg_scale": cfg_scale, "scheduler": scheduler}
    nodes: dict[str, Any] = {
        "model": {"id": "model", "type": "main_model_loader", "model": dict(model)},
        "pos": {"id": "pos", "type": "compel", "prompt": prompt},
        "neg": {"id": "neg", "type": "compel", "prompt": negative},
        "noise": {"id": "noise", "type": "noise", "seed": seed, **size},
        "denoise": {"id": "denoise", "type": "denoise_latents", **sampling},
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
            "negative_prompt": negative,
            "seed": seed,
            **size,
            **sampling,
            "model": dict(model),
        }
        edges.append(edge("meta", "metadata", "decode", "metadata"))
    return {"id": graph_id, "nodes": nodes, "edges": edges}
