"""Loading single-file (LDM layout) SD checkpoints offline.

diffusers' `from_single_file` needs, besides the weights, a diffusers *config folder* (model_index.json,
component configs, tokenizer files; no weights) and, for the UNet and VAE, optionally a legacy LDM yaml.
What diffusers 0.42 takes from where when both are given:

- UNet and VAE architecture: from the yaml (`original_config`); the config folder's unet/ and vae/ configs
  are then ignored.
- text encoder architecture, tokenizer, scheduler and the component list: from the config folder.
- Without a yaml, the UNet and VAE configs come from the folder too.

The pipeline class (SD for sd-1/sd-2, SDXL, SDXL img2img for the refiner) is the config folder's
`_class_name`, so the shipped folder of a base, or a checkpoint's own configs, decide it.

What the UNet predicts (epsilon or v) is not in the weights, and the scheduler diffusers gives comes from the
config folder alone: the shipped sd-2 folder's is the 768-v model's, wrong for SD-2 512-base. So the pipeline's
scheduler says what the caller decided (the registered model's `prediction_type`: the probe's reading of the
file, or the user's override), else what the legacy yaml says (`parameterization: "v"`), else the folder's.

A checkpoint may embed its own configs (the tiny test models do: their architectures are not the real ones,
so no stock yaml describes them). `diffusers_config_dir` turns those into a config folder; such a folder is
then the whole truth about the architecture and any yaml is ignored.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.fileio import publish_folder
from server.models.libraries import quiet_ml_libraries
from server.models.tiny import CKPT_CONFIG_KEY, MODEL_INDEX, SAFETENSORS_CONFIG_KEY
from server.models.tiny_tokenizer import write_tokenizer

if TYPE_CHECKING:
    import torch

# Marks a config folder built from embedded configs: it describes the checkpoint exactly.
EMBEDDED_MARKER = "imagegraph_embedded.json"

# The pipeline each base loads as.
PIPELINE_CLASS_BY_BASE = {
    "sd-1": "StableDiffusionPipeline",
    "sd-2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",
}

_NONE = [None, None]
_SD_PARTS: dict[str, Any] = {
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
_SDXL_PARTS: dict[str, Any] = {
    **_SD_PARTS,
    "feature_extractor": _NONE,
    "image_encoder": _NONE,
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
}
# The model_index of every tiny model (what each pipeline's save_pretrained writes, `_`-keys aside). An embedded
# model_index names the classes diffusers imports and instantiates, so it must be one of these exactly, and
# the config folder gets our copy, not the file's.
EMBEDDED_MODEL_INDEXES: dict[str, dict[str, Any]] = {
    "sd-1": MODEL_INDEX,
    # SD-2's is what save_pretrained writes: SD-1's plus the (absent) IP-Adapter image encoder.
    "sd-2": {**MODEL_INDEX, "image_encoder": _NONE},
    "sdxl": {
        "_class_name": "StableDiffusionXLPipeline",
        **_SDXL_PARTS,
        "force_zeros_for_empty_prompt": True,
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
    },
    "sdxl-refiner": {
        "_class_name": "StableDiffusionXLImg2ImgPipeline",
        **_SDXL_PARTS,
        "force_zeros_for_empty_prompt": False,
        "requires_aesthetics_score": True,
        "text_encoder": _NONE,
        "tokenizer": _NONE,
    },
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
    embedded configs are malformed or describe anything but one of the tiny models' pipelines
    (`EMBEDDED_MODEL_INDEXES`).
    """
    text = read_embedded_config(checkpoint)
    if text is None:
        return None
    target = Path(cache_dir) / hashlib.sha256(text.encode("utf-8")).hexdigest()
    if target.is_dir():
        return target
    index, configs = _validated(text)
    with publish_folder(target) as tmp:
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        for name in _components(index):
            if name.startswith("tokenizer"):
                tok = configs[name]
                write_tokenizer(tmp / name, tok["vocab"], tok["merges"], tok["config"])
                continue
            rel = "scheduler/scheduler_config.json" if name == "scheduler" else f"{name}/config.json"
            (tmp / name).mkdir()
            (tmp / rel).write_text(json.dumps(configs[name], indent=2, sort_keys=True) + "\n")
        (tmp / EMBEDDED_MARKER).write_text(json.dumps({"source": "embedded"}) + "\n")
    return target


def _components(index: dict[str, Any]) -> list[str]:
    """The parts a model_index has (named with a class, not [null, null])."""
    return sorted(k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0] is not None)


def _public(index: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in index.items() if not k.startswith("_")}


