"""png-info (the infotext in an image, ours, ComfyUI's or A1111's) and the extras upscaling of one image or
several."""

from __future__ import annotations

import asyncio
import base64
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from server.http.a1111 import schema as s
from server.http.a1111 import translate
from server.http.a1111.images import decode_image, encode_png, image_bytes, upload_image
from server.http.a1111.jobs import JobFailed
from server.http.a1111.state import TAGS, catalogue_of, problem, state_of
from server.http.errors import ApiError
from server.http.io import json_response, operation
from server.http.state import services
from server.images.foreign import parse_a1111
from server.images.upload import UploadRejected, decode_upload

if TYPE_CHECKING:
    from PIL import Image


@operation(
    "The generation parameters in an image, as A1111 infotext",
    tags=TAGS,
    body=s.PngInfoRequest,
    responses={200: s.PngInfoResponse, 413: None, 415: None, 422: None},
)
async def png_info(request: Request, *, body: s.PngInfoRequest) -> Response:
    if not body.image:
        raise problem("image", "`image` is required (base64)")
    try:
        decoded = await asyncio.to_thread(decode_upload, image_bytes(body.image, "image"))
    except UploadRejected as exc:
        raise problem("image", f"`image`: {exc.detail}", 415) from None
    chunks = decoded.metadata.chunks
    text = chunks.get("parameters") or _infotext_of(decoded.metadata.metadata)
    items = {key: value for key, value in chunks.items() if key != "parameters"}
    return json_response(s.PngInfoResponse(info=text, items=items, parameters=_parameters_of(text)))


# ComfyUI's sampler and scheduler names (KSampler's `sampler_name`, `scheduler`) → A1111's.
COMFYUI_SAMPLERS = {
    "euler": "Euler",
    "euler_ancestral": "Euler a",
    "heun": "Heun",
    "dpm_2": "DPM2",
    "dpm_2_ancestral": "DPM2 a",
    "lms": "LMS",
    "dpm_fast": "DPM fast",
    "dpm_adaptive": "DPM adaptive",
    "dpmpp_2s_ancestral": "DPM++ 2S a",
    "dpmpp_sde": "DPM++ SDE",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_sde": "DPM++ 2M SDE",
    "dpmpp_3m_sde": "DPM++ 3M SDE",
    "ddim": "DDIM",
    "ddpm": "DDPM",
    "uni_pc": "UniPC",
    "lcm": "LCM",
}
COMFYUI_SCHEDULERS = {
    "normal": "Normal",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
    "simple": "Simple",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "kl_optimal": "KL Optimal",
}


