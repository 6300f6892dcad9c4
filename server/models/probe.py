"""What a model file or folder is, without loading its weights.

Diffusers folders are recognised by `model_index.json` / `config.json` and their `_class_name`; single
files by their tensor names and shapes: the safetensors header, or for `.ckpt/.pt/.pth/.bin` a
`torch.load(weights_only=True, mmap=True)` that maps the tensors instead of reading them and refuses any
pickle that would run code."""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import msgspec

from server.models import safetensors_io

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# Files in a folder that make it a model folder (searched for, never descended into).
FOLDER_MARKERS = frozenset(
    {
        "model_index.json",
        "config.json",
        "learned_embeds.bin",
        "learned_embeds.safetensors",
        "pytorch_lora_weights.bin",
        "pytorch_lora_weights.safetensors",
    }
)

# Context (cross-attention) width of each base's text conditioning.
_BASE_BY_CONTEXT = {768: "sd-1", 1024: "sd-2", 2048: "sdxl", 1280: "sdxl-refiner"}
_BASE_BY_TEXT_WIDTH = {768: "sd-1", 1024: "sd-2", 1280: "sdxl"}
_VARIANT_BY_IN_CHANNELS = {4: "normal", 9: "inpaint", 5: "depth"}

# Embedded by server.models.tiny in the tiny test models (safetensors metadata key, .ckpt dict key): their
# architectures are the real ones in miniature, with widths no real model has.
_TINY_CONFIG_KEYS = ("imagegraph.diffusers_config", "imagegraph_diffusers_config")
_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


class NotAModel(Exception):
    """The file or folder is readable but is not a model we recognise (HTTP 415)."""


class UnsafeFile(NotAModel):
    """A pickle that would run code when loaded: refused, never unpickled."""


class Unreadable(NotAModel):
    """Could not be read as the format it claims; it may be incomplete (still being written)."""


class Incomplete(Unreadable):
    """Certainly incomplete: shorter than its own header says, or a folder missing parts."""


class ProbeResult(msgspec.Struct, kw_only=True):
    base_model: str
    model_type: str
    model_format: str
    variant: str = "normal"
    prediction_type: str | None = None
    # Legacy yaml for checkpoints: a name relative to the shipped configs folder, or an absolute path.
    config: str | None = None


def is_model_file(name: str) -> bool:
    return name.lower().endswith(MODEL_SUFFIXES) and not name.startswith(".")


def probe(
    path: Path,
    *,
    hint_base: str | None = None,
    hint_type: str | None = None,
    prediction_type: str | None = None,
) -> ProbeResult:
    """Recognise `path`. `hint_base`/`hint_type` come from the folder it sits in (`models/<base>/<type>/`,
    `autoimport/<type>/`) and settle what the weights cannot tell (e.g. a VAE's base).
    Raises NotAModel (or a subclass) with a sentence saying why."""
    if path.is_dir():
        result = _probe_folder(path, hint_base, hint_type)
    elif path.is_file():
        if not path.name.lower().endswith(MODEL_SUFFIXES):
            raise NotAModel(f"{path.name} is not a model file (expected one of {', '.join(MODEL_SUFFIXES)})")
        shapes, metadata, extra = _read_single_file(path)
        result = _classify_single_file(path, shapes, metadata, extra, hint_base, hint_type)
    else:
        raise NotAModel(f"{path} is neither a file nor a folder")
    if prediction_type is not None and result.model_type == "main":
        result.prediction_type = prediction_type
        if result.model_format == "checkpoint" and not _has_sibling_yaml(path):
            result.config = _default_legacy_config(result.base_model, result.variant, prediction_type)
    return result


