"""Our diffusers -> LDM/SGM key mapping is the exact inverse of diffusers' own readers, and writes the key
names real SD-2 and SDXL checkpoints have."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from functools import cache
from typing import Any

import pytest

from server.models.ldm_layout import OPEN_CLIP_PREFIX, SDXL_CLIP_PREFIX, ldm_state_dict

pytestmark = pytest.mark.timeout(120)


@cache
def tiny(base: str) -> tuple[Any, dict[str, Any]]:
    """The tiny pipeline of `base` and its single-file state dict, built once per test run."""
    from server.models.tiny_sdxl import build_pipeline

    pipe = build_pipeline(base, seed=3)
    return pipe, ldm_state_dict(base, pipe.components)


def assert_same(want: dict[str, Any], got: dict[str, Any], what: str) -> None:
    import torch

    assert sorted(got) == sorted(want), f"{what}: {sorted(set(want) ^ set(got))[:4]} differ"
    changed = [k for k in want if not torch.equal(want[k], got[k])]
    assert not changed, f"{what}: {changed[:3]} changed"


@pytest.mark.parametrize("base", ["sd-2", "sdxl", "sdxl-refiner"])
def test_diffusers_readers_give_back_every_tensor(base: str) -> None:
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )

    pipe, ldm = tiny(base)
    assert_same(pipe.unet.state_dict(), convert_ldm_unet_checkpoint(ldm, dict(pipe.unet.config)), "unet")
    assert_same(pipe.vae.state_dict(), convert_ldm_vae_checkpoint(ldm, dict(pipe.vae.config)), "vae")
    open_clip = pipe.text_encoder if base == "sd-2" else pipe.text_encoder_2
    got = convert_open_clip_checkpoint(open_clip, ldm, prefix=OPEN_CLIP_PREFIX[base])
    if base == "sd-2":
        # diffusers reads the penultimate-layer CLIPTextModel without a projection (flattened in transformers 5).
        got = {k.removeprefix("text_model."): v for k, v in got.items()}
    assert_same(open_clip.state_dict(), got, "OpenCLIP encoder")
    if base == "sdxl":
        clip_l = {k.removeprefix("text_model."): v for k, v in convert_ldm_clip_checkpoint(ldm).items()}
        clip_l.pop("embeddings.position_ids")  # a buffer real files carry and transformers 5 does not keep
        assert_same(pipe.text_encoder.state_dict(), clip_l, "CLIP-L")


# Names from real SDXL base 1.0 files: DownBlock2D first (input_blocks 1-2 have no attention), several
# transformer layers in a block, label_emb for the size/pooled-text embedding, the upsampler after the attention.
SDXL_KEYS = [
    "model.diffusion_model.label_emb.0.0.weight",
    "model.diffusion_model.label_emb.0.2.bias",
    "model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "model.diffusion_model.input_blocks.3.0.op.weight",
    "model.diffusion_model.input_blocks.4.0.skip_connection.weight",
    "model.diffusion_model.input_blocks.4.1.proj_in.weight",
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.1.ff.net.0.proj.weight",
    "model.diffusion_model.output_blocks.0.1.transformer_blocks.1.norm3.weight",
    "model.diffusion_model.output_blocks.2.2.conv.weight",
    "model.diffusion_model.output_blocks.5.0.out_layers.3.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.decoder.up.3.upsample.conv.weight",
    "first_stage_model.encoder.mid.attn_1.proj_out.weight",
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
    "conditioner.embedders.0.transformer.text_model.encoder.layers.1.self_attn.q_proj.weight",
    "conditioner.embedders.0.transformer.text_model.final_layer_norm.bias",
    "conditioner.embedders.1.model.positional_embedding",
    "conditioner.embedders.1.model.token_embedding.weight",
    "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight",
    "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_bias",
    "conditioner.embedders.1.model.transformer.resblocks.1.attn.out_proj.weight",
    "conditioner.embedders.1.model.transformer.resblocks.0.ln_2.bias",
    "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_fc.weight",
    "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.bias",
    "conditioner.embedders.1.model.ln_final.weight",
    "conditioner.embedders.1.model.text_projection",
    "conditioner.embedders.1.model.logit_scale",
]


def test_sdxl_file_has_the_sgm_layout_of_real_sdxl_files() -> None:
    import torch

    pipe, ldm = tiny("sdxl")
    missing = [k for k in SDXL_KEYS if k not in ldm]
    assert not missing, f"keys of real SDXL files missing: {missing}"
    assert not [k for k in ldm if k.startswith(("model.diffusion_model.input_blocks.1.1.", "alphas_cumprod"))]
    prefixes = ("model.diffusion_model.", "first_stage_model.", SDXL_CLIP_PREFIX, OPEN_CLIP_PREFIX["sdxl"])
    assert all(k.startswith(prefixes) for k in ldm), "SGM files hold the three models and nothing else"
    # The linear transformer projections SDXL uses are 2-D, as in the real file.
    assert ldm["model.diffusion_model.input_blocks.4.1.proj_in.weight"].ndim == 2
    # OpenCLIP: q, k, v stacked in that order; the projection is transformers' Linear weight transposed.
    bigg = pipe.text_encoder_2.state_dict()
    attention = "text_model.encoder.layers.1.self_attn."
    stacked = torch.cat([bigg[f"{attention}{x}_proj.weight"] for x in "qkv"])
    assert torch.equal(ldm[OPEN_CLIP_PREFIX["sdxl"] + "transformer.resblocks.1.attn.in_proj_weight"], stacked)
    assert torch.equal(ldm[OPEN_CLIP_PREFIX["sdxl"] + "text_projection"], bigg["text_projection.weight"].T)


def test_refiner_and_sd2_keep_openclip_where_their_real_files_do() -> None:
    _, refiner = tiny("sdxl-refiner")
    assert "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight" in refiner
    assert not [
        k for k in refiner if k.startswith(("conditioner.embedders.1.", "conditioner.embedders.0.transformer."))
    ]
    _, sd2 = tiny("sd-2")
    assert "cond_stage_model.model.transformer.resblocks.1.attn.in_proj_weight" in sd2
    assert "cond_stage_model.model.token_embedding.weight" in sd2  # what diffusers tells an SD-2 file by
    # LDM's LatentDiffusion saves its noise schedule beside the weights, as real SD-2 files have.
    assert {"betas", "alphas_cumprod", "posterior_mean_coef2"} <= set(sd2)
    assert sd2["cond_stage_model.model.text_projection"].shape == (32, 32)


def test_unknown_bases_and_parts_are_refused() -> None:
    pipe, _ = tiny("sdxl")
    with pytest.raises(ValueError, match="unknown base 'sd-3'"):
        ldm_state_dict("sd-3", pipe.components)
    with pytest.raises(ValueError, match="a single file of sdxl needs text_encoder_2"):
        ldm_state_dict("sdxl", {**pipe.components, "text_encoder_2": None})
