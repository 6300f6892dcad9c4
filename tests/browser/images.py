"""Small images for the browser tests, with the metadata other tools write."""

from __future__ import annotations

import io
import json

import httpx
from PIL import Image, PngImagePlugin

A1111_PARAMETERS = (
    "a red fox in the snow, watercolor\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 64x96, Model: tiny"
)

COMFY_PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 777,
            "steps": 9,
            "cfg": 5.0,
            "sampler_name": "euler_ancestral",
            "scheduler": "normal",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
            "model": ["4", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 80, "height": 64, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a comfy cabin", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "people", "clip": ["4", 1]}},
}


def png_bytes(
    width: int = 64, height: int = 64, color: tuple[int, int, int] = (40, 120, 200), text: dict | None = None
) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value if isinstance(value, str) else json.dumps(value))
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def upload(api: httpx.Client, data: bytes, name: str = "upload.png", category: str = "user") -> dict:
    response = api.post(
        "/images/upload", params={"image_category": category}, files={"file": (name, data, "image/png")}
    )
    assert response.status_code == 201, response.text
    return response.json()
