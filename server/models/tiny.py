"""A tiny random-weight Stable-Diffusion-1.x model, written fully offline.

It runs the real SD-1 code paths (UNet with cross-attention, a VAE with scale factor 8, a CLIP text encoder
and a byte-level BPE tokenizer) in a few milliseconds per step, so tests, CI and `make-tiny-model` demos
need no downloaded weights. Three on-disk forms:

- ``diffusers``: a StableDiffusionPipeline folder.
- ``checkpoint``: one ``.safetensors`` in the original LDM key layout, like a real SD-1.5 file.
- ``ckpt``: the same state dict as a ``torch.save({"state_dict": ...})`` pickle.

The tiny architecture is not SD-1.5's, so the single files carry their own diffusers configs (see
`server.models.single_file`): under ``imagegraph.diffusers_config`` in the safetensors ``__metadata__``, or
under ``imagegraph_diffusers_config`` in the ``.ckpt`` dict.

diffusers reads LDM files (``convert_ldm_*_checkpoint``) but ships no writer, so the diffusers -> LDM key
mapping below is ours: each table maps a diffusers module prefix to its LDM prefix plus the leaf renames
that apply under it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from server.models.libraries import quiet_ml_libraries
from server.models.shipped import bytes_to_unicode

SAFETENSORS_CONFIG_KEY = "imagegraph.diffusers_config"
CKPT_CONFIG_KEY = "imagegraph_diffusers_config"

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer.text_model."

# The pipeline layout every tiny model (and every embedded config we accept) has.
MODEL_INDEX: dict[str, Any] = {
    "_class_name": "StableDiffusionPipeline",
    "feature_extractor": [None, None],
    "requires_safety_checker": False,
    "safety_checker": [None, None],
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "CLIPTokenizer",
    # Without it transformers reports a max length of ~1e30 and prompts are never truncated.
    "model_max_length": 77,
    "bos_token": BOS,
    "eos_token": EOS,
    "unk_token": EOS,
    "pad_token": EOS,  # SD-1's tokenizer pads with <|endoftext|>
    "do_lower_case": True,
    "errors": "replace",
    "add_prefix_space": False,
}

# Words the BPE merges are learned from: prompt-like English, so a prompt takes a realistic share of
# the 77-token window instead of one token per character.
_BPE_CORPUS = (
    "a photo of the cat dog in on at with and portrait landscape painting oil watercolor sketch drawing "
    "red green blue yellow orange purple black white golden silver light dark night sunset dusk dawn "
    "lighthouse mountain river forest ocean sea sky cloud snow rain city street house castle tower "
    "fox bird horse flower tree garden field beach island desert village bridge boat ship car train "
    "highly detailed realistic beautiful cinematic lighting dramatic sharp focus trending artstation "
    "style by an old young man woman girl boy face eyes hair smiling standing sitting walking "
    "masterpiece best quality ugly blurry deformed low resolution watermark text signature"
)
_BPE_MERGES = 300  # 514 base tokens + 300 merges stays under the text encoder's 1000-token vocab


def write_tiny_model(out: Path, fmt: Literal["diffusers", "checkpoint", "ckpt"] = "diffusers", seed: int = 0) -> Path:
    """Write a tiny random SD-1.x model to `out` and return `out`.

    `fmt="diffusers"`: `out` is a new folder; `"checkpoint"`: a `.safetensors` file; `"ckpt"`: a `.ckpt`.
    The same seed gives byte-identical weights. `out` must not exist yet. The result appears atomically
    (written under a hidden temp name, then renamed), so a folder watcher never sees half a model.
    """
    out = Path(out)
    if fmt not in ("diffusers", "checkpoint", "ckpt"):
        raise ValueError(f"unknown format {fmt!r}")
    if out.exists():
        raise FileExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        folder = tmp / "model"
        unet, vae, text_encoder = _write_diffusers_folder(folder, seed)
        if fmt == "diffusers":
            _make_readable(folder)
            os.rename(folder, out)
            return out
        configs = json.dumps(read_config_tree(folder), sort_keys=True, separators=(",", ":"))
        state_dict = to_ldm_state_dict(unet, vae, text_encoder)
        part = tmp / "single"
        if fmt == "checkpoint":
            from safetensors.torch import save_file

            # One metadata key only: safetensors writes __metadata__ from a Rust HashMap, so with two keys
            # their order (and the file's bytes) changes from run to run.
            save_file(state_dict, part, metadata={SAFETENSORS_CONFIG_KEY: configs})
        else:
            import torch

            torch.save({"state_dict": state_dict, CKPT_CONFIG_KEY: configs}, part)
        _make_readable(part)
        os.replace(part, out)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_readable(path: Path) -> None:
    # safetensors and mkdtemp create owner-only (0600/0700) files; a model is shared data, like any other.
    for p in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)


# ---------------------------------------------------------------------------------------------------
# Building


def _write_diffusers_folder(folder: Path, seed: int) -> tuple[Any, Any, Any]:
    import torch

    quiet_ml_libraries()
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    vocab, merges = _bpe_vocab()
    folder.mkdir(parents=True)
    # What `save_pretrained` writes, `_diffusers_version` included (diffusers' inpaint pipeline requires it).
    import diffusers

    index = {**MODEL_INDEX, "_diffusers_version": diffusers.__version__}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    write_tokenizer(folder / "tokenizer", vocab, merges, TOKENIZER_CONFIG)

    # fork_rng: seeding must not disturb the caller's global RNG (a test's or the server's).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=32,
            in_channels=4,
            out_channels=4,
            block_out_channels=(32, 64),
            layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            attention_head_dim=8,
            norm_num_groups=32,
        )
        # Four levels, not the two of diffusers' own test VAE: scale factor 8 like real SD-1, and a
        # 2-level VAE decodes big latents slowly (128x128 took ~6 s).
        vae = AutoencoderKL(
            sample_size=256,
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 32, 64, 64),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=32,
            scaling_factor=0.18215,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                vocab_size=1000,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                bos_token_id=vocab[BOS],
                eos_token_id=vocab[EOS],
                pad_token_id=vocab[EOS],
            )
        )
    scheduler: Any = EulerDiscreteScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        timestep_spacing="leading",
        steps_offset=1,
    )
    parts: dict[str, Any] = {"unet": unet, "vae": vae, "text_encoder": text_encoder, "scheduler": scheduler}
    for name, part in parts.items():
        part.save_pretrained(folder / name)
    return unet, vae, text_encoder


def _bpe_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP-style vocab (bytes, bytes+</w>, one token per merge, then the two specials) and merges."""
    symbols = bytes_to_unicode()
    words = [[*w[:-1], w[-1] + "</w>"] for w in _BPE_CORPUS.split()]
    merges: list[str] = []
    for _ in range(_BPE_MERGES):
        counts: dict[tuple[str, str], int] = {}
        for w in words:
            for pair in itertools.pairwise(w):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        # Ties broken by the pair itself, so the vocab never depends on dict order.
        best = max(counts, key=lambda p: (counts[p], p))
        merges.append(f"{best[0]} {best[1]}")
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == best:
                    w[i : i + 2] = [w[i] + w[i + 1]]
                i += 1
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(m.replace(" ", "") for m in merges), BOS, EOS]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], config: dict[str, Any]) -> None:
    """The files `CLIPTokenizer.from_pretrained` reads (transformers 5 ignores `vocab_file=` kwargs)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def read_config_tree(folder: Path) -> dict[str, Any]:
    """The configs of a diffusers SD folder as one JSON-able dict (the embedded-config format)."""

    def load(rel: str) -> Any:
        return json.loads((folder / rel).read_text(encoding="utf-8"))

    merges = (folder / "tokenizer/merges.txt").read_text(encoding="utf-8").splitlines()
    return {
        "model_index": load("model_index.json"),
        "unet": load("unet/config.json"),
        "vae": load("vae/config.json"),
        "text_encoder": load("text_encoder/config.json"),
        "scheduler": load("scheduler/scheduler_config.json"),
        "tokenizer": {
            "vocab": load("tokenizer/vocab.json"),
            "merges": [m for m in merges if m and not m.startswith("#version")],
            "config": load("tokenizer/tokenizer_config.json"),
        },
    }


# ---------------------------------------------------------------------------------------------------
# diffusers -> LDM keys: the inverse of diffusers' convert_ldm_unet/vae/clip_checkpoint

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


def _unet_table(config: dict[str, Any]) -> _Table:
    """diffusers module prefix -> (LDM prefix, leaf renames) for an SD-style UNet2DConditionModel."""
    per = config["layers_per_block"] + 1  # LDM counts the down/upsampler as one more input/output block
    table: _Table = {
        "time_embedding.linear_1": ("time_embed.0", {}),
        "time_embedding.linear_2": ("time_embed.2", {}),
        "conv_in": ("input_blocks.0.0", {}),
        "conv_norm_out": ("out.0", {}),
        "conv_out": ("out.2", {}),
        "mid_block.resnets.0": ("middle_block.0", _UNET_RESNET),
        "mid_block.attentions.0": ("middle_block.1", {}),
        "mid_block.resnets.1": ("middle_block.2", _UNET_RESNET),
    }
    for b, up_type in enumerate(config["up_block_types"]):
        for j in range(per - 1):
            table[f"down_blocks.{b}.resnets.{j}"] = (f"input_blocks.{1 + b * per + j}.0", _UNET_RESNET)
            table[f"down_blocks.{b}.attentions.{j}"] = (f"input_blocks.{1 + b * per + j}.1", {})
        table[f"down_blocks.{b}.downsamplers.0.conv"] = (f"input_blocks.{(b + 1) * per}.0.op", {})
        for j in range(per):
            table[f"up_blocks.{b}.resnets.{j}"] = (f"output_blocks.{b * per + j}.0", _UNET_RESNET)
            table[f"up_blocks.{b}.attentions.{j}"] = (f"output_blocks.{b * per + j}.1", {})
        # The upsampler sits after the attention in blocks that have one.
        slot = 2 if "CrossAttn" in up_type else 1
        table[f"up_blocks.{b}.upsamplers.0.conv"] = (f"output_blocks.{b * per + per - 1}.{slot}.conv", {})
    return table


def _vae_table(config: dict[str, Any]) -> _Table:
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


def to_ldm_state_dict(unet: Any, vae: Any, text_encoder: Any) -> dict[str, Any]:
    """One LDM-layout state dict (contiguous, CPU) from diffusers/transformers SD-1 components."""
    import torch

    unet_table, vae_table = _unet_table(dict(unet.config)), _vae_table(dict(vae.config))
    out: dict[str, torch.Tensor] = {}
    sources = 0
    for key, tensor in unet.state_dict().items():
        out[UNET_PREFIX + _rename(key, unet_table)] = tensor
        sources += 1
    for key, tensor in vae.state_dict().items():
        ldm = _rename(key, vae_table)
        # LDM's VAE attention projections are 1x1 convs; diffusers keeps them as linears.
        if ".mid.attn_1." in ldm and ldm.endswith(".weight") and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]
        out[VAE_PREFIX + ldm] = tensor
        sources += 1
    for key, tensor in text_encoder.state_dict().items():
        # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); LDM files keep it.
        out[CLIP_PREFIX + key.removeprefix("text_model.")] = tensor
        sources += 1
    if len(out) != sources:
        raise AssertionError("two diffusers keys mapped to one LDM key")
    # Real SD-1 files also carry CLIP's position_ids buffer and LDM's noise-schedule buffers; loaders
    # must skip them, so the tiny file has them too.
    out[CLIP_PREFIX + "embeddings.position_ids"] = torch.arange(77, dtype=torch.int64)[None]
    out.update(_ddpm_buffers())
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in out.items()}


def _ddpm_buffers() -> dict[str, Any]:
    """The buffers LDM's LatentDiffusion saves beside the weights, for SD-1's scaled-linear schedule."""
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
