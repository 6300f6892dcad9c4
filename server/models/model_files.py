"""Which names are model files, and which files make a folder a model folder: what the scanner looks for and
what the probe accepts."""

from __future__ import annotations

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


def is_model_file(name: str) -> bool:
    return name.lower().endswith(MODEL_SUFFIXES) and not name.startswith(".")
