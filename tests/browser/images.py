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


# An SDXL base + refiner graph as ComfyUI's examples build it: a LoRA on the base, the base sampling steps 0-20
# of 25 and the refiner the rest, clip skip 1 (`CLIPSetLastLayer` -2), the refiner's VAE decoding.
COMFY_SDXL_REFINER_PROMPT = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass greenhouse", "clip": ["13", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["13", 0]}},
    "10": {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "enable",
            "noise_seed": 4321,
            "steps": 25,
            "cfg": 8.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "start_at_step": 0,
            "end_at_step": 20,
            "return_with_leftover_noise": "enable",
            "model": ["14", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "11": {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "add_noise": "disable",
            "noise_seed": 0,
            "steps": 25,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "start_at_step": 20,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
            "model": ["12", 0],
            "positive": ["15", 0],
            "negative": ["16", 0],
            "latent_image": ["10", 0],
        },
    },
    "12": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_refiner_1.0.safetensors"}},
    "13": {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["14", 1]}},
    "14": {
        "class_type": "LoraLoader",
        "inputs": {
            "lora_name": "ink-sketch.safetensors",
            "strength_model": 0.6,
            "strength_clip": 0.6,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
    },
    "15": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass greenhouse", "clip": ["12", 1]}},
    "16": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["12", 1]}},
    "17": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["12", 2]}},
}
