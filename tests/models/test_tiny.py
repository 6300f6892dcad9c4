"""The tiny SD-1 model: written offline, loadable offline in all three forms, agreeing pixel for pixel."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before diffusers/huggingface_hub read it

import json
import pickle
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

CONFIGS = Path(__file__).resolve().parents[2] / "server" / "models" / "configs" / "stable-diffusion"
LEGACY_YAMLS = [
    "v1-inference.yaml",
    "v1-inpainting-inference.yaml",
    "v2-inference.yaml",
    "v2-inference-v.yaml",
    "v2-inpainting-inference.yaml",
    "sd_xl_base.yaml",
    "sd_xl_refiner.yaml",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every form of the seed-0 model, a second seed-0 build, and a seed-1 build: built once per module."""
    from server.models.tiny import write_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    return {
        "diffusers": write_tiny_model(root / "tiny", "diffusers", seed=0),
        "checkpoint": write_tiny_model(root / "tiny.safetensors", "checkpoint", seed=0),
        "ckpt": write_tiny_model(root / "tiny.ckpt", "ckpt", seed=0),
        "diffusers_again": write_tiny_model(root / "again" / "tiny", "diffusers", seed=0),
        "checkpoint_again": write_tiny_model(root / "again" / "tiny.safetensors", "checkpoint", seed=0),
        "ckpt_again": write_tiny_model(root / "again" / "tiny.ckpt", "ckpt", seed=0),
        "checkpoint_seed1": write_tiny_model(root / "seed1.safetensors", "checkpoint", seed=1),
        "cache": root / "config-cache",
    }