# ---------------------------------------------------------------------------------------------------
# Single files


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a single weights file, without reading the weights. NotAModel if unreadable."""
    shapes, _, _ = _read_single_file(path)
    return shapes


def _read_single_file(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, Any]]:
    """Tensor name -> shape, string metadata, and other top-level values (e.g. `global_step`)."""
    if path.name.lower().endswith(".safetensors"):
        try:
            header = safetensors_io.read_header(path)
        except safetensors_io.IncompleteFile as exc:
            raise Incomplete(str(exc)) from None
        except safetensors_io.HeaderError as exc:
            raise NotAModel(str(exc)) from None
        return {name: info.shape for name, info in header.tensors.items()}, header.metadata, {}
    return _read_pickle(path)


def _read_pickle(path: Path) -> tuple[dict[str, tuple[int, ...]], dict[str, str], dict[str, Any]]:
    import pickle

    import torch

    if path.stat().st_size == 0:
        raise Incomplete(f"{path.name} is empty")
    is_zip = zipfile.is_zipfile(path)
    try:
        # weights_only: an untrusted pickle must never run code; mmap maps tensors instead of reading
        # them (zip-format files only; the legacy format is small-file territory anyway).
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        # The weights-only unpickler names the global it refused to import ("Unsupported global: GLOBAL
        # pathlib.Path.touch", "...GLOBAL posix.system..."): the pickle wanted to call code.
        if "GLOBAL" in str(exc):
            raise UnsafeFile(
                f"{path.name} is a pickle that would run code when loaded, so it was refused; "
                "only files holding plain tensors are accepted (convert it to .safetensors with a tool you trust)"
            ) from None
        # torch's own first line advises loading with weights_only=False, which is not advice to pass on.
        reason = str(exc).partition("WeightsUnpickler error:")[2].strip().splitlines()
        raise Unreadable(
            f"{path.name} could not be read as a PyTorch file of plain tensors"
            + (f": {reason[0]}" if reason else "")
            + "; it was not unpickled any further"
        ) from None
    except Exception as exc:
        # Untrusted bytes can make the unpickler fail any way at all (IndexError on a text file, ...).
        raise Unreadable(f"{path.name} could not be read as a PyTorch file: {_first_line(exc)}") from None
    if not isinstance(data, dict):
        raise NotAModel(f"{path.name} holds a {type(data).__name__}, not a state dict")
    extra = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, int | float | str)}
    metadata = {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}
    state = data["state_dict"] if isinstance(data.get("state_dict"), dict) else data
    shapes: dict[str, tuple[int, ...]] = {}
    # Nested dicts are flattened one level down: A1111 embeddings keep theirs in string_to_param.<token>.
    _collect_shapes(state, "", shapes, torch.Tensor, depth=0)
    return shapes, metadata, extra


def _collect_shapes(tree: dict, prefix: str, out: dict[str, tuple[int, ...]], tensor_type: Any, depth: int) -> None:
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, tensor_type):
            out[name] = tuple(value.shape)
        elif isinstance(value, dict) and depth < 2:
            _collect_shapes(value, name + ".", out, tensor_type, depth + 1)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _context_width(shapes: dict[str, tuple[int, ...]], prefix: str) -> int | None:
    """Width of the text conditioning a UNet cross-attends to: in-features of any attn2.to_k."""
    for name, shape in shapes.items():
        if name.startswith(prefix) and name.endswith("attn2.to_k.weight") and len(shape) == 2:
            return shape[1]
    return None


def _classify_single_file(
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
        return _lora(path, shapes, hint_base, "lycoris")
    if _is_vae(shapes):
        return ProbeResult(
            base_model=hint_base or ("sdxl" if "xl" in path.stem.lower() else "sd-1"),
            model_type="vae",
            model_format="checkpoint",
        )
    if _is_embedding(shapes) or (hint_type == "embedding" and len(shapes) <= 2):
        return ProbeResult(
            base_model=_embedding_base(shapes) or hint_base or "sd-1",
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
    base = _BASE_BY_CONTEXT.get(_context_width(shapes, "model.diffusion_model.") or 0)
    if base is None:
        # Not a stock width (the tiny test model is 32 wide): tell by the text encoder's layout.
        if any(k.startswith("conditioner.embedders.1.") for k in shapes):
            base = "sdxl"
        elif any(k.startswith("conditioner.embedders.0.model.") for k in shapes):
            base = "sdxl-refiner"
        elif any(k.startswith("cond_stage_model.model.") for k in shapes):
            base = "sd-2"
        elif any(k.startswith("cond_stage_model.transformer.") for k in shapes) or _embedded_config(metadata):
            base = "sd-1"
        else:
            base = hint_base or "sd-1"
    in_channels = shapes["model.diffusion_model.input_blocks.0.0.weight"][1]
    variant = _VARIANT_BY_IN_CHANNELS.get(in_channels)
    if variant is None:
        raise NotAModel(f"{path.name}: a UNet with {in_channels} input channels is not one we can run")
    prediction = "epsilon"
    if base == "sd-2":
        prediction = _guess_sd2_prediction(path, extra)
    # A tiny model's own scheduler config says what it predicts; no guess from names needed.
    prediction = _embedded_prediction_type(metadata) or prediction
    result = ProbeResult(
        base_model=base,
        model_type="main",
        model_format="checkpoint",
        variant=variant,
        prediction_type=prediction,
        config=_default_legacy_config(base, variant, prediction),
    )
    if _has_sibling_yaml(path):
        # A yaml beside the checkpoint (`model.safetensors` + `model.yaml`) is its own config, as in A1111.
        result.config = str(path.with_suffix(".yaml"))
    return result


def _embedded_config(metadata: dict[str, str]) -> str | None:
    return next((metadata[key] for key in _TINY_CONFIG_KEYS if key in metadata), None)


def _embedded_prediction_type(metadata: dict[str, str]) -> str | None:
    text = _embedded_config(metadata)
    if text is None:
        return None
    try:
        scheduler = json.loads(text).get("scheduler")
    except (ValueError, AttributeError):
        return None
    prediction = scheduler.get("prediction_type") if isinstance(scheduler, dict) else None
    return prediction if prediction in _PREDICTION_TYPES else None


def _guess_sd2_prediction(path: Path, extra: dict[str, Any]) -> str:
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


def _default_legacy_config(base: str, variant: str, prediction: str | None) -> str | None:
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


def _has_sibling_yaml(path: Path) -> bool:
    return path.is_file() and path.with_suffix(".yaml").is_file()


def _controlnet_file(path: Path, shapes: dict[str, tuple[int, ...]], hint_base: str | None) -> ProbeResult:
    width = _context_width(shapes, "control_model.") or _context_width(shapes, "")
    # SDXL's ControlNets embed the pooled text and size ids as SDXL's UNet does.
    sdxl = any(k.startswith(("add_embedding.", "control_model.label_emb.")) for k in shapes)
    base = _BASE_BY_CONTEXT.get(width or 0) or hint_base or ("sdxl" if sdxl else "sd-1")
    return ProbeResult(base_model=base, model_type="controlnet", model_format="checkpoint")


_LORA_MARKERS = ("lora_down", "lora_up", "lora.down", "lora.up", "lora_A", "lora_B", "hada_w", "lokr_w")


def _is_lora(shapes: dict[str, tuple[int, ...]]) -> bool:
    return any(marker in name for name in shapes for marker in _LORA_MARKERS)


def _lora(path: Path, shapes: dict[str, tuple[int, ...]], hint_base: str | None, fmt: str) -> ProbeResult:
    names = list(shapes)
    base: str | None = None
    if any(n.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for n in names):
        base = "sdxl"
    if base is None:
        for name in names:
            # The cross-attention key's input is the text width: a LoRA's down (A) matrix, a LoHa's w*_b factors.
            down = re.search(r"lora[_.](down|A)|hada_w[12]_b$", name)
            if "attn2" in name and "to_k" in name and down and len(shapes[name]) == 2:
                base = _BASE_BY_CONTEXT.get(shapes[name][1])
                break
    if base is None:
        for name in names:
            if re.search(r"(lora_te_|text_encoder\.).*(mlp_fc1|mlp\.fc1).*lora[_.](down|A)", name):
                base = _BASE_BY_TEXT_WIDTH.get(shapes[name][-1])
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
    return len(shape) in (1, 2) and ((name.startswith("<") and name.endswith(">")) or shape[-1] in _BASE_BY_TEXT_WIDTH)


def _embedding_base(shapes: dict[str, tuple[int, ...]]) -> str | None:
    if "clip_g" in shapes and "clip_l" in shapes:
        return "sdxl"
    candidates = [
        shape
        for name, shape in shapes.items()
        if name == "emb_params" or name.startswith("string_to_param.") or (len(shapes) == 1 and len(shape) in (1, 2))
    ]
    if len(candidates) != 1:
        return None
    return _BASE_BY_TEXT_WIDTH.get(candidates[0][-1]) if candidates[0] else None


# ---------------------------------------------------------------------------------------------------
# Folders


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


def _probe_folder(path: Path, hint_base: str | None, hint_type: str | None) -> ProbeResult:
    if (path / "model_index.json").is_file():
        return _pipeline_folder(path, hint_base)
    if (path / "config.json").is_file():
        return _component_folder(path, hint_base)
    for name in ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"):
        if (path / name).is_file():
            shapes, _, _ = _read_single_file(path / name)
            return _lora(path, shapes, hint_base, "diffusers")
    for name in ("learned_embeds.safetensors", "learned_embeds.bin"):
        if (path / name).is_file():
            shapes, _, _ = _read_single_file(path / name)
            base = _embedding_base(shapes) or hint_base or "sd-1"
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
        base = _BASE_BY_CONTEXT.get(unet.get("cross_attention_dim") or 0) or hint_base or _sd_by_projection(unet)
        if base in ("sdxl", "sdxl-refiner"):
            base = hint_base or "sd-1"
    variant = _VARIANT_BY_IN_CHANNELS.get(unet.get("in_channels", 4), "normal")
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
        base = _BASE_BY_CONTEXT.get(config.get("cross_attention_dim") or 0) or hint_base or ("sdxl" if sdxl else "sd-1")
        return ProbeResult(base_model=base, model_type="controlnet", model_format="diffusers")
    raise NotAModel(
        f"{path.name} holds a {class_name or 'unknown'} component, not a model the server can use on its own"
    )
