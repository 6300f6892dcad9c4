"""diffusers/transformers weights -> the original single-file key layouts (LDM for SD-1/SD-2, SGM for SDXL).

diffusers reads these layouts (`diffusers.loaders.single_file_utils`: `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`) but ships no
writer, so this module is the inverse of those readers. What each base's file holds:

- sd-1: `model.diffusion_model.*` (UNet), `first_stage_model.*` (VAE), `cond_stage_model.transformer.text_model.*`
  (CLIP in transformers' names), and LDM's noise-schedule buffers.
- sd-2: the same UNet and VAE, `cond_stage_model.model.*` (OpenCLIP names), the buffers.
- sdxl: the UNet (its `label_emb` is diffusers' `add_embedding`), the VAE, CLIP-L under
  `conditioner.embedders.0.transformer.text_model.*` and OpenCLIP bigG under `conditioner.embedders.1.model.*`.
- sdxl-refiner: the UNet, the VAE and OpenCLIP bigG under `conditioner.embedders.0.model.*`.

The UNet and VAE tables map a diffusers module prefix to its LDM prefix plus the leaf renames under it; the
SDXL UNet needs nothing else (its DownBlock2D-first numbering and several transformer layers per block follow
from the same counting, and the transformer blocks keep their names).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."  # SD-1
SDXL_CLIP_PREFIX = "conditioner.embedders.0.transformer.text_model."
# Where each base keeps its OpenCLIP text encoder (diffusers' `text_encoder_2` for SDXL, `text_encoder` for SD-2).
OPEN_CLIP_PREFIX = {
    "sd-2": "cond_stage_model.model.",
    "sdxl": "conditioner.embedders.1.model.",
    "sdxl-refiner": "conditioner.embedders.0.model.",
}
BASES = ("sd-1", "sd-2", "sdxl", "sdxl-refiner")
_PARTS = {
    "sd-1": ("unet", "vae", "text_encoder"),
    "sd-2": ("unet", "vae", "text_encoder"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2"),
    "sdxl-refiner": ("unet", "vae", "text_encoder_2"),
}

_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}

_Table = dict[str, tuple[str, dict[str, str]]]


def _unet_table(config: Mapping[str, Any]) -> _Table:
    """diffusers module prefix -> (LDM prefix, leaf renames) for an SD/SDXL UNet2DConditionModel."""
    per = config["layers_per_block"] + 1  # LDM counts the down/upsampler as one more input/output block
    table: _Table = {
        "time_embedding.linear_1": ("time_embed.0", {}),
        "time_embedding.linear_2": ("time_embed.2", {}),
        # SDXL's text_time embedding (pooled text + size/crop or aesthetic-score ids) is SGM's label_emb.
        "add_embedding.linear_1": ("label_emb.0.0", {}),
        "add_embedding.linear_2": ("label_emb.0.2", {}),
        "conv_in": ("input_blocks.0.0", {}),
        "conv_norm_out": ("out.0", {}),
        "conv_out": ("out.2", {}),
        "mid_block.resnets.0": ("middle_block.0", _UNET_RESNET),
        "mid_block.attentions.0": ("middle_block.1", {}),
        "mid_block.resnets.1": ("middle_block.2", _UNET_RESNET),
    }
    # Entries for modules a block type lacks (attentions of a DownBlock2D, the last block's samplers) are
    # never looked up: the table is read from the model's own keys.
    for b in range(len(config["down_block_types"])):
        for j in range(per - 1):
            table[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{1 + b * per + j}.0", _UNET_RESNET)
            table[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{1 + b * per + j}.1", {})
        table[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{(b + 1) * per}.0.op", {})
    for b, up_type in enumerate(config.get("up_block_types", ())):  # a ControlNet has no decoder half
        for j in range(per):
            table[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{b * per + j}.0", _UNET_RESNET)
            table[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{b * per + j}.1", {})
        # The upsampler sits after the attention in blocks that have one.
        slot = 2 if "CrossAttn" in up_type else 1
        table[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{b * per + per - 1}.{slot}.conv", {})
    return table


def _vae_table(config: Mapping[str, Any]) -> _Table:
    levels = len(config["block_out_channels"])
    table: _Table = {name: (name, {}) for name in ("quant_conv", "post_quant_conv")}
    for side in ("encoder", "decoder"):
        table[f"{side}.conv_in"] = (f"{side}.conv_in", {})
        table[f"{side}.conv_out"] = (f"{side}.conv_out", {})
        table[f"{side}.conv_norm_out"] = (f"{side}.norm_out", {})
        table[f"{side}.mid_block.resnets.0"] = (f"{side}.mid.block_1", _VAE_RESNET)
        table[f"{side}.mid_block.resnets.1"] = (f"{side}.mid.block_2", _VAE_RESNET)
        table[f"{side}.mid_block.attentions.0"] = (f"{side}.mid.attn_1", _VAE_ATTENTION)
    for i in range(levels):
        for j in range(config["layers_per_block"]):
            table[f"encoder.down_blocks.{i}.resnets.{j}"] = (f"encoder.down.{i}.block.{j}", _VAE_RESNET)
        table[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = (f"encoder.down.{i}.downsample.conv", {})
        # The decoder's up blocks are numbered from the bottom in LDM, from the top in diffusers.
        ldm = levels - 1 - i
        for j in range(config["layers_per_block"] + 1):
            table[f"decoder.up_blocks.{i}.resnets.{j}"] = (f"decoder.up.{ldm}.block.{j}", _VAE_RESNET)
        table[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = (f"decoder.up.{ldm}.upsample.conv", {})
    return table


def _rename(key: str, table: _Table) -> str:
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        entry = table.get(".".join(parts[:cut]))
        if entry is not None:
            ldm_prefix, leaves = entry
            module, param = ".".join(parts[cut:-1]), parts[-1]
            module = leaves.get(module, module)
            return ".".join(p for p in (ldm_prefix, module, param) if p)
    raise KeyError(f"no LDM name for diffusers key {key!r}")


def unet_to_ldm(unet: Any) -> dict[str, Any]:
    """A UNet2DConditionModel's weights under `model.diffusion_model.`."""
    table = _unet_table(dict(unet.config))
    state = unet.state_dict()
    return _one_to_one(state, {UNET_PREFIX + _rename(key, table): tensor for key, tensor in state.items()})