@pytest.fixture(scope="module")
def folder_pipe(models: dict[str, Path]):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(models["diffusers"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def single_file_pipe(models: dict[str, Path], key: str):
    from server.models.single_file import diffusers_config_dir, load_pipeline_from_single_file

    config_dir = diffusers_config_dir(models[key], models["cache"])
    assert config_dir is not None, "the tiny checkpoint should carry its own diffusers configs"
    # The stock SD-1 yaml, as a registry entry for an sd-1 checkpoint would name: the embedded configs win.
    pipe = load_pipeline_from_single_file(models[key], CONFIGS / "v1-inference.yaml", config_dir, None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(pipe, seed: int = 42):
    import torch

    generator = torch.Generator().manual_seed(seed)
    out = pipe(
        "a lighthouse at dusk",
        num_inference_steps=2,
        height=64,
        width=64,
        generator=generator,
        output_type="np",
    )
    return out.images[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_diffusers_folder_is_a_complete_pipeline(models: dict[str, Path]) -> None:
    folder = models["diffusers"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None] and index["feature_extractor"] == [None, None]
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / part).is_dir(), f"{part}/ missing from the diffusers folder"


def test_folder_generates_a_non_blank_image_deterministically(folder_pipe) -> None:
    image = generate(folder_pipe)
    assert image.shape == (64, 64, 3)
    assert image.std() > 0.02, "the tiny model produced a flat (blank) image"
    assert (generate(folder_pipe) == image).all(), "same seed gave different pixels"
    assert not (generate(folder_pipe, seed=7) == image).all(), "a different seed gave the same pixels"


def test_tokenizer_and_scheduler_are_sd1_like(folder_pipe) -> None:
    tokenizer = folder_pipe.tokenizer
    assert tokenizer.model_max_length == 77, "transformers 5 defaults to ~1e30 without tokenizer_config"
    ids = tokenizer("a lighthouse at dusk").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert len(ids) < len("a lighthouse at dusk") + 2, "learned merges should make tokens longer than a byte"
    assert max(tokenizer.get_vocab().values()) < folder_pipe.text_encoder.config.vocab_size
    assert folder_pipe.text_encoder.config.eos_token_id == tokenizer.eos_token_id
    long_ids = tokenizer("fox " * 200, truncation=True).input_ids
    assert len(long_ids) == 77
    scheduler = folder_pipe.scheduler.config
    assert type(folder_pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert (scheduler.beta_schedule, scheduler.beta_start, scheduler.beta_end) == (
        "scaled_linear",
        0.00085,
        0.012,
    )
    assert folder_pipe.vae_scale_factor == 8


def test_checkpoint_is_in_ldm_key_layout(models: dict[str, Path]) -> None:
    from safetensors import safe_open

    with safe_open(models["checkpoint"], framework="pt") as f:
        keys = set(f.keys())
        metadata = f.metadata()
    # Keys a real SD-1.5 file has, in the same layout.
    for key in (
        "model.diffusion_model.input_blocks.0.0.weight",
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "model.diffusion_model.middle_block.1.proj_in.weight",
        "model.diffusion_model.output_blocks.2.1.conv.weight",
        "model.diffusion_model.out.2.weight",
        "first_stage_model.encoder.down.0.block.0.norm1.weight",
        "first_stage_model.decoder.up.3.upsample.conv.weight",
        "first_stage_model.encoder.mid.attn_1.q.weight",
        "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
        "cond_stage_model.transformer.text_model.final_layer_norm.weight",
        "alphas_cumprod",
    ):
        assert key in keys, f"{key} missing from the LDM checkpoint"
    # Besides the three models, only LDM's noise-schedule buffers, as in real files.
    others = {
        k for k in keys if not k.startswith(("model.diffusion_model.", "first_stage_model.", "cond_stage_model."))
    }
    assert {"betas", "alphas_cumprod", "alphas_cumprod_prev"} <= others and len(others) == 12
    embedded = json.loads(metadata["imagegraph.diffusers_config"])
    assert set(embedded) == {"model_index", "unet", "vae", "text_encoder", "scheduler", "tokenizer"}
    assert set(embedded["tokenizer"]) == {"vocab", "merges", "config"}


@pytest.mark.parametrize("key", ["checkpoint", "ckpt"])
def test_single_file_round_trips_every_tensor_and_pixel(models: dict[str, Path], folder_pipe, key: str) -> None:
    import torch

    pipe = single_file_pipe(models, key)
    for part in ("unet", "vae", "text_encoder"):
        want, got = getattr(folder_pipe, part).state_dict(), getattr(pipe, part).state_dict()
        assert want.keys() == got.keys(), f"{part}: different parameter names after the LDM round trip"
        for name, tensor in want.items():
            assert torch.equal(tensor, got[name]), f"{part}.{name} changed in the LDM round trip"
    assert pipe.unet.config.sample_size == folder_pipe.unet.config.sample_size
    assert pipe.safety_checker is None
    assert (generate(pipe) == generate(folder_pipe)).all(), f"{key} gives other pixels than the folder"


def test_config_dir_is_materialised_once_per_config(models: dict[str, Path]) -> None:
    from server.models.single_file import diffusers_config_dir

    first = diffusers_config_dir(models["checkpoint"], models["cache"])
    assert first is not None
    assert diffusers_config_dir(models["ckpt"], models["cache"]) == first, "same configs, same folder"
    assert not list(first.rglob("*.safetensors")), "a config folder holds no weights"
    assert not [p for p in models["cache"].iterdir() if p.name.startswith(".")], "temp folder left behind"


def test_same_seed_same_bytes_other_seed_other_weights(models: dict[str, Path]) -> None:
    import torch
    from safetensors.torch import load_file

    assert files_of(models["diffusers"]) == files_of(models["diffusers_again"])
    assert models["checkpoint"].read_bytes() == models["checkpoint_again"].read_bytes()
    ckpts = [torch.load(models[k], weights_only=True)["state_dict"] for k in ("ckpt", "ckpt_again")]
    assert ckpts[0].keys() == ckpts[1].keys()
    assert all(torch.equal(ckpts[0][k], ckpts[1][k]) for k in ckpts[0])
    seed0, seed1 = load_file(models["checkpoint"]), load_file(models["checkpoint_seed1"])
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert not torch.equal(seed0[key], seed1[key]), "seed 1 gave the same weights as seed 0"


def test_outputs_are_small(models: dict[str, Path]) -> None:
    limit = 10 * 1024 * 1024
    assert sum(len(b) for b in files_of(models["diffusers"]).values()) < limit
    assert models["checkpoint"].stat().st_size < limit
    assert models["ckpt"].stat().st_size < limit


def test_refuses_to_overwrite(models: dict[str, Path]) -> None:
    from server.models.tiny import write_tiny_model

    with pytest.raises(FileExistsError):
        write_tiny_model(models["checkpoint"], "checkpoint")


def test_checkpoint_without_embedded_configs_gives_none(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from server.models.single_file import diffusers_config_dir

    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(1)}, plain)
    assert diffusers_config_dir(plain, tmp_path / "cache") is None


def test_embedded_configs_naming_other_classes_are_refused(models: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    from server.models.single_file import diffusers_config_dir

    with safe_open(models["checkpoint"], framework="pt") as f:
        embedded = json.loads(f.metadata()["imagegraph.diffusers_config"])
    embedded["model_index"]["unet"] = ["os", "system"]
    evil = tmp_path / "evil.safetensors"
    save_file({"x": torch.zeros(1)}, evil, metadata={"imagegraph.diffusers_config": json.dumps(embedded)})
    with pytest.raises(ValueError, match="StableDiffusionPipeline"):
        diffusers_config_dir(evil, tmp_path / "cache")


class _TouchOnUnpickle:
    """Unpickling this with an unrestricted loader creates a file: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_ckpt_with_code_is_refused_without_running_it(models: dict[str, Path], tmp_path: Path) -> None:
    import torch

    from server.models.single_file import diffusers_config_dir, load_pipeline_from_single_file

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    state_dict = torch.load(models["ckpt"], weights_only=True)["state_dict"]
    torch.save({"state_dict": state_dict, "payload": _TouchOnUnpickle(marker)}, evil)
    config_dir = diffusers_config_dir(models["ckpt"], models["cache"])
    # diffusers reports the weights-only refusal as an OSError; torch's UnpicklingError is in its chain.
    with pytest.raises(OSError, match="Unable to load weights from checkpoint file") as refused:
        load_pipeline_from_single_file(evil, None, config_dir, None)
    chain, error = [], refused.value.__context__
    while error is not None:
        chain.append(error)
        error = error.__context__
    assert any(isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e) for e in chain), chain
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        diffusers_config_dir(evil, tmp_path / "cache")
    assert not marker.exists(), "loading a .ckpt ran code from its pickle"


@pytest.mark.parametrize("name", LEGACY_YAMLS)
def test_legacy_yaml_is_accepted_by_diffusers(name: str) -> None:
    import torch
    import yaml
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        create_unet_diffusers_config_from_ldm,
        create_vae_diffusers_config_from_ldm,
    )

    original = yaml.safe_load((CONFIGS / name).read_text())
    unet_config = create_unet_diffusers_config_from_ldm(original, {})
    vae_config = create_vae_diffusers_config_from_ldm(original, {})
    with torch.device("meta"):  # architecture only, no memory
        unet = UNet2DConditionModel.from_config(unet_config)
        AutoencoderKL.from_config(vae_config)
    params = sum(p.numel() for p in unet.parameters())
    # The published UNet sizes: SD-1 859.5 M, SD-2 865.9 M, SDXL 2567 M, SDXL refiner 2260 M.
    expected = {"v1": 859.5e6, "v2": 865.9e6, "sd_xl_base": 2567.5e6, "sd_xl_refiner": 2259.5e6}
    family = next(k for k in expected if name.startswith(k))
    assert abs(params - expected[family]) < 0.1e6, f"{name}: UNet has {params} parameters"
    assert unet_config["in_channels"] == (9 if "inpainting" in name else 4)


def test_diffusers_inpaint_pipeline_loads_the_folder(models: dict[str, Path]) -> None:
    """The folder is what save_pretrained writes (`_diffusers_version` included), which the inpaint pipeline
    insists on; a reference inpainting pipeline for comparisons can be loaded straight from it."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    assert "_diffusers_version" in json.loads((models["diffusers"] / "model_index.json").read_text())
    pipe = StableDiffusionInpaintPipeline.from_pretrained(models["diffusers"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    image = torch.full((1, 3, 64, 64), 0.5)
    mask = torch.zeros((1, 1, 64, 64))
    mask[..., 16:48, 16:48] = 1.0
    out = pipe(
        "a lighthouse at dusk",
        image=image,
        mask_image=mask,
        height=64,
        width=64,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(1),
        output_type="np",
    ).images[0]
    assert out.shape == (64, 64, 3) and np.isfinite(out).all()


@pytest.mark.parametrize(("base", "fmt", "name"), [("sdxl-refiner", "ckpt", "r.ckpt"), ("sd-2", "diffusers", "v")])
def test_make_tiny_model_writes_the_base_asked_for(tmp_path: Path, capsys, base: str, fmt: str, name: str) -> None:
    from server.cli import main
    from server.models.probe import probe

    out = tmp_path / name
    assert main(["make-tiny-model", str(out), "--base", base, "--format", fmt, "--seed", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert probe(out).base_model == base