def _validated(text: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Our copy of the embedded model_index, and the embedded configs, checked: they come from an untrusted
    file and name classes to import."""
    try:
        configs = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"embedded diffusers config is not JSON: {e}") from e
    if not isinstance(configs, dict):
        raise ValueError("embedded diffusers config is not a JSON object")
    embedded = configs.get("model_index")
    public = _public(embedded) if isinstance(embedded, dict) else None
    index = next((dict(i) for i in EMBEDDED_MODEL_INDEXES.values() if _public(i) == public), None)
    if index is None:
        raise ValueError(
            "embedded diffusers config is not one of the tiny models' pipelines "
            "(an SD-1/SD-2 StableDiffusionPipeline, a StableDiffusionXLPipeline or a StableDiffusionXLImg2ImgPipeline)"
        )
    for name in _components(index):
        if not isinstance(configs.get(name), dict):
            raise ValueError(f"embedded diffusers config lacks {name!r}")
        if name.startswith("tokenizer"):
            _check_tokenizer(name, configs[name])
        else:
            configs[name].pop("auto_map", None)  # remote-code hooks have no business here
    return index, configs


def _check_tokenizer(name: str, tok: dict[str, Any]) -> None:
    if not (
        isinstance(tok.get("vocab"), dict)
        and all(isinstance(k, str) and isinstance(v, int) for k, v in tok["vocab"].items())
        and isinstance(tok.get("merges"), list)
        and all(isinstance(m, str) and "\n" not in m for m in tok["merges"])
        and isinstance(tok.get("config"), dict)
    ):
        raise ValueError(f"embedded diffusers config has a malformed {name}")
    tok["config"].pop("auto_map", None)
    if tok["config"].get("tokenizer_class", "CLIPTokenizer") != "CLIPTokenizer":
        raise ValueError(f"embedded diffusers config: {name} is not a CLIPTokenizer")


def pipeline_class_name(config_dir: Path) -> str:
    """The pipeline a config folder describes (its model_index `_class_name`), one of PIPELINE_CLASS_BY_BASE's."""
    try:
        index = json.loads((Path(config_dir) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{config_dir} has no readable model_index.json: {exc}") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    if name not in PIPELINE_CLASS_BY_BASE.values():
        raise ValueError(f"{config_dir} describes a {name!r}, not a Stable Diffusion (XL) pipeline")
    return str(name)


def load_pipeline_from_single_file(
    checkpoint: Path,
    original_config: Path | None,
    config_dir: Path,
    dtype: torch.dtype | None = None,
    *,
    base: str | None = None,
    prediction_type: str | None = None,
) -> Any:
    """The diffusers pipeline of one `.safetensors`/`.ckpt` file, without touching the network:
    StableDiffusionPipeline (sd-1, sd-2), StableDiffusionXLPipeline (sdxl) or StableDiffusionXLImg2ImgPipeline
    (sdxl-refiner), as `config_dir` says; `base`, when given, must agree with it.

    `config_dir`: a diffusers config folder (json/txt only) - one of `diffusers_config_dir` or the
    server's shipped folder for the base model. `original_config`: the legacy yaml that gives the UNet
    and VAE architecture (e.g. `v1-inpainting-inference.yaml` for a 9-channel UNet); ignored when
    `config_dir` came from the checkpoint's embedded configs, which are exact where a stock yaml is not.
    `prediction_type`: what the UNet predicts, for the scheduler; None reads it from the yaml, else keeps the
    folder's. The safety checker is never loaded.
    """
    quiet_ml_libraries()
    import diffusers

    class_name = pipeline_class_name(config_dir)
    if base is not None and PIPELINE_CLASS_BY_BASE.get(base) != class_name:
        raise ValueError(f"{config_dir} describes a {class_name}, not the pipeline of {base}")
    kwargs: dict[str, Any] = {}
    if original_config is not None and not (Path(config_dir) / EMBEDDED_MARKER).exists():
        kwargs["original_config"] = str(original_config)
    if class_name == "StableDiffusionPipeline":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    # diffusers 0.42 reads non-safetensors files with torch.load(weights_only=True)
    # (diffusers.models.model_loading_utils.load_state_dict), so a .ckpt is never fully unpickled;
    # tests/models/test_tiny.py checks that a pickle carrying code is refused.
    pipe = getattr(diffusers, class_name).from_single_file(
        str(checkpoint),
        config=str(config_dir),
        local_files_only=True,
        torch_dtype=dtype,
        **kwargs,
    )
    prediction_type = prediction_type or yaml_prediction_type(kwargs.get("original_config"))
    if prediction_type and pipe.scheduler.config.get("prediction_type") != prediction_type:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=prediction_type)
    return pipe


def yaml_prediction_type(original_config: str | Path | None) -> str | None:
    """What a legacy yaml says the UNet predicts: LDM's `parameterization` ("eps" unless it says "v"), SGM's
    denoiser scaling (`EpsScaling` / `VScaling`); None when there is no yaml or it does not say."""
    if original_config is None:
        return None
    import yaml

    try:
        document = yaml.safe_load(Path(original_config).read_text(encoding="utf-8"))
        params = document["model"]["params"]
        target = str(document["model"].get("target", ""))
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None
    if not isinstance(params, dict):
        return None
    if target.startswith("ldm."):
        return "v_prediction" if params.get("parameterization") == "v" else "epsilon"
    try:
        scaling = str(params["denoiser_config"]["params"]["scaling_config"]["target"])
    except (KeyError, TypeError):
        return None
    return {"EpsScaling": "epsilon", "VScaling": "v_prediction"}.get(scaling.rpartition(".")[2])
