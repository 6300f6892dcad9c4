"""What a diffusers folder is: a Stable Diffusion pipeline (`model_index.json`), a VAE or ControlNet component
(`config.json` and its `_class_name`), or a LoRA / embedding saved by diffusers' training scripts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from server.models import state_dict_shapes
from server.models.file_kinds import BASE_BY_CONTEXT, VARIANT_BY_IN_CHANNELS, embedding_base, lora
from server.models.probe_result import Incomplete, NotAModel, ProbeResult, Unreadable


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise Incomplete(f"{path.parent.name}/{path.name} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unreadable(f"{path.parent.name}/{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotAModel(f"{path.parent.name}/{path.name} is not a JSON object")
    return data


def classify(path: Path, hint_base: str | None, hint_type: str | None) -> ProbeResult:
    if (path / "model_index.json").is_file():
        return _pipeline_folder(path, hint_base)
    if (path / "config.json").is_file():
        return _component_folder(path, hint_base)
    for name in ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"):
        if (path / name).is_file():
            shapes, _, _ = state_dict_shapes.read(path / name)
            return lora(path, shapes, hint_base, "diffusers")
    for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
        if (path / name).is_file():
            shapes, _, _ = state_dict_shapes.read(path / name)
            base = embedding_base(shapes) or hint_base or "sd-1"
            return ProbeResult(base_model=base, model_type="embedding", model_format="embedding_folder")
    raise NotAModel(f"{path.name} is a folder without model_index.json or config.json; not a diffusers model")


def _pipeline_folder(path: Path, hint_base: str | None) -> ProbeResult:
    index = _read_json(path / "model_index.json")
    class_name = str(index.get("_class_name", ""))
    if not class_name.startswith("StableDiffusion"):
        raise NotAModel(
            f"{path.name} is a {class_name or 'unnamed'} pipeline; only Stable Diffusion pipelines are supported"
        )
    # Every component the index names must be there with its config, or the folder is still being copied.
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[:1] in ([None], []):
            continue
        folder = path / component
        if not folder.is_dir() or not any((folder / f).is_file() for f in _COMPONENT_CONFIGS):
            raise Incomplete(f"{path.name}: component {component}/ is missing or has no config")
    unet = _read_json(path / "unet" / "config.json") if (path / "unet").is_dir() else {}
    if "XL" in class_name:
        base = (
            "sdxl-refiner"
            if "text_encoder" not in index or index.get("text_encoder") in ([None, None], None)
            else "sdxl"
        )
    else:
        base = BASE_BY_CONTEXT.get(unet.get("cross_attention_dim") or 0) or hint_base or _sd_by_projection(unet)
        if base in ("sdxl", "sdxl-refiner"):
            base = hint_base or "sd-1"
    variant = VARIANT_BY_IN_CHANNELS.get(unet.get("in_channels", 4), "normal")
    if "Depth2Img" in class_name:
        variant = "depth"
    scheduler_file = path / "scheduler" / "scheduler_config.json"
    scheduler = _read_json(scheduler_file) if scheduler_file.is_file() else {}
    prediction = scheduler.get("prediction_type") or "epsilon"
    if prediction not in ("epsilon", "v_prediction", "sample"):
        prediction = "epsilon"
    return ProbeResult(
        base_model=base, model_type="main", model_format="diffusers", variant=variant, prediction_type=prediction
    )


def _sd_by_projection(unet: dict[str, Any]) -> str:
    # Not a stock width (the tiny test models are 32 wide): SD-2's UNets have linear transformer projections
    # (`use_linear_projection`), SD-1's have 1x1 convs.
    return "sd-2" if unet.get("use_linear_projection") is True else "sd-1"


_COMPONENT_CONFIGS = (
    "config.json",
    "scheduler_config.json",
    "tokenizer_config.json",
    "preprocessor_config.json",
    "vocab.json",
)


def _component_folder(path: Path, hint_base: str | None) -> ProbeResult:
    config = _read_json(path / "config.json")
    class_name = config.get("_class_name")
    if class_name == "AutoencoderKL":
        sdxl = config.get("scaling_factor") == 0.13025
        return ProbeResult(
            base_model=hint_base or ("sdxl" if sdxl else "sd-1"), model_type="vae", model_format="diffusers"
        )
    if class_name == "ControlNetModel":
        sdxl = config.get("addition_embed_type") == "text_time"
        base = BASE_BY_CONTEXT.get(config.get("cross_attention_dim") or 0) or hint_base or ("sdxl" if sdxl else "sd-1")
        return ProbeResult(base_model=base, model_type="controlnet", model_format="diffusers")
    raise NotAModel(
        f"{path.name} holds a {class_name or 'unknown'} component, not a model the server can use on its own"
    )
