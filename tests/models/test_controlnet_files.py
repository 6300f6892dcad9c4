"""Single-file ControlNets: how the probe classifies them and that the model the server builds for a real
architecture (no embedded config) takes every weight such a file holds, under diffusers' converter's names."""

from __future__ import annotations

import json

import pytest
import torch

from server.models import controlnets, shipped
from server.models.ldm_layout import controlnet_to_ldm
from server.models.probe import probe
from server.models.tiny_adapters import write_tiny_controlnet


@pytest.mark.parametrize("base", ["sd-1", "sd-2", "sdxl"])
def test_a_real_architectures_file_fits_the_controlnet_built_from_the_shipped_unet_config(tmp_path, base):
    from diffusers import ControlNetModel

    config_dir = shipped.config_dir(base, tmp_path / "configs")
    config = controlnets._config_from_unet(config_dir, "x")
    assert config["in_channels"] == 4
    with torch.device("meta"):
        model = ControlNetModel.from_config(config)
    # What a released file holds: lllyasviel's layout for SD-1/2, diffusers' names for SDXL.
    released = model.state_dict() if base == "sdxl" else controlnet_to_ldm(model)
    renamed = controlnets._diffusers_names(released, dict(model.config))
    expected = model.state_dict()
    assert sorted(renamed) == sorted(expected)
    assert all(renamed[k].shape == expected[k].shape for k in expected)
    unet = json.loads((config_dir / "unet" / "config.json").read_text())
    assert model.config.cross_attention_dim == unet["cross_attention_dim"]


def test_the_probe_tells_single_file_controlnets_and_their_base(tmp_path):
    ldm = write_tiny_controlnet(tmp_path / "canny.safetensors", fmt="checkpoint")
    xl = write_tiny_controlnet(tmp_path / "xl.safetensors", base="sdxl", fmt="diffusers_file")
    assert (probe(ldm).model_type, probe(ldm).base_model, probe(ldm).model_format) == (
        "controlnet",
        "sd-1",
        "checkpoint",
    )
    assert (probe(xl).model_type, probe(xl).base_model) == ("controlnet", "sdxl")


def test_a_file_that_is_no_controlnet_of_its_base_fails_naming_the_weights(tmp_path):
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    # A tiny ControlNet without its embedded config: built as a real SD-1 one, none of its weights fit.
    path = tmp_path / "tiny-without-config.safetensors"
    tiny = controlnet_to_ldm(ControlNetModel.from_pretrained(write_tiny_controlnet(tmp_path / "folder")))
    save_file({k: v.contiguous() for k, v in tiny.items()}, str(path))
    config_dir = shipped.config_dir("sd-1", tmp_path / "configs")
    with pytest.raises(controlnets.ControlNetLoadError, match=r"does not fit .* weights missing"):
        controlnets.load(path, "sd-1/controlnet/tiny-without-config", config_dir, torch.float32)
