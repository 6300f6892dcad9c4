"""The tiny SD-2, SDXL and SDXL-refiner models: every format is recognised as its base, loads offline through
diffusers' own single-file loader with every weight intact, and draws the pixels its diffusers folder draws."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/huggingface_hub read it

import json
from pathlib import Path
from typing import Any

import pytest

from server.models import probe, shipped
from tests.models.conftest import PIPELINE_OF_BASE, SUFFIX, TINY_BASES, generate, pipeline_class

pytestmark = pytest.mark.timeout(180)

BASES = ("sd-1", *TINY_BASES)
PARTS = ("unet", "vae", "text_encoder", "text_encoder_2")
TOKENIZERS = ("tokenizer", "tokenizer_2")
PROMPT = "a lighthouse at dusk, highly detailed oil painting"


@pytest.fixture(scope="module")
def folder_pipes(tiny_base_files) -> dict[str, Any]:
    """base -> diffusers' pipeline loaded from the tiny diffusers folder (the reference), built on first use."""

    class Pipes(dict):
        def __missing__(self, base: str) -> Any:
            folder = tiny_base_files[base, "diffusers"]
            self[base] = pipeline_class(base).from_pretrained(folder, local_files_only=True)
            return self[base]

    return Pipes()


def single_file_pipe(path: Path, cache: Path) -> Any:
    """The pipeline as the server loads a registered checkpoint: the embedded configs, and the stock yaml
    the probe names for its base (which the embedded configs must override)."""
    from server.models.single_file import diffusers_config_dir, load_pipeline_from_single_file

    config_dir = diffusers_config_dir(path, cache)
    assert config_dir is not None, "a tiny checkpoint carries its own diffusers configs"
    yaml = shipped.legacy_config(probe.probe(path).config or "")
    assert yaml is not None
    return load_pipeline_from_single_file(path, yaml, config_dir, None)


@pytest.mark.parametrize("fmt", list(SUFFIX))
@pytest.mark.parametrize("base", BASES)
def test_every_base_in_every_format_probes_as_that_base(tiny_base_files, base: str, fmt: str) -> None:
    result = probe.probe(tiny_base_files[base, fmt])
    assert (result.base_model, result.model_type, result.variant) == (base, "main", "normal")
    assert result.model_format == ("diffusers" if fmt == "diffusers" else "checkpoint")
    # SD-2's tiny model is a 768-v style one; the probe reads that from its scheduler config, not its name.
    assert result.prediction_type == ("v_prediction" if base == "sd-2" else "epsilon")


