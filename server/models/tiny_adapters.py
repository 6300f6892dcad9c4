"""Tiny random-weight adapters for the tiny models (server/models/tiny.py): LoRAs in every layout people
download, textual-inversion embeddings, a second VAE. Tests and demos use them; every code path that reads
them is the real one.

The layer names come from building the tiny architectures themselves (no weights are read), so an adapter
fits any tiny model of that base."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from server.models.libraries import quiet_ml_libraries

LoraFormat = Literal["kohya", "peft", "loha", "lokr"]
EmbeddingFormat = Literal["safetensors", "pt", "diffusers"]
# The projections a LoRA trained with kohya's defaults adapts: attention in the UNet and the text encoder.
_UNET_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
_TEXT_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


def _tiny_modules(base: str = "sd-1") -> dict[str, Any]:
    """The tiny model's UNet and text encoder(s) of `base` (random weights; only layer names and sizes are
    used), by the part name a LoRA file gives them."""
    import tempfile

    from server.models.tiny import write_tiny_model

    quiet_ml_libraries()
    if base == "sdxl":
        from server.models.tiny_sdxl import build_pipeline

        pipe = build_pipeline("sdxl")
        return {"unet": pipe.unet, "text_encoder": pipe.text_encoder, "text_encoder_2": pipe.text_encoder_2}
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_model(Path(tmp) / "tiny")
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
        text_encoder = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")
    return {"unet": unet, "text_encoder": text_encoder}


# How kohya-style files prefix each part's layers (SD-1: `lora_te_`; SDXL: `lora_te1_`, `lora_te2_`).
_KOHYA_PREFIX = {
    ("sd-1", "unet"): "lora_unet_",
    ("sd-1", "text_encoder"): "lora_te_text_model_",
    ("sdxl", "unet"): "lora_unet_",
    ("sdxl", "text_encoder"): "lora_te1_text_model_",
    ("sdxl", "text_encoder_2"): "lora_te2_text_model_",
}


def _targets(model: Any, suffixes: tuple[str, ...]) -> list[tuple[str, Any]]:
    return [(name, module) for name, module in model.named_modules() if name.endswith(suffixes)]


def write_tiny_lora(
    out: Path,
    fmt: LoraFormat = "kohya",
    *,
    base: str = "sd-1",
    seed: int = 0,
    rank: int = 4,
    scale: float = 0.3,
    text_encoder: bool = True,
) -> Path:
    """A LoRA for every attention projection of the tiny UNet (and text encoders) of `base` (sd-1 or sdxl), as
    one `.safetensors` file (`peft`: a diffusers LoRA folder holding `pytorch_lora_weights.safetensors`)."""
    import torch
    from safetensors.torch import save_file

    modules = _tiny_modules(base)
    generator = torch.Generator().manual_seed(seed)

    def random(*shape: int) -> Any:
        return torch.randn(*shape, generator=generator) * scale

    tensors: dict[str, Any] = {}
    parts = [
        (part, _KOHYA_PREFIX[(base, part)], model, _UNET_TARGETS if part == "unet" else _TEXT_TARGETS)
        for part, model in modules.items()
        if text_encoder or part == "unet"
    ]
    for part, kohya_prefix, model, suffixes in parts:
        for name, module in _targets(model, suffixes):
            n_in, n_out = module.in_features, module.out_features
            if fmt == "peft":
                tensors[f"{part}.{name}.lora_A.weight"] = random(rank, n_in)
                tensors[f"{part}.{name}.lora_B.weight"] = random(n_out, rank)
                continue
            # kohya names text-encoder layers from `text_model`, whether or not the module has that level.
            key = kohya_prefix + name.removeprefix("text_model.").replace(".", "_")
            if fmt == "kohya":
                tensors[f"{key}.lora_down.weight"] = random(rank, n_in)
                tensors[f"{key}.lora_up.weight"] = random(n_out, rank)
            elif fmt == "loha":
                tensors[f"{key}.hada_w1_a"] = random(n_out, rank)
                tensors[f"{key}.hada_w1_b"] = random(rank, n_in)
                tensors[f"{key}.hada_w2_a"] = random(n_out, rank)
                tensors[f"{key}.hada_w2_b"] = random(rank, n_in)
            else:  # lokr: the Kronecker product of two full factors, split as LyCORIS splits the dimensions
                from peft.tuners.lokr.layer import factorization

                (out_l, out_k), (in_m, in_n) = factorization(n_out), factorization(n_in)
                tensors[f"{key}.lokr_w1"] = random(out_l, in_m)
                tensors[f"{key}.lokr_w2"] = random(out_k, in_n)
            tensors[f"{key}.alpha"] = torch.tensor(float(rank) / 2)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "peft":
        out.mkdir()
        save_file(tensors, str(out / "pytorch_lora_weights.safetensors"))
    else:
        save_file(tensors, str(out))
    return out


def write_tiny_embedding(
    out: Path,
    fmt: EmbeddingFormat = "safetensors",
    *,
    vectors: int = 2,
    width: int = 32,
    seed: int = 0,
    sdxl: bool = False,
) -> Path:
    """A textual-inversion embedding of `vectors` vectors for the tiny text encoder (width 32): A1111's
    `.safetensors` (`emb_params`; with `sdxl`, SDXL's `clip_l` and `clip_g`) or `.pt` (`string_to_param`), or a
    diffusers `learned_embeds` folder."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(vectors, width, generator=generator)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if sdxl:
        save_file({"clip_l": values, "clip_g": torch.randn(vectors, width, generator=generator)}, str(out))
    elif fmt == "safetensors":
        save_file({"emb_params": values}, str(out))
    elif fmt == "pt":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": values}, "name": out.stem, "step": 1}, out)
    else:
        out.mkdir()
        save_file({f"<{out.name}>": values}, str(out / "learned_embeds.safetensors"))
    return out


def write_tiny_vae(out: Path, *, seed: int = 1) -> Path:
    """The tiny VAE's architecture with other random weights, as a diffusers folder (`config.json` + weights)."""
    import tempfile

    from server.models.tiny import write_tiny_model

    quiet_ml_libraries()
    from diffusers import AutoencoderKL

    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_model(Path(tmp) / "tiny", seed=seed)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae")
    out = Path(out)
    vae.save_pretrained(out)
    for path in [out, *out.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return out