CONTROLNET_PREFIX = "control_model."


def controlnet_to_ldm(controlnet: Any) -> dict[str, Any]:
    """A ControlNetModel's weights in lllyasviel's layout, under `control_model.`: the UNet's encoder half by
    the UNet's names, the hint encoder as `input_hint_block` (convolutions at even indices, SiLUs between),
    the residual convolutions as `zero_convs` and `middle_block_out`."""
    config = dict(controlnet.config)
    table = _unet_table(config)
    hint_blocks = 2 * (len(config["conditioning_embedding_out_channels"]) - 1)
    table["controlnet_cond_embedding.conv_in"] = ("input_hint_block.0", {})
    for i in range(hint_blocks):
        table[f"controlnet_cond_embedding.blocks.{i}"] = (f"input_hint_block.{2 * (i + 1)}", {})
    table["controlnet_cond_embedding.conv_out"] = (f"input_hint_block.{2 * (hint_blocks + 1)}", {})
    for i in range(len(controlnet.controlnet_down_blocks)):
        table[f"controlnet_down_blocks.{i}"] = (f"zero_convs.{i}.0", {})
    table["controlnet_mid_block"] = ("middle_block_out.0", {})
    state = controlnet.state_dict()
    return _one_to_one(state, {CONTROLNET_PREFIX + _rename(key, table): tensor for key, tensor in state.items()})


def vae_to_ldm(vae: Any) -> dict[str, Any]:
    """An AutoencoderKL's weights under `first_stage_model.`."""
    table = _vae_table(dict(vae.config))
    state = vae.state_dict()
    out = {}
    for key, tensor in state.items():
        ldm = _rename(key, table)
        # LDM's VAE attention projections are 1x1 convs; diffusers keeps them as linears.
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + ldm] = tensor
    return _one_to_one(state, out)


def _one_to_one(source: Mapping[str, Any], renamed: dict[str, Any]) -> dict[str, Any]:
    if len(renamed) != len(source):
        raise AssertionError("two diffusers keys mapped to one LDM key")
    return renamed


def _clip_keys(text_encoder: Any) -> dict[str, Any]:
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); CLIPTextModelWithProjection kept it.
    return {key.removeprefix("text_model."): tensor for key, tensor in text_encoder.state_dict().items()}


def clip_to_ldm(text_encoder: Any, prefix: str) -> dict[str, Any]:
    """A CLIPTextModel in transformers' names under `prefix` (`...transformer.text_model.`), with the
    position_ids buffer real files carry (loaders must skip it)."""
    import torch

    out = {prefix + key: tensor for key, tensor in _clip_keys(text_encoder).items()}
    positions = text_encoder.config.max_position_embeddings
    out[prefix + "embeddings.position_ids"] = torch.arange(positions, dtype=torch.int64)[None]
    return out


_OPEN_CLIP_LAYER = re.compile(r"encoder\.layers\.(\d+)\.(.+)")
_OPEN_CLIP_LEAVES = {
    "self_attn.out_proj": "attn.out_proj",
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}
_OPEN_CLIP_TOP = {
    "embeddings.token_embedding.weight": "token_embedding.weight",
    "embeddings.position_embedding.weight": "positional_embedding",
    "final_layer_norm.weight": "ln_final.weight",
    "final_layer_norm.bias": "ln_final.bias",
}


