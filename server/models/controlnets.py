"""Loading ControlNets: diffusers folders, and single files in either layout (the original `control_model.`
one of lllyasviel's releases, or diffusers' own names in one file, as most SDXL ControlNets ship).

A single file carries no config. Its architecture is its base's UNet's encoder half, so the config comes
from the UNet config the server ships for that base (or from a config embedded in the file, as the tiny test
ControlNets carry: their architecture is not a real one). The weights are renamed by diffusers' own
converter, then loaded strictly, so a file of another architecture fails with the names that do not fit."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from server.models.weights import read_state_dict

# Where a single-file ControlNet's embedded config lives (safetensors metadata, or a key of a pickle).
EMBEDDED_CONFIG_KEY = "imagegraph.controlnet_config"


class ControlNetLoadError(Exception):
    """The file is no ControlNet this server can build; the message says why."""


def load(path: Path, label: str, unet_config_dir: Path | None, dtype: Any) -> Any:
    """A `ControlNetModel` from a diffusers folder or a single file. `unet_config_dir` is the shipped diffusers
    config folder of the ControlNet's base (its `unet/config.json` describes a file without its own config)."""
    from server.models.libraries import quiet_ml_libraries

    quiet_ml_libraries()
    from diffusers import ControlNetModel

    if path.is_dir():
        return ControlNetModel.from_pretrained(path, local_files_only=True, torch_dtype=dtype)
    config = _embedded_config(path) or _config_from_unet(unet_config_dir, label)
    state = read_state_dict(path)
    config.setdefault("conditioning_channels", _conditioning_channels(state))
    model = ControlNetModel.from_config(config)
    converted = _diffusers_names(state, dict(model.config))
    missing, unexpected = _fit(model, converted)
    if missing or unexpected:
        raise ControlNetLoadError(
            f"{label} does not fit a {model.__class__.__name__} of its base: "
            f"{len(missing)} weights missing (e.g. {missing[:2]}), {len(unexpected)} unknown (e.g. {unexpected[:2]})"
        )
    return model.to(dtype)


def _embedded_config(path: Path) -> dict[str, Any] | None:
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(EMBEDDED_CONFIG_KEY)
        return json.loads(text) if text else None
    return None


def _config_from_unet(config_dir: Path | None, label: str) -> dict[str, Any]:
    """ControlNetModel's config from a UNet's: the arguments both take (what `ControlNetModel.from_unet`
    copies), with the ControlNet's own 4 input channels even for an inpainting UNet."""
    from diffusers import ControlNetModel

    if config_dir is None or not (config_dir / "unet" / "config.json").is_file():
        raise ControlNetLoadError(f"the server ships no UNet config for the base of {label}, so it cannot be built")
    unet = json.loads((config_dir / "unet" / "config.json").read_text(encoding="utf-8"))
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters) - {"self"}
    config = {k: v for k, v in unet.items() if k in accepted}
    config["in_channels"] = 4
    return config


def _conditioning_channels(state: dict[str, Any]) -> int:
    for name in ("control_model.input_hint_block.0.weight", "input_hint_block.0.weight"):
        if name in state:
            return int(state[name].shape[1])
    weight = state.get("controlnet_cond_embedding.conv_in.weight")
    return int(weight.shape[1]) if weight is not None else 3


def _diffusers_names(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    converted = convert_controlnet_checkpoint(state, config)
    return {k: v for k, v in converted.items() if v is not None}


def _fit(model: Any, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        return missing + wrong, unexpected
    model.load_state_dict(state, strict=True)
    return [], []
