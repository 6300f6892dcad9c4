"""What a single weights file is, from its tensor names and shapes alone: a main checkpoint (base, variant,
prediction), ControlNet, LoRA / LyCORIS, VAE, textual-inversion embedding or upscaler."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from server.models.checkpoint_config import (
    default_legacy_config,
    embedded_config,
    embedded_prediction_type,
    guess_sd2_prediction,
    has_sibling_yaml,
)
from server.models.probe_result import NotAModel, ProbeResult

# Context (cross-attention) width of each base's text conditioning.
BASE_BY_CONTEXT = {768: "sd-1", 1024: "sd-2", 2048: "sdxl", 1280: "sdxl-refiner"}
BASE_BY_TEXT_WIDTH = {768: "sd-1", 1024: "sd-2", 1280: "sdxl"}
VARIANT_BY_IN_CHANNELS = {4: "normal", 9: "inpaint", 5: "depth"}


def _context_width(shapes: dict[str, tuple[int, ...]], prefix: str) -> int | None:
    """Width of the text conditioning a UNet cross-attends to: in-features of any attn2.to_k."""
    for name, shape in shapes.items():
        if name.startswith(prefix) and name.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def classify(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    metadata: dict[str, str],
    extra: dict[str, Any],
    hint_base: str | None,
    hint_type: str | None,
) -> ProbeResult:
    if not shapes:
        raise NotAModel(f"{path.name} holds no tensors")
    if hint_type == "upscale":
        return _upscaler(path, shapes)
    if "controlnet_cond_embedding.conv_in.weight" in shapes or any(
        k.startswith(("control_model.", "input_hint_block.")) for k in shapes
    ):
        return _controlnet_file(path, shapes, hint_base)
    if "model.diffusion_model.input_blocks.0.0.weight" in shapes:
        return _main_file(path, shapes, metadata, extra, hint_base)
    if _is_lora(shapes):
        return lora(path, shapes, hint_base, "lycoris")
    if _is_vae(shapes):
        return ProbeResult(
            base_model=hint_base or ("sdxl" if "xl" in path.stem.lower() else "sd-1"),
            model_type="vae",
            model_format="checkpoint",
        )
    if _is_embedding(shapes) or (hint_type == "embedding" and len(shapes) <= 2):
        return ProbeResult(
            base_model=embedding_base(shapes) or hint_base or "sd-1",
            model_type="embedding",
            model_format="embedding_file",
        )
    try:
        return _upscaler(path, shapes)
    except NotAModel:
        pass
    raise NotAModel(
        f"{path.name} is not a model we recognise (no UNet, VAE, LoRA, ControlNet, embedding or upscaler tensors)"
    )


def _upscaler(path: Path, shapes: dict[str, tuple[int, ...]]) -> ProbeResult:
    from server.models.upscalers import NotAnUpscaler, describe

    try:
        describe(shapes)
    except NotAnUpscaler as exc:
        raise NotAModel(f"{path.name} is not an upscaler we can use: {exc}") from None
    return ProbeResult(base_model="any", model_type="upscale", model_format="checkpoint")


def _main_file(
    path: Path,
    shapes: dict[str, tuple[int, ...]],
    metadata: dict[str, str],
    extra: dict[str, Any],
    hint_base: str | None,
) -> ProbeResult:
    base = BASE_BY_CONTEXT.get(_context_width(shapes, "model.diffusion_model.") or 0)
    if base is None:
        # Not a stock width (the tiny test model is 32 wide): tell by the text encoder's layout.
        if any(k.startswith("conditioner.embedders.1.") for k in shapes):
            base = "sdxl"
        elif any(k.startswith("conditioner.embedders.0.model.") for k in shapes):
            base = "sdxl-refiner"
        elif any(k.startswith("cond_stage_model.model.") for k in shapes):
            base = "sd-2"
        elif any(k.startswith("cond_stage_model.transformer.") for k in shapes) or embedded_config(metadata):
            base = "sd-1"
        else:
            base = hint_base or "sd-1"
    in_channels = shapes["model.diffusion_model.input_blocks.0.0.weight"][1]
    variant = VARIANT_BY_IN_CHANNELS.get(in_channels)
    if variant is None:
        raise NotAModel(f"{path.name}: a UNet with {in_channels} input channels is not one we can run")
    prediction = "epsilon"
    if base == "sd-2":
        prediction = guess_sd2_prediction(path, extra)
    # A tiny model's own scheduler config says what it predicts; no guess from names needed.
    prediction = embedded_prediction_type(metadata) or prediction
    result = ProbeResult(
        base_model=base,
        model_type="main",
        model_format="checkpoint",
        variant=variant,
        prediction_type=prediction,
        config=default_legacy_config(base, variant, prediction),
    )
    if has_sibling_yaml(path):
        # A yaml beside the checkpoint (`model.safetensors` + `model.yaml`) is its own config, as in A1111.
        result.config = str(path.with_suffix(".yaml"))
    return result


def _controlnet_file(path: Path, shapes: dict[str, tuple[int, ...]], hint_base: str | None) -> ProbeResult:
    width = _context_width(shapes, "control_model.") or _context_width(shapes, "")
    # SDXL's ControlNets embed the pooled text and size ids as SDXL's UNet does.
    sdxl = any(k.startswith(("add_embedding.", "control_model.label_emb.")) for k in shapes)
    base = BASE_BY_CONTEXT.get(width or 0) or hint_base or ("sdxl" if sdxl else "sd-1")
    return ProbeResult(base_model=base, model_type="controlnet", model_format="checkpoint")


_LORA_MARKERS = ("lora_down", "lora_up", "lora.down", "lora.up", "lora_A", "lora_B", "hada_w", "lokr_w")


def _is_lora(shapes: dict[str, tuple[int, ...]]) -> bool:
    return any(marker in name for name in shapes for marker in _LORA_MARKERS)


def lora(path: Path, shapes: dict[str, tuple[int, ...]], hint_base: str | None, fmt: str) -> ProbeResult:
    names = list(shapes)
    base: str | None = None
    if any(n.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for n in names):
        base = "sdxl"
    if base is None:
        for name in names:
            # The cross-attention key's input is the text width: a LoRA's down (A) matrix, a LoHa's w*_b factors.
            down = re.search(r"lora[_.](down|A)|hada_w[12]_b$", name)
            if "attn2" in name and "to_k" in name and down and len(shapes[name]) == 2:
                base = BASE_BY_CONTEXT.get(shapes[name][1])
                break
    if base is None:
        for name in names:
            if re.search(r"(lora_te_|text_encoder\.).*(mlp_fc1|mlp\.fc1).*lora[_.](down|A)", name):
                base = BASE_BY_TEXT_WIDTH.get(shapes[name][-1])
                break
    return ProbeResult(base_model=base or hint_base or "sd-1", model_type="lora", model_format=fmt)


def _is_vae(shapes: dict[str, tuple[int, ...]]) -> bool:
    for prefix in ("", "first_stage_model.", "vae."):
        if f"{prefix}encoder.conv_in.weight" in shapes and f"{prefix}decoder.conv_in.weight" in shapes:
            return not any(k.startswith("model.diffusion_model.") for k in shapes)
    return False


def _is_embedding(shapes: dict[str, tuple[int, ...]]) -> bool:
    """A1111's `emb_params` / `string_to_param`, SDXL's `clip_l` + `clip_g`, or one vector or n × width tensor."""
    if "clip_g" in shapes and "clip_l" in shapes:
        return True
    if "emb_params" in shapes or any(name.startswith("string_to_param.") for name in shapes):
        return True
    if len(shapes) != 1:
        return False
    # diffusers' learned_embeds: one tensor under the token it was trained for (`<cat-toy>`), or of a known width.
    ((name, shape),) = shapes.items()
    return len(shape) in (1, 2) and ((name.startswith("<") and name.endswith(">")) or shape[-1] in BASE_BY_TEXT_WIDTH)


def embedding_base(shapes: dict[str, tuple[int, ...]]) -> str | None:
    if "clip_g" in shapes and "clip_l" in shapes:
        return "sdxl"
    candidates = [
        shape
        for name, shape in shapes.items()
        if name == "emb_params" or name.startswith("string_to_param.") or (len(shapes) == 1 and len(shape) in (1, 2))
    ]
    if len(candidates) != 1:
        return None
    return BASE_BY_TEXT_WIDTH.get(candidates[0][-1]) if candidates[0] else None