def _file_stem(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, suffix = base.rpartition(".")
    return stem if dot and suffix.lower() in ("safetensors", "ckpt", "pt", "bin", "pth", "gguf", "sft") else base


def _infotext_of(metadata: str | None) -> str:
    """A1111 infotext from our (InvokeAI's) or ComfyUI's metadata, as parsed on upload (for ComfyUI:
    server/images/foreign.py reads its `prompt` graph: the KSampler, its prompts, latent size and checkpoint)."""
    if not metadata:
        return ""
    try:
        fields = msgspec.json.decode(metadata)
    except msgspec.DecodeError:
        return ""
    if not isinstance(fields, dict):
        return ""
    if isinstance(fields.get("parameters"), str):
        return fields["parameters"]
    model = fields.get("model")
    model = model.get("model_name") if isinstance(model, dict) else model
    strength = fields.get("strength")
    if fields.get("format") == "comfyui":
        sampler = str(fields.get("sampler") or "")
        schedule = str(fields.get("scheduler") or "")
        sampler_name: Any = COMFYUI_SAMPLERS.get(sampler, sampler or None)
        schedule_type: Any = COMFYUI_SCHEDULERS.get(schedule, schedule or None)
        if isinstance(model, str):
            model = _file_stem(model)  # A1111 names a checkpoint without its folder and extension
        if isinstance(strength, (int, float)) and strength >= 1:
            strength = None  # a full denoise is text to image: A1111 writes no strength for it
    else:
        names = {ours: theirs for theirs, ours in translate.SAMPLERS.items()}
        scheduler = str(fields.get("scheduler") or "")
        sampler_name = names.get(scheduler, scheduler or None) if scheduler != "dpmpp_2m_k" else "DPM++ 2M"
        schedule_type = "Karras" if scheduler == "dpmpp_2m_k" else None
    pairs = [
        ("Steps", fields.get("steps")),
        ("Sampler", sampler_name),
        ("Schedule type", schedule_type),
        ("CFG scale", fields.get("cfg_scale")),
        ("Seed", fields.get("seed")),
        ("Size", f"{fields['width']}x{fields['height']}" if fields.get("width") and fields.get("height") else None),
        ("Model", model),
        ("Denoising strength", strength),
    ]
    lines = [str(fields.get("positive_prompt") or "")]
    if fields.get("negative_prompt"):
        lines.append(f"Negative prompt: {fields['negative_prompt']}")
    lines.append(", ".join(f"{key}: {value}" for key, value in pairs if value is not None))
    return "\n".join(lines)


def _parameters_of(text: str) -> dict[str, Any]:
    if not text:
        return {}
    parsed = parse_a1111(text)
    result: dict[str, Any] = {
        "Prompt": parsed.get("positive_prompt", ""),
        "Negative prompt": parsed.get("negative_prompt", ""),
    }
    for pair in text.strip().split("\n")[-1].split(", "):
        key, sep, value = pair.partition(": ")
        if sep:
            result[key.strip()] = value.strip()
    return result


async def _upscaled(request: Request, body: s.ExtrasImageRequest, image: Image.Image) -> Image.Image:
    """One image through `upscaler_1` to the requested size: Lanczos/Nearest in pixels, a registered model
    through the queue (`esrgan`, then a Lanczos resize to the size asked)."""
    image = image.convert("RGB")
    if body.resize_mode == 1:
        width, height = body.upscaling_resize_w, body.upscaling_resize_h
    else:
        width, height = round(image.width * body.upscaling_resize), round(image.height * body.upscaling_resize)
    if width < 1 or height < 1:
        raise problem("upscaling_resize", "the upscaled size must be at least 1×1")
    name = body.upscaler_1
    if name == "None":
        return image
    if name in ("Lanczos", "Nearest"):
        from PIL import Image, ImageOps

        resample = Image.Resampling.LANCZOS if name == "Lanczos" else Image.Resampling.NEAREST
        if body.resize_mode == 1 and body.upscaling_crop:
            return await asyncio.to_thread(ImageOps.fit, image, (width, height), resample)
        return await asyncio.to_thread(image.resize, (width, height), resample)
    catalogue = await catalogue_of(request)
    try:
        model = translate.find_model(catalogue.upscalers, name, "upscaler_1", "upscaler")
    except translate.RequestProblem as exc:
        raise problem(exc.field, str(exc)) from None
    svc = services(request)
    source = await upload_image(svc, image)
    graph = {
        "nodes": {
            "source": {"id": "source", "type": "image", "image": {"image_name": source}},
            "upscale": {
                "id": "upscale",
                "type": "esrgan",
                "model": msgspec.to_builtins(model.identifier),
                "is_intermediate": True,
            },
            "resize": {
                "id": "resize",
                "type": "img_resize",
                "width": width,
                "height": height,
                "resample_mode": "lanczos",
            },
        },
        "edges": [
            {
                "source": {"node_id": "source", "field": "image"},
                "destination": {"node_id": "upscale", "field": "image"},
            },
            {
                "source": {"node_id": "upscale", "field": "image"},
                "destination": {"node_id": "resize", "field": "image"},
            },
        ],
    }
    try:
        result = await state_of(request).jobs.run([graph], ("resize",))
    except JobFailed as exc:
        raise ApiError(422, f"the upscale failed: {exc}") from None
    if result.image_names[0] is None:
        raise ApiError(409, "the upscale was interrupted")
    return await svc.images.open_image(result.image_names[0])


@operation(
    "Upscale one image (Lanczos, Nearest or a registered upscale model)",
    tags=TAGS,
    body=s.ExtrasImageRequest,
    responses={200: s.ExtrasImageResponse, 413: None, 415: None, 422: None},
)
async def extra_single_image(request: Request, *, body: s.ExtrasImageRequest) -> Response:
    if not body.image:
        raise problem("image", "`image` is required (base64)")
    result = await _upscaled(request, body, decode_image(body.image, "image"))
    encoded = base64.b64encode(await asyncio.to_thread(encode_png, result)).decode()
    return json_response(
        s.ExtrasImageResponse(image=encoded, html_info=f"{body.upscaler_1}: {result.width}×{result.height}")
    )


@operation(
    "Upscale several images",
    tags=TAGS,
    body=s.ExtrasBatchRequest,
    responses={200: s.ExtrasBatchResponse, 413: None, 415: None, 422: None},
)
async def extra_batch_images(request: Request, *, body: s.ExtrasBatchRequest) -> Response:
    if not body.imageList:
        raise problem("imageList", "`imageList` needs at least one image")
    images = [decode_image(item.data, f"imageList.{index}.data") for index, item in enumerate(body.imageList)]
    out = []
    for image in images:
        result = await _upscaled(request, body, image)
        out.append(base64.b64encode(await asyncio.to_thread(encode_png, result)).decode())
    return json_response(
        s.ExtrasBatchResponse(images=out, html_info=f"{len(out)} image(s) upscaled with {body.upscaler_1}")
    )
