"""What a main checkpoint predicts and which legacy yaml it is loaded with: a yaml beside it, the tiny test
models' embedded diffusers config, the training step the two official SD-2 checkpoints record, or the
stock yaml of its base and variant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Embedded by server.models.tiny in the tiny test models (safetensors metadata key, .ckpt dict key): their
# architectures are the real ones in miniature, with widths no real model has.
_TINY_CONFIG_KEYS = ("imagegraph.diffusers_config", "imagegraph_diffusers_config")
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def embedded_config(metadata: dict[str, str]) -> str | None:
    return next((metadata[key] for key in _TINY_CONFIG_KEYS if key in metadata), None)


def embedded_prediction_type(metadata: dict[str, str]) -> str | None:
    text = embedded_config(metadata)
    if text is None:
        return None
    try:
        scheduler = json.loads(text).get("scheduler")
    except (ValueError, AttributeError):
        return None
    prediction = scheduler.get("prediction_type") if isinstance(scheduler, dict) else None
    return prediction if prediction in _PREDICTION_TYPES else None


def guess_sd2_prediction(path: Path, extra: dict[str, Any]) -> str:
    # The two official SD-2 checkpoints record their training step; 512-base is epsilon, 768-v is v.
    step = extra.get("global_step")
    if step == 875000 or step == 220000:
        return "epsilon"
    if step == 110000 or step == 140000:
        return "v_prediction"
    name = path.stem.lower()
    if "base" in name or "512" in name:
        return "epsilon"
    # Most SD-2.x checkpoints people use are the 768 px v-prediction ones; import can override.
    return "v_prediction"


def default_legacy_config(base: str, variant: str, prediction: str | None) -> str | None:
    if base == "sd-1":
        return {
            "normal": "stable-diffusion/v1-inference.yaml",
            "inpaint": "stable-diffusion/v1-inpainting-inference.yaml",
        }.get(variant)
    if base == "sd-2":
        if variant == "inpaint":
            return "stable-diffusion/v2-inpainting-inference.yaml"
        if variant == "normal":
            return (
                "stable-diffusion/v2-inference-v.yaml"
                if prediction == "v_prediction"
                else "stable-diffusion/v2-inference.yaml"
            )
        return None
    if base == "sdxl":
        return "stable-diffusion/sd_xl_base.yaml"
    return "stable-diffusion/sd_xl_refiner.yaml"


def has_sibling_yaml(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".yaml").is_file()
