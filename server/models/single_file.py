"""Loading single-file (LDM layout) SD checkpoints offline.

diffusers' `from_single_file` needs, besides the weights, a diffusers *config folder* (model_index.json,
component configs, tokenizer files; no weights) and, for the UNet and VAE, optionally a legacy LDM yaml.
What diffusers 0.42 takes from where when both are given:

- UNet and VAE architecture: from the yaml (`original_config`); the config folder's unet/ and vae/ configs
  are then ignored.
- text encoder architecture, tokenizer, scheduler and the component list: from the config folder.
- Without a yaml, the UNet and VAE configs come from the folder too.

A checkpoint may embed its own configs (the tiny test model does: its architecture is not SD-1.5's, so no
stock yaml describes it). `diffusers_config_dir` turns those into a config folder; such a folder is then
the whole truth about the architecture and any yaml is ignored.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.fileio import publish_folder
from server.models.libraries import quiet_ml_libraries
from server.models.tiny import CKPT_CONFIG_KEY, MODEL_INDEX, SAFETENSORS_CONFIG_KEY, write_tokenizer

if TYPE_CHECKING:
    import torch
    from diffusers import StableDiffusionPipeline

# Marks a config folder built from embedded configs: it describes the checkpoint exactly.
EMBEDDED_MARKER = "imagegraph_embedded.json"

_COMPONENT_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}


def read_embedded_config(checkpoint: Path) -> str | None:
    """The embedded-config JSON string of a checkpoint, or None when it has none."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        # Header only: no tensor is read.
        with safe_open(checkpoint, framework="pt") as f:
            value = (f.metadata() or {}).get(SAFETENSORS_CONFIG_KEY)
    else:
        import torch

        # weights_only: a checkpoint is untrusted input and must never run code; mmap keeps a multi-GB
        # file from being read just to look at one key (only zip-format pickles can be mapped).
        data = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(checkpoint))
        value = data.get(CKPT_CONFIG_KEY) if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def diffusers_config_dir(checkpoint: Path, cache_dir: Path) -> Path | None:
    """Materialise a checkpoint's embedded configs as a diffusers config folder; None when it has none.

    The folder is `cache_dir/<sha256 of the JSON>/`, written once (temp folder, then rename), so equal
    configs share it and concurrent callers never see a half-written one. Raises ValueError when the
    embedded configs are malformed or describe anything but an SD-1 StableDiffusionPipeline.
    """
    text = read_embedded_config(checkpoint)
    if text is None:
        return None
    target = Path(cache_dir) / hashlib.sha256(text.encode("utf-8")).hexdigest()
    if target.is_dir():
        return target
    configs = _validated(text)
    with publish_folder(target) as tmp:
        (tmp / "model_index.json").write_text(json.dumps(MODEL_INDEX, indent=2, sort_keys=True) + "\n")
        for name, rel in _COMPONENT_FILES.items():
            (tmp / rel).parent.mkdir()
            (tmp / rel).write_text(json.dumps(configs[name], indent=2, sort_keys=True) + "\n")
        tok = configs["tokenizer"]
        write_tokenizer(tmp / "tokenizer", tok["vocab"], tok["merges"], tok["config"])
        (tmp / EMBEDDED_MARKER).write_text(json.dumps({"source": "embedded"}) + "\n")
    return target


def _validated(text: str) -> dict[str, Any]:
    """The embedded configs, checked: they come from an untrusted file and name classes to import."""
    try:
        configs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"embedded diffusers config is not JSON: {e}") from e
    if not isinstance(configs, dict):
        raise ValueError("embedded diffusers config is not a JSON object")
    # model_index names the classes diffusers imports and instantiates: accept exactly ours, and write
    # our own copy rather than the file's.
    index = configs.get("model_index")
    if not isinstance(index, dict) or {k: v for k, v in index.items() if not k.startswith("_")} != {
        k: v for k, v in MODEL_INDEX.items() if not k.startswith("_")
    }:
        raise ValueError("embedded diffusers config is not an SD-1 StableDiffusionPipeline")
    for name in _COMPONENT_FILES:
        if not isinstance(configs.get(name), dict):
            raise ValueError(f"embedded diffusers config lacks {name!r}")
        configs[name].pop("auto_map", None)  # remote-code hooks have no business here
    tok = configs.get("tokenizer")
    if not (
        isinstance(tok, dict)
        and isinstance(tok.get("vocab"), dict)
        and all(isinstance(k, str) and isinstance(v, int) for k, v in tok["vocab"].items())
        and isinstance(tok.get("merges"), list)
        and all(isinstance(m, str) and "\n" not in m for m in tok["merges"])
        and isinstance(tok.get("config"), dict)
    ):
        raise ValueError("embedded diffusers config has a malformed tokenizer")
    tok["config"].pop("auto_map", None)
    return configs


def load_pipeline_from_single_file(
    checkpoint: Path,
    original_config: Path | None,
    config_dir: Path,
    dtype: torch.dtype | None = None,
) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline from one `.safetensors`/`.ckpt` file, without touching the network.

    `config_dir`: a diffusers config folder (json/txt only) - one of `diffusers_config_dir` or the
    server's shipped folder for the base model. `original_config`: the legacy yaml that gives the UNet
    and VAE architecture (e.g. `v1-inpainting-inference.yaml` for a 9-channel UNet); ignored when
    `config_dir` came from the checkpoint's embedded configs, which are exact where a stock yaml is not.
    The safety checker is never loaded.
    """
    quiet_ml_libraries()
    from diffusers import StableDiffusionPipeline

    kwargs: dict[str, Any] = {}
    if original_config is not None and not (Path(config_dir) / EMBEDDED_MARKER).exists():
        kwargs["original_config"] = str(original_config)
    # diffusers 0.42 reads non-safetensors files with torch.load(weights_only=True)
    # (diffusers.models.model_loading_utils.load_state_dict), so a .ckpt is never fully unpickled;
    # tests/models/test_tiny.py checks that a pickle carrying code is refused.
    return StableDiffusionPipeline.from_single_file(
        str(checkpoint),
        config=str(config_dir),
        local_files_only=True,
        torch_dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        **kwargs,
    )
