"""PUT /models/merge: alpha 0 is the first model, each algorithm follows its formula tensor by tensor,
three models add a difference, incompatible models are refused unless forced; SDXL merges both text encoders."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from starlette.testclient import TestClient

from server.models.tiny import write_tiny_model
from tests.models.conftest import API, Recorder, listed, put_model, settle, sync

UNET = "unet/diffusion_pytorch_model.safetensors"
TEXT = "text_encoder/model.safetensors"
VAE = "vae/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[int, Path]:
    """Three tiny models with different random weights (diffusers) and their checkpoints."""
    folder = tmp_path_factory.mktemp("merge-sources")
    out: dict = {}
    for seed in (0, 1, 2):
        out[seed] = write_tiny_model(folder / f"m{seed}", "diffusers", seed=seed)
        out[f"ckpt{seed}"] = write_tiny_model(folder / f"c{seed}.safetensors", "checkpoint", seed=seed)
    return out


@pytest.fixture
def registered(client: TestClient, root: Path, seeds) -> Path:
    import shutil

    for seed in (0, 1, 2):
        shutil.copytree(seeds[seed], root / "autoimport" / "main" / f"m{seed}")
        settle(root / "autoimport" / "main" / f"m{seed}")
        shutil.copyfile(seeds[f"ckpt{seed}"], root / "autoimport" / "main" / f"c{seed}.safetensors")
    sync(client)
    return root


def _merge(client: TestClient, **body):
    return client.put(f"{API}/merge/sd-1", json=body)


def _sample(tensors: dict[str, torch.Tensor]) -> list[str]:
    floats = sorted(k for k, v in tensors.items() if v.is_floating_point() and k.endswith("weight"))
    return floats[:: max(1, len(floats) // 8)]


def test_alpha_zero_is_the_first_model_tensor_for_tensor(
    client: TestClient, registered: Path, events: Recorder
) -> None:
    for interp in ("weighted_sum", "sigmoid", "inv_sigmoid"):
        response = _merge(
            client, model_names=["m0", "m1"], alpha=0.0, interp=interp, merged_model_name=f"zero-{interp}"
        )
        assert response.status_code == 200, response.text
        out = registered / response.json()["path"]
        for part in (UNET, TEXT, VAE):
            first, merged = load_file(registered / "autoimport/main/m0" / part), load_file(out / part)
            assert first.keys() == merged.keys()
            assert all(torch.equal(first[k], merged[k]) for k in first), f"{interp}: {part} differs at alpha 0"
    assert [e.added for e in events.events] == [
        [f"sd-1/main/zero-{i}"] for i in ("weighted_sum", "sigmoid", "inv_sigmoid")
    ]


@pytest.mark.parametrize(
    ("interp", "factor"),
    [
        ("weighted_sum", None),
        ("sigmoid", 0.3 * 0.3 * (3 - 2 * 0.3)),
        ("inv_sigmoid", 0.5 - math.sin(math.asin(1 - 2 * 0.3) / 3)),
    ],
)
def test_two_model_algorithms_follow_their_formulas(client: TestClient, registered: Path, interp: str, factor) -> None:
    response = _merge(client, model_names=["m0", "m1"], alpha=0.3, interp=interp)
    assert response.status_code == 200, response.text
    config = response.json()
    assert config["model_name"] == "m0+m1" and config["path"] == "models/sd-1/main/m0+m1"
    out = registered / config["path"]
    for part in (UNET, TEXT):
        a, b = load_file(registered / "autoimport/main/m0" / part), load_file(registered / "autoimport/main/m1" / part)
        merged = load_file(out / part)
        keys = [k for k in _sample(a) if not torch.equal(a[k], b[k])]  # zero-initialised biases agree anyway
        assert keys
        for key in keys:
            want = 0.7 * a[key] + 0.3 * b[key] if factor is None else a[key] + (b[key] - a[key]) * factor
            assert torch.allclose(merged[key], want, atol=1e-6), f"{interp}: {part} {key}"
            assert not torch.equal(merged[key], a[key])
    # The VAE is copied from the first model, not merged.
    assert (out / VAE).read_bytes() == (registered / "autoimport/main/m0" / VAE).read_bytes()
    # The merged model is a complete pipeline that diffusers loads.
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.from_pretrained(out, local_files_only=True)


def test_three_model_add_difference(client: TestClient, registered: Path) -> None:
    response = _merge(
        client, model_names=["m0", "m1", "m2"], alpha=0.4, interp="add_difference", merged_model_name="sum"
    )
    assert response.status_code == 200, response.text
    out = registered / response.json()["path"]
    a, b, c = (load_file(registered / f"autoimport/main/m{i}" / UNET) for i in range(3))
    merged = load_file(out / UNET)
    for key in _sample(a):
        assert torch.allclose(merged[key], a[key] + (b[key] - c[key]) * 0.4, atol=1e-6), key


def test_checkpoints_merge_into_a_checkpoint(client: TestClient, registered: Path, tmp_path: Path) -> None:
    dest = tmp_path / "merged"
    dest.mkdir()
    response = _merge(
        client, model_names=["c0", "c1"], alpha=0.5, merge_dest_directory=str(dest), merged_model_name="half"
    )
    assert response.status_code == 200, response.text
    config = response.json()
    assert (config["path"], config["model_format"], config["config"]) == (
        str(dest / "half.safetensors"),
        "checkpoint",
        "stable-diffusion/v1-inference.yaml",
    )
    a, b = (
        load_file(registered / "autoimport/main/c0.safetensors"),
        load_file(registered / "autoimport/main/c1.safetensors"),
    )
    merged = load_file(dest / "half.safetensors")
    unet_key = "model.diffusion_model.input_blocks.0.0.weight"
    assert torch.allclose(merged[unet_key], 0.5 * a[unet_key] + 0.5 * b[unet_key], atol=1e-6)
    vae_key = "first_stage_model.encoder.conv_in.weight"
    assert torch.equal(merged[vae_key], a[vae_key]), "the VAE comes from the first model"
    # The embedded configs (the tiny model's) survive, so the merge loads like its parents.
    manager = client.app.state.services.models
    assert manager.diffusers_config_dir(manager.get("sd-1", "main", "half")) is not None


def test_merge_errors(client: TestClient, registered: Path, tmp_path: Path) -> None:
    assert _merge(client, model_names=["m0", "nope"]).status_code == 404
    three = _merge(client, model_names=["m0", "m1", "m2"], interp="weighted_sum")
    assert three.status_code == 422 and "add_difference" in three.json()["detail"]
    assert _merge(client, model_names=["m0", "m1"], interp="add_difference").status_code == 422
    assert _merge(client, model_names=["m0"]).status_code == 422
    assert _merge(client, model_names=["m0", "m1"], alpha=1.5).status_code == 422
    assert _merge(client, model_names=["m0", "m0"]).status_code == 422
    mixed = _merge(client, model_names=["m0", "c1"])
    assert mixed.status_code == 400 and "all be diffusers folders or all" in mixed.json()["detail"]
    assert client.put(f"{API}/merge/sd-7", json={"model_names": ["m0", "m1"]}).status_code == 422
    assert _merge(client, model_names=["m0", "m1"], merge_dest_directory=str(tmp_path / "missing")).status_code == 404
    assert _merge(client, model_names=["m0", "m1"], merged_model_name="m2").status_code == 409
    assert {k for k in listed(client) if "+" in k} == set()


def test_incompatible_models_are_refused_unless_forced(client: TestClient, registered: Path) -> None:
    odd = registered / "autoimport" / "main" / "m1" / UNET
    tensors = load_file(odd)
    key = "conv_in.weight"
    tensors[key] = torch.zeros(32, 9, 3, 3)  # an inpainting-style first layer
    save_file(tensors, odd)
    sync(client)
    refused = _merge(client, model_names=["m0", "m1"], merged_model_name="forced")
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert f"unet tensor `{key}` is [32, 4, 3, 3] in `m0` but [32, 9, 3, 3] in `m1`" in detail and "force" in detail
    assert not (registered / "models" / "sd-1" / "main" / "forced").exists()
    forced = _merge(client, model_names=["m0", "m1"], merged_model_name="forced", force=True)
    assert forced.status_code == 200, forced.text
    merged = load_file(registered / forced.json()["path"] / UNET)
    first = load_file(registered / "autoimport/main/m0" / UNET)
    assert torch.equal(merged[key], first[key]), "a mismatched tensor comes from the first model"
    other = "conv_out.weight"
    assert torch.allclose(merged[other], 0.5 * first[other] + 0.5 * tensors[other], atol=1e-6)


@pytest.fixture(scope="module")
def sdxl_seeds(tmp_path_factory) -> dict[str, Path]:
    """Two tiny SDXL models (seeds 0 and 1), as folders and as checkpoints."""
    folder = tmp_path_factory.mktemp("merge-sdxl")
    out = {}
    for seed in (0, 1):
        out[f"x{seed}"] = write_tiny_model(folder / f"x{seed}", "diffusers", seed=seed, base="sdxl")
        out[f"xc{seed}"] = write_tiny_model(folder / f"xc{seed}.safetensors", "checkpoint", seed=seed, base="sdxl")
    return out


def test_sdxl_folders_merge_both_text_encoders(client: TestClient, root: Path, sdxl_seeds) -> None:
    import shutil

    from diffusers import StableDiffusionXLPipeline

    from tests.models.conftest import generate

    for name in ("x0", "x1"):
        shutil.copytree(sdxl_seeds[name], root / "autoimport" / "main" / name)
        settle(root / "autoimport" / "main" / name)
    sync(client)
    response = client.put(f"{API}/merge/sdxl", json={"model_names": ["x0", "x1"], "alpha": 0.3})
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "models/sdxl/main/x0+x1"
    out = root / response.json()["path"]
    for part in (UNET, TEXT, "text_encoder_2/model.safetensors"):
        a, b = (load_file(sdxl_seeds[name] / part) for name in ("x0", "x1"))
        merged = load_file(out / part)
        keys = [k for k in _sample(a) if not torch.equal(a[k], b[k])]
        assert keys, part
        for key in keys:
            assert torch.allclose(merged[key], 0.7 * a[key] + 0.3 * b[key], atol=1e-6), f"{part} {key}"
    assert (out / VAE).read_bytes() == (sdxl_seeds["x0"] / VAE).read_bytes()
    pipe = StableDiffusionXLPipeline.from_pretrained(out, local_files_only=True)
    assert generate(pipe, "sdxl").std() > 0.02


def test_sdxl_checkpoints_merge_into_a_loadable_checkpoint(client: TestClient, root: Path, sdxl_seeds) -> None:
    from tests.models.conftest import generate

    for name in ("xc0", "xc1"):
        put_model(sdxl_seeds[name], root / "autoimport" / "main" / f"{name}.safetensors")
    sync(client)
    response = client.put(
        f"{API}/merge/sdxl", json={"model_names": ["xc0", "xc1"], "alpha": 0.5, "merged_model_name": "half"}
    )
    assert response.status_code == 200, response.text
    config = response.json()
    assert (config["model_format"], config["config"]) == ("checkpoint", "stable-diffusion/sd_xl_base.yaml")
    a, b = load_file(sdxl_seeds["xc0"]), load_file(sdxl_seeds["xc1"])
    merged = load_file(root / config["path"])
    for key in (
        "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight",
        "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight",
        "model.diffusion_model.label_emb.0.0.weight",
    ):
        assert torch.allclose(merged[key], 0.5 * a[key] + 0.5 * b[key], atol=1e-6), key
    vae_key = "first_stage_model.encoder.conv_in.weight"
    assert torch.equal(merged[vae_key], a[vae_key]), "the VAE comes from the first model"
    # The embedded configs survive, so the merge loads offline like its parents.
    from server.models.single_file import load_pipeline_from_single_file

    manager = client.app.state.services.models
    half = manager.get("sdxl", "main", "half")
    pipe = load_pipeline_from_single_file(
        root / config["path"], manager.legacy_config_path(half), manager.diffusers_config_dir(half), None
    )
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    assert generate(pipe, "sdxl").std() > 0.02
