"""Tiny random-weight SDXL, SDXL-refiner and SD-2 (v-prediction) models as diffusers folders, written offline.

The SDXL UNet has SDXL's shape in miniature: a `text_time` addition embedding fed by the pooled output of the
second text encoder and the size/crop (or aesthetic score) time ids, cross-attention over the two encoders'
hidden states side by side, `use_linear_projection`, several transformer layers per block. The first text
encoder (SDXL's CLIP-L) is the tiny SD-1 one's size; the second (OpenCLIP bigG) is twice as wide, as bigG is
wider than CLIP-L: diffusers' single-file loader tells the two apart only by width, and code that mixes them
up fails here as it would on a real model. Both use the tiny tokenizer. The VAE is the tiny one with SDXL's
scaling factor and `force_upcast`. Each folder is what the pipeline's `save_pretrained` writes
(`model_index.json` with `_diffusers_version`), so diffusers' own SDXL pipelines load it as it is. Single files
of these models: `server.models.tiny.write_tiny_model(out, "checkpoint", base="sdxl")`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from server.models.libraries import quiet_ml_libraries
from server.models.tiny_tokenizer import BOS, EOS, TOKENIZER_CONFIG, bpe_vocab, write_tokenizer

TinyBase = Literal["sdxl", "sdxl-refiner", "sd-2"]
TEXT_WIDTH = 32  # CLIP-L (SDXL's text_encoder) and SD-2's encoder
TEXT_WIDTH_2 = 64  # OpenCLIP bigG (SDXL's and the refiner's text_encoder_2)
POOLED_WIDTH = 64  # bigG's projection, as wide as bigG like the real one (1280)
TIME_EMBED = 8


def write_tiny_model_of_base(out: Path, base: TinyBase, seed: int = 0) -> Path:
    """A tiny diffusers folder of `base` at `out` (which must not exist); appears atomically. Single files of
    these models, and the same folders: `server.models.tiny.write_tiny_model(out, fmt, seed, base)`."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        pipe = build_pipeline(base, seed)
        pipe.save_pretrained(tmp / "model", safe_serialization=True)
        for path in [tmp / "model", *(tmp / "model").rglob("*")]:
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
        os.rename(tmp / "model", out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_pipeline(base: TinyBase, seed: int = 0) -> Any:
    """The tiny pipeline object of `base` (random weights, the same for the same seed)."""
    import torch

    quiet_ml_libraries()
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLImg2ImgPipeline,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    vocab, merges = bpe_vocab()
    with tempfile.TemporaryDirectory() as folder:
        write_tokenizer(Path(folder), vocab, merges, TOKENIZER_CONFIG)
        tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)

    def text_config(width: int = TEXT_WIDTH, *, open_clip: bool, **extra: Any) -> Any:
        return CLIPTextConfig(
            hidden_size=width,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=1000,
            max_position_embeddings=77,
            # OpenAI's CLIP-L uses quick_gelu; the OpenCLIP encoders (SD-2's ViT-H, SDXL's bigG) use gelu.
            hidden_act="gelu" if open_clip else "quick_gelu",
            bos_token_id=vocab[BOS],
            eos_token_id=vocab[EOS],
            pad_token_id=vocab[EOS],
            **extra,
        )

    scheduler = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="v_prediction" if base == "sd-2" else "epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            sample_size=256,
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            scaling_factor=0.18215 if base == "sd-2" else 0.13025,
            force_upcast=base != "sd-2",
        )
        if base == "sd-2":
            unet = UNet2DConditionModel(
                sample_size=32,
                block_out_channels=(32, 64),
                layers_per_block=2,
                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=TEXT_WIDTH,
                attention_head_dim=(2, 4),
                use_linear_projection=True,
                upcast_attention=True,
                norm_num_groups=32,
            )
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=CLIPTextModel(text_config(open_clip=True)),
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        refiner = base == "sdxl-refiner"
        # The refiner conditions on the second encoder alone, and on an aesthetic score instead of a target size.
        time_ids = 5 if refiner else 6
        unet = UNet2DConditionModel(
            sample_size=32,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED,
            transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=time_ids * TIME_EMBED + POOLED_WIDTH,
            cross_attention_dim=TEXT_WIDTH_2 if refiner else TEXT_WIDTH + TEXT_WIDTH_2,
            norm_num_groups=32,
        )
        text_encoder_2 = CLIPTextModelWithProjection(
            text_config(TEXT_WIDTH_2, open_clip=True, projection_dim=POOLED_WIDTH)
        )
        if refiner:
            return StableDiffusionXLImg2ImgPipeline(
                vae=vae,
                text_encoder=None,
                text_encoder_2=text_encoder_2,
                tokenizer=None,
                tokenizer_2=tokenizer,
                unet=unet,
                scheduler=scheduler,
                requires_aesthetics_score=True,
                force_zeros_for_empty_prompt=False,
            )
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=CLIPTextModel(text_config(open_clip=False)),
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer,
            unet=unet,
            scheduler=scheduler,
        )
