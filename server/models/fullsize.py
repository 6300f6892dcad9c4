"""Random weights in the real SD-1.5 and SDXL architectures, from the diffusers configs the server ships:
benchmarks at real size without a download. Every code path and every tensor shape is a real model's; only the
values are random, so the images are noise.

Written in fp16 (as downloaded models are) as a diffusers folder, atomically (a watcher never sees half of
it). SD-1.5 is about 2 GB, SDXL about 7 GB; writing takes tens of seconds on a laptop CPU."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

from server.fileio import publish_folder

FullSizeBase = Literal["sd-1", "sdxl"]
FULL_SIZE_BASES: tuple[FullSizeBase, ...] = ("sd-1", "sdxl")


def write_full_size_model(out: Path, base: FullSizeBase = "sd-1", seed: int = 0) -> Path:
    """Write the folder `out` (which must not exist) and return it."""
    import torch
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from server.models.shipped import config_dir

    out = Path(out)
    if base not in FULL_SIZE_BASES:
        raise ValueError(f"unknown base {base!r}; one of {', '.join(FULL_SIZE_BASES)}")
    if out.exists():
        raise FileExistsError(out)
    with publish_folder(out) as tmp:
        configs = config_dir(base, tmp / ".configs")
        assert configs is not None, base
        torch.manual_seed(seed)
        encoders = ["text_encoder", "text_encoder_2"] if base == "sdxl" else ["text_encoder"]
        for name in ("unet", "vae", *encoders):
            if name == "unet":
                module = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(configs / name))
            elif name == "vae":
                module = AutoencoderKL.from_config(AutoencoderKL.load_config(configs / name))
            else:
                text_config = transformers.CLIPTextConfig.from_pretrained(configs / name)
                encoder_class = getattr(transformers, (text_config.architectures or ["CLIPTextModel"])[0])
                module = encoder_class(text_config)
            module.to(torch.float16).save_pretrained(tmp / name)
            del module
        for name in ("tokenizer", "tokenizer_2", "scheduler"):
            if (configs / name).is_dir():
                shutil.copytree(configs / name, tmp / name)
        shutil.copy(configs / "model_index.json", tmp / "model_index.json")
        shutil.rmtree(tmp / ".configs")
    return out