def open_clip_to_ldm(text_encoder: Any, prefix: str) -> dict[str, Any]:
    """A CLIPTextModel(WithProjection) in OpenCLIP's names under `prefix` (`...model.`): the inverse of
    diffusers' `convert_open_clip_checkpoint`.

    OpenCLIP keeps q, k and v as one `in_proj_weight`/`in_proj_bias` (stacked in that order), the MLP as
    `c_fc`/`c_proj`, and `text_projection` as the matrix the pooled output is multiplied by (x @ P), which is
    the transpose of transformers' Linear weight. A model without a projection (SD-2's encoder) still gets
    one, as real SD-2 files have: diffusers reads only its first dimension (the width q/k/v split at) and
    drops it. `logit_scale` is CLIP's contrastive temperature, in real files and unused by every loader."""
    import torch

    width = text_encoder.config.hidden_size
    out: dict[str, Any] = {}
    attention: dict[tuple[str, str], dict[str, Any]] = {}
    for key, tensor in _clip_keys(text_encoder).items():
        if key == "embeddings.position_ids":
            continue  # a transformers buffer; OpenCLIP has none
        if key in _OPEN_CLIP_TOP:
            out[prefix + _OPEN_CLIP_TOP[key]] = tensor
            continue
        if key == "text_projection.weight":
            out[prefix + "text_projection"] = tensor.T
            continue
        match = _OPEN_CLIP_LAYER.fullmatch(key)
        if match is None:
            raise KeyError(f"no OpenCLIP name for CLIP key {key!r}")
        layer, rest = match.groups()
        module, _, param = rest.rpartition(".")
        block = f"{prefix}transformer.resblocks.{layer}."
        qkv = re.fullmatch(r"self_attn\.([qkv])_proj", module)
        if qkv is not None:
            attention.setdefault((block, param), {})[qkv.group(1)] = tensor
        elif module in _OPEN_CLIP_LEAVES:
            out[f"{block}{_OPEN_CLIP_LEAVES[module]}.{param}"] = tensor
        else:
            raise KeyError(f"no OpenCLIP name for CLIP key {key!r}")
    for (block, param), parts in attention.items():
        if set(parts) != {"q", "k", "v"}:
            raise KeyError(f"{block}: attention has only {sorted(parts)} of q, k, v")
        out[f"{block}attn.in_proj_{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if prefix + "text_projection" not in out:
        out[prefix + "text_projection"] = torch.eye(width)
    out[prefix + "logit_scale"] = torch.tensor(math.log(100.0))
    return out


def ldm_state_dict(base: str, parts: Mapping[str, Any]) -> dict[str, Any]:
    """The single-file state dict (contiguous CPU tensors) of a pipeline's `parts` (`unet`, `vae`,
    `text_encoder`, `text_encoder_2` as the base has them) in the original layout of `base`."""
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; one of {', '.join(BASES)}")
    missing = [name for name in _PARTS[base] if parts.get(name) is None]
    if missing:
        raise ValueError(f"a single file of {base} needs {', '.join(missing)}")
    pieces = [unet_to_ldm(parts["unet"]), vae_to_ldm(parts["vae"])]
    if base == "sd-1":
        pieces.append(clip_to_ldm(parts["text_encoder"], CLIP_PREFIX))
    elif base == "sd-2":
        pieces.append(open_clip_to_ldm(parts["text_encoder"], OPEN_CLIP_PREFIX["sd-2"]))
    elif base == "sdxl":
        pieces.append(clip_to_ldm(parts["text_encoder"], SDXL_CLIP_PREFIX))
        pieces.append(open_clip_to_ldm(parts["text_encoder_2"], OPEN_CLIP_PREFIX["sdxl"]))
    else:
        pieces.append(open_clip_to_ldm(parts["text_encoder_2"], OPEN_CLIP_PREFIX["sdxl-refiner"]))
    # LDM's LatentDiffusion (SD-1, SD-2) saves its noise schedule beside the weights; SGM (SDXL) does not.
    if base in ("sd-1", "sd-2"):
        pieces.append(ddpm_buffers())
    out: dict[str, Any] = {}
    for piece in pieces:
        if out.keys() & piece.keys():
            raise AssertionError(f"two weights mapped to one LDM key: {sorted(out.keys() & piece.keys())[:3]}")
        out.update(piece)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def ddpm_buffers() -> dict[str, Any]:
    """The buffers LDM's LatentDiffusion saves beside the weights, for SD's scaled-linear schedule."""
    import torch

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
    posterior_variance = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    buffers = {
        "betas": betas,
        "alphas_cumprod": alphas_cumprod,
        "alphas_cumprod_prev": prev,
        "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
        "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
        "log_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).log(),
        "sqrt_recip_alphas_cumprod": (1.0 / alphas_cumprod).sqrt(),
        "sqrt_recipm1_alphas_cumprod": (1.0 / alphas_cumprod - 1).sqrt(),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
        "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - alphas_cumprod),
        "posterior_mean_coef2": (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
    }
    return {k: v.to(torch.float32) for k, v in buffers.items()}
