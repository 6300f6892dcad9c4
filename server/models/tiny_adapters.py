"""Tiny random-weight adapters and helpers for the tiny models (server/models/tiny.py): LoRAs in every layout
people download, textual-inversion embeddings, a second VAE, a ControlNet, an inpaint-variant model, an ESRGAN
upscaler. Tests and demos use them; every code path that reads them is the real one.

The layer names come from building the tiny architectures themselves (no weights are read), so an adapter
fits any tiny model of that base."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from server.models.libraries import quiet_ml_libraries

if TYPE_CHECKING:
    from server.models.tiny import TinyBase

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
        from server.models.tiny_sdxl import TEXT_WIDTH_2

        # The tiny SDXL's second encoder (OpenCLIP bigG's place) is wider than its first, as the real one is.
        save_file({"clip_l": values, "clip_g": torch.randn(vectors, TEXT_WIDTH_2, generator=generator)}, str(out))
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


def write_tiny_controlnet(
    out: Path,
    *,
    seed: int = 2,
    base: TinyBase = "sd-1",
    fmt: Literal["diffusers", "checkpoint", "diffusers_file"] = "diffusers",
) -> Path:
    """A ControlNet for the tiny UNet of `base` (sd-1, sd-2 or sdxl): a diffusers folder, or (`checkpoint`) one
    `.safetensors` file in lllyasviel's `control_model.` layout, or (`diffusers_file`) one file under diffusers'
    names, as SDXL ControlNets ship; the files embed their config (no stock config describes the tiny
    architecture). `ControlNetModel.from_unet` zero-initialises the convolutions that feed
    its residuals to the UNet, so a fresh one changes nothing: they get random weights."""
    import json
    import tempfile

    import torch
    from safetensors.torch import save_file

    from server.models.controlnets import EMBEDDED_CONFIG_KEY
    from server.models.ldm_layout import controlnet_to_ldm
    from server.models.tiny import write_tiny_model

    quiet_ml_libraries()
    from diffusers import ControlNetModel, UNet2DConditionModel

    with tempfile.TemporaryDirectory() as tmp:
        unet = UNet2DConditionModel.from_pretrained(write_tiny_model(Path(tmp) / "tiny", base=base), subfolder="unet")
    # from_unet initialises the hint encoder from the global generator: seeded, so a seed gives one file.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        controlnet = ControlNetModel.from_unet(unet)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        zeroed = [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]
        for module in zeroed:
            for parameter in module.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    out = Path(out)
    if fmt == "diffusers":
        controlnet.save_pretrained(out)
        for path in [out, *out.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        return out
    config = {k: v for k, v in dict(controlnet.config).items() if not k.startswith("_")}
    weights = controlnet_to_ldm(controlnet) if fmt == "checkpoint" else controlnet.state_dict()
    state = {k: v.contiguous() for k, v in weights.items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={EMBEDDED_CONFIG_KEY: json.dumps(config, sort_keys=True)})
    os.chmod(out, 0o644)
    return out


def write_tiny_inpaint_model(out: Path, *, seed: int = 0) -> Path:
    """The tiny SD-1 model with an inpaint-variant UNet: 9 input channels (latents, mask, masked image)."""
    import json
    import tempfile

    import torch

    from server.models.tiny import write_tiny_model

    quiet_ml_libraries()
    from diffusers import UNet2DConditionModel

    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
        folder = write_tiny_model(Path(tmp) / "tiny", seed=seed)
        config = json.loads((folder / "unet" / "config.json").read_text())
        config["in_channels"] = 9
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            unet = UNet2DConditionModel.from_config(config)
        shutil.rmtree(folder / "unet")
        unet.save_pretrained(folder / "unet")
        for path in [folder, *folder.rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.rename(folder, out)
    return out


def write_tiny_upscaler(out: Path, *, scale: int = 2, seed: int = 3) -> Path:
    """A tiny ESRGAN (RRDBNet: 16 filters, one block) upscaling by `scale`, as a `.safetensors` state dict, the
    way upscaler files are shared."""
    import torch
    from safetensors.torch import save_file

    quiet_ml_libraries()
    from spandrel.architectures.ESRGAN import ESRGAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ESRGAN(in_nc=3, out_nc=3, num_filters=16, num_blocks=1, scale=scale)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(out))
    os.chmod(out, 0o644)
    return out