@pytest.mark.parametrize("base", TINY_BASES)
def test_diffusers_folder_is_what_save_pretrained_writes(tiny_base_files, folder_pipes, base: str) -> None:
    folder = tiny_base_files[base, "diffusers"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == PIPELINE_OF_BASE[base] and "_diffusers_version" in index
    pipe = folder_pipes[base]
    assert (pipe.text_encoder is None) == (base == "sdxl-refiner")
    assert (getattr(pipe, "text_encoder_2", None) is None) == (base == "sd-2")
    assert pipe.vae_scale_factor == 8
    image = generate(pipe, base)
    assert image.shape == (64, 64, 3) and image.std() > 0.02, "the tiny model drew a flat image"


def test_sdxl_encoders_differ_in_width_as_clip_l_and_bigg_do(folder_pipes) -> None:
    # diffusers' single-file loader tells CLIP-L from bigG by width alone; equal widths would load the wrong one.
    pipe = folder_pipes["sdxl"]
    widths = (pipe.text_encoder.config.hidden_size, pipe.text_encoder_2.config.hidden_size)
    assert widths[0] < widths[1]
    assert pipe.unet.config.cross_attention_dim == sum(widths)
    assert folder_pipes["sdxl-refiner"].unet.config.cross_attention_dim == widths[1]


@pytest.mark.parametrize("fmt", ["checkpoint", "ckpt"])
@pytest.mark.parametrize("base", TINY_BASES)
def test_single_file_loads_offline_with_every_weight_and_pixel(
    tiny_base_files, folder_pipes, tmp_path: Path, base: str, fmt: str
) -> None:
    import torch

    want = folder_pipes[base]
    got = single_file_pipe(tiny_base_files[base, fmt], tmp_path / "configs")
    assert type(got).__name__ == PIPELINE_OF_BASE[base]
    for part in PARTS:
        reference, loaded = getattr(want, part, None), getattr(got, part, None)
        assert (reference is None) == (loaded is None), f"{part}: present in only one of folder and file"
        if reference is None:
            continue
        assert type(loaded) is type(reference)
        a, b = reference.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys(), f"{part}: other parameter names after the single-file round trip"
        changed = [name for name, tensor in a.items() if not torch.equal(tensor, b[name])]
        assert not changed, f"{part}: {len(changed)} tensors changed in the round trip, e.g. {changed[:2]}"
    for name in TOKENIZERS:
        reference, loaded = getattr(want, name, None), getattr(got, name, None)
        assert (reference is None) == (loaded is None)
        if reference is not None:
            assert loaded(PROMPT).input_ids == reference(PROMPT).input_ids
            assert loaded.model_max_length == 77
    assert dict(got.scheduler.config) == dict(want.scheduler.config)
    assert (generate(got, base) == generate(want, base)).all(), f"the {fmt} draws other pixels than the folder"


def _files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("base", TINY_BASES)
def test_same_seed_same_bytes(tiny_base_files, tmp_path: Path, base: str) -> None:
    from server.models.tiny import write_tiny_model
    from server.models.tiny_sdxl import write_tiny_model_of_base

    again = write_tiny_model(tmp_path / "again.safetensors", "checkpoint", base=base)
    assert again.read_bytes() == tiny_base_files[base, "checkpoint"].read_bytes()
    assert tiny_base_files[base, "checkpoint"].stat().st_size < 16 * 1024 * 1024
    # tiny_sdxl's folder writer and write_tiny_model write the same folder.
    folder = write_tiny_model_of_base(tmp_path / "folder", base)
    assert _files_of(folder) == _files_of(tiny_base_files[base, "diffusers"])


def _embedded(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        return json.loads(f.metadata()["imagegraph.diffusers_config"])


def _with_configs(path: Path, configs: dict[str, Any]) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, path, metadata={"imagegraph.diffusers_config": json.dumps(configs)})
    return path


@pytest.mark.parametrize(
    ("base", "part", "spec"),
    [
        ("sdxl", "text_encoder_2", ["os", "system"]),
        ("sdxl", "unet", ["diffusers", "UNet2DModel"]),
        # A refiner's index with a first text encoder is no pipeline the tiny writer makes.
        ("sdxl-refiner", "text_encoder", ["transformers", "CLIPTextModel"]),
        ("sd-2", "image_encoder", ["transformers", "CLIPVisionModelWithProjection"]),
    ],
)
def test_embedded_configs_naming_other_classes_are_refused(
    tiny_base_files, tmp_path: Path, base: str, part: str, spec: list[str]
) -> None:
    from server.models.single_file import diffusers_config_dir

    configs = _embedded(tiny_base_files[base, "checkpoint"])
    configs["model_index"][part] = spec
    with pytest.raises(ValueError, match="not one of the tiny models' pipelines"):
        diffusers_config_dir(_with_configs(tmp_path / "evil.safetensors", configs), tmp_path / "cache")


def test_embedded_tokenizer_of_another_class_is_refused(tiny_base_files, tmp_path: Path) -> None:
    from server.models.single_file import diffusers_config_dir

    configs = _embedded(tiny_base_files["sdxl", "checkpoint"])
    configs["tokenizer_2"]["config"]["tokenizer_class"] = "LlamaTokenizer"
    with pytest.raises(ValueError, match="tokenizer_2 is not a CLIPTokenizer"):
        diffusers_config_dir(_with_configs(tmp_path / "evil.safetensors", configs), tmp_path / "cache")


def test_config_folder_gets_our_model_index_not_the_files(tiny_base_files, tmp_path: Path) -> None:
    from server.models.single_file import diffusers_config_dir, pipeline_class_name

    configs = _embedded(tiny_base_files["sdxl-refiner", "checkpoint"])
    configs["model_index"]["_class_name"] = "DiffusionPipeline"  # `_` keys are not compared: ours is written
    folder = diffusers_config_dir(_with_configs(tmp_path / "renamed.safetensors", configs), tmp_path / "cache")
    assert folder is not None and pipeline_class_name(folder) == "StableDiffusionXLImg2ImgPipeline"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [
        "scheduler",
        "text_encoder_2",
        "tokenizer_2",
        "unet",
        "vae",
    ]


def test_a_base_that_disagrees_with_the_config_folder_is_refused(tiny_base_files, tmp_path: Path) -> None:
    from server.models.single_file import diffusers_config_dir, load_pipeline_from_single_file

    path = tiny_base_files["sdxl", "checkpoint"]
    config_dir = diffusers_config_dir(path, tmp_path)
    with pytest.raises(ValueError, match="not the pipeline of sd-1"):
        load_pipeline_from_single_file(path, None, config_dir, None, base="sd-1")


class _TouchOnUnpickle:
    """Unpickling this with an unrestricted loader creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_sdxl_ckpt_with_code_is_refused_without_running_it(tiny_base_files, tmp_path: Path) -> None:
    import torch

    from server.models.single_file import diffusers_config_dir, load_pipeline_from_single_file

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    state_dict = torch.load(tiny_base_files["sdxl", "ckpt"], weights_only=True)["state_dict"]
    torch.save({"state_dict": state_dict, "payload": _TouchOnUnpickle(marker)}, evil)
    config_dir = diffusers_config_dir(tiny_base_files["sdxl", "ckpt"], tmp_path / "cache")
    with pytest.raises(probe.UnsafeFile):
        probe.probe(evil)
    with pytest.raises(Exception):  # noqa: B017 - diffusers wraps the UnpicklingError in OSError/ValueError
        load_pipeline_from_single_file(evil, None, config_dir, None)
    with pytest.raises(Exception):  # noqa: B017
        diffusers_config_dir(evil, tmp_path / "cache")
    assert not marker.exists(), "loading a .ckpt ran code from its pickle"
