"""Tiny random-weight Stable Diffusion models (SD-1, SD-2, SDXL, SDXL refiner), written fully offline.

They run the real code paths (UNets with cross-attention, a VAE with scale factor 8, CLIP text encoders and a
byte-level BPE tokenizer) in a few milliseconds per step, so tests, CI and `make-tiny-model` demos need no
downloaded weights. SD-1 is built here, the other bases in `server.models.tiny_sdxl`, the tokenizer they share
in `server.models.tiny_tokenizer`. Three on-disk forms:

- ``diffusers``: the pipeline's folder.
- ``checkpoint``: one ``.safetensors`` in the original key layout of its base (LDM for SD-1/SD-2, SGM for
  SDXL; see `server.models.ldm_layout`), like a real downloaded file.
- ``ckpt``: the same state dict as a ``torch.save({"state_dict": ...})`` pickle.

The tiny architectures are not the real ones, so the single files carry their own diffusers configs (see
`server.models.single_file`): under ``imagegraph.diffusers_config`` in the safetensors ``__metadata__``, or
under ``imagegraph_diffusers_config`` in the ``.ckpt`` dict.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from server.models.libraries import quiet_ml_libraries
from server.models.tiny_tokenizer import BOS, EOS, TOKENIZER_CONFIG, bpe_vocab, write_tokenizer

SAFETENSORS_CONFIG_KEY = "imagegraph.diffusers_config"
CKPT_CONFIG_KEY = "imagegraph_diffusers_config"

TinyBase = Literal["sd-1", "sd-2", "sdxl", "sdxl-refiner"]
TinyFormat = Literal["diffusers", "checkpoint", "ckpt"]
BASES: tuple[TinyBase, ...] = ("sd-1", "sd-2", "sdxl", "sdxl-refiner")
FORMATS: tuple[TinyFormat, ...] = ("diffusers", "checkpoint", "ckpt")

# The SD-1 tiny model's pipeline layout.
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


def write_tiny_model(out: Path, fmt: TinyFormat = "diffusers", seed: int = 0, base: TinyBase = "sd-1") -> Path:
    """Write a tiny random model of `base` to `out` and return `out`.

    `fmt="diffusers"`: `out` is a new folder; `"checkpoint"`: a `.safetensors` file; `"ckpt"`: a `.ckpt`.
    The same seed gives byte-identical weights. `out` must not exist yet. The result appears atomically
    (written under a hidden temp name, then renamed), so a folder watcher never sees half a model.
    """
    out = Path(out)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    if base not in BASES:
        raise ValueError(f"unknown base {base!r}; one of {', '.join(BASES)}")
    if out.exists():
        raise FileExistsError(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        folder = tmp / "model"
        parts = _write_folder(folder, base, seed)
        if fmt == "diffusers":
            _make_readable(folder)
            os.rename(folder, out)
            return out
        from server.models.ldm_layout import ldm_state_dict

        configs = json.dumps(read_config_tree(folder), sort_keys=True, separators=(",", ":"))
        state_dict = ldm_state_dict(base, parts)
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


def _write_folder(folder: Path, base: TinyBase, seed: int) -> dict[str, Any]:
    """The diffusers folder of `base` at `folder`; returns its weighted parts (`unet`, `vae`, text encoders)."""
    if base == "sd-1":
        unet, vae, text_encoder = _write_diffusers_folder(folder, seed)
        return {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    from server.models.tiny_sdxl import build_pipeline

    pipe = build_pipeline(base, seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return {name: part for name, part in pipe.components.items() if hasattr(part, "state_dict")}


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

    vocab, merges = bpe_vocab()
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


def read_config_tree(folder: Path) -> dict[str, Any]:
    """The configs of a diffusers SD/SDXL folder as one JSON-able dict (the embedded-config format): the
    model index, then each component it names, by name (model and scheduler configs, tokenizers as vocab,
    merges and config)."""

    def load(rel: str) -> Any:
        return json.loads((folder / rel).read_text(encoding="utf-8"))

    index = load("model_index.json")
    tree: dict[str, Any] = {"model_index": index}
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list) or spec[:1] == [None]:
            continue
        if name.startswith("tokenizer"):
            tree[name] = _tokenizer_tree(folder / name)
        elif name == "scheduler":
            tree[name] = load("scheduler/scheduler_config.json")
        else:
            tree[name] = load(f"{name}/config.json")
    return tree


# What transformers' save_pretrained records about how it was called, not about the tokenizer.
_RUNTIME_TOKENIZER_KEYS = ("is_local", "local_files_only")


def _tokenizer_tree(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key in _RUNTIME_TOKENIZER_KEYS:
        config.pop(key, None)
    if (folder / "vocab.json").is_file():
        vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
        lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
        merges = [m for m in lines if m and not m.startswith("#version")]
    else:
        # transformers 5's save_pretrained writes only the fast tokenizer's tokenizer.json.
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab = model["vocab"]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return {"vocab": vocab, "merges": merges, "config": config}
