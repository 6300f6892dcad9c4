"""PUT /models/convert: a checkpoint of any base becomes a diffusers folder (offline) that generates the same
pixels, and the entry points at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from server.models import shipped
from tests.models.conftest import (
    API,
    SUFFIX,
    Recorder,
    generate,
    listed,
    pipeline_class,
    put_model,
    sync,
)


def _generate(pipe, seed: int = 42):
    import torch

    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(
        "a lighthouse at dusk", num_inference_steps=2, height=64, width=64, generator=generator, output_type="np"
    ).images[0]


@pytest.mark.parametrize("fmt", ["checkpoint", "ckpt"])
def test_convert_to_a_custom_destination_generates_the_same_pixels(
    client: TestClient, root: Path, tiny_model_files, tmp_path: Path, events: Recorder, fmt: str
) -> None:
    from diffusers import StableDiffusionPipeline

    from server.models.single_file import load_pipeline_from_single_file

    suffix = ".safetensors" if fmt == "checkpoint" else ".ckpt"
    checkpoint = put_model(tiny_model_files[fmt], root / "autoimport" / "main" / f"tiny{suffix}")
    sync(client)
    dest = tmp_path / "converted"
    dest.mkdir()
    events.clear()
    response = client.put(f"{API}/convert/sd-1/main/tiny", params={"convert_dest_directory": str(dest)})
    assert response.status_code == 200, response.text
    config = response.json()
    assert (config["path"], config["model_format"], config["config"]) == (str(dest / "tiny"), "diffusers", None)
    assert listed(client)["sd-1/main/tiny"] == config
    assert [e.updated for e in events.events] == [["sd-1/main/tiny"]]
    assert yaml.safe_load((root / "configs" / "models.yaml").read_text())["sd-1/main/tiny"]["format"] == "diffusers"
    assert checkpoint.is_file(), "a checkpoint outside the models folder must stay"
    assert not list((root / "models" / ".convert-tmp").iterdir()), "temporary folder left behind"

    manager = client.app.state.services.models
    original = {"config": "stable-diffusion/v1-inference.yaml", "model_format": "checkpoint", "model_type": "main"}
    from msgspec.structs import replace

    as_checkpoint = replace(manager.get("sd-1", "main", "tiny"), path=str(checkpoint), **original)
    from_checkpoint = load_pipeline_from_single_file(
        checkpoint, manager.legacy_config_path(as_checkpoint), manager.diffusers_config_dir(as_checkpoint), None
    )
    from_folder = StableDiffusionPipeline.from_pretrained(dest / "tiny", local_files_only=True)
    image = _generate(from_folder)
    assert image.std() > 0.02
    assert (image == _generate(from_checkpoint)).all(), "the converted model generates other pixels"


def test_convert_into_the_models_folder_replaces_an_owned_checkpoint(
    client: TestClient, root: Path, tiny_model_files
) -> None:
    owned = put_model(tiny_model_files["checkpoint"], root / "models" / "sd-1" / "main" / "mine.safetensors")
    sync(client)
    response = client.put(f"{API}/convert/sd-1/main/mine")
    assert response.status_code == 200, response.text
    assert response.json()["path"] == "models/sd-1/main/mine"
    assert (root / "models" / "sd-1" / "main" / "mine" / "unet").is_dir()
    assert not owned.exists(), "a checkpoint inside the models folder is replaced by its conversion"
    assert sync(client) == {"added": [], "removed": [], "updated": []}


def test_convert_errors(client: TestClient, root: Path, tiny_model_files, tmp_path: Path) -> None:
    put_model(tiny_model_files["diffusers"], root / "autoimport" / "main" / "folder")
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "ckpt.safetensors")
    sync(client)
    not_a_checkpoint = client.put(f"{API}/convert/sd-1/main/folder")
    assert not_a_checkpoint.status_code == 400 and "only main checkpoints convert" in not_a_checkpoint.json()["detail"]
    assert client.put(f"{API}/convert/sd-1/main/nothing").status_code == 404
    no_dest = client.put(f"{API}/convert/sd-1/main/ckpt", params={"convert_dest_directory": str(tmp_path / "no")})
    assert no_dest.status_code == 404
    relative = client.put(f"{API}/convert/sd-1/main/ckpt", params={"convert_dest_directory": "relative/dir"})
    assert relative.status_code == 422
    (tmp_path / "taken" / "ckpt").mkdir(parents=True)
    taken = client.put(f"{API}/convert/sd-1/main/ckpt", params={"convert_dest_directory": str(tmp_path / "taken")})
    assert taken.status_code == 409
    assert listed(client)["sd-1/main/ckpt"]["model_format"] == "checkpoint"


def test_real_sd1_checkpoints_get_the_shipped_config_folder(client: TestClient, root: Path, tmp_path: Path) -> None:
    """A checkpoint without embedded configs (every real one) loads with the server's sd-1 folder, whose
    tokenizer is CLIP's own."""
    from transformers import CLIPTokenizer

    from tests.models.conftest import main_checkpoint_shapes, write_safetensors

    path = write_safetensors(root / "autoimport" / "main" / "real.safetensors", main_checkpoint_shapes(768))
    sync(client)
    manager = client.app.state.services.models
    config = manager.get("sd-1", "main", "real")
    folder = manager.diffusers_config_dir(config)
    assert folder is not None and folder.is_relative_to(root / "models" / ".cache")
    assert manager.legacy_config_path(config) == shipped.CONFIGS_DIR / "stable-diffusion" / "v1-inference.yaml"
    assert path.is_file()
    tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize(
    ("base", "fmt"), [("sdxl", "checkpoint"), ("sdxl", "ckpt"), ("sdxl-refiner", "checkpoint"), ("sd-2", "ckpt")]
)
def test_a_single_file_of_each_base_imports_loads_and_converts_offline(
    client: TestClient, root: Path, tiny_base_files, tmp_path: Path, base: str, fmt: str
) -> None:
    """Dropped into autoimport/, the tiny file is registered under its base; the loader gives every part the
    pipeline has with the weights of the folder it was written from; the conversion is a folder diffusers'
    own pipeline loads and draws the original folder's pixels with."""
    import torch

    from server.models.loader import ModelLoadError
    from server.models.schema import ModelIdentifier

    put_model(tiny_base_files[base, fmt], root / "autoimport" / "main" / f"tiny{SUFFIX[fmt]}")
    sync(client)
    entry = listed(client)[f"{base}/main/tiny"]
    assert (entry["model_format"], entry["prediction_type"]) == (
        "checkpoint",
        "v_prediction" if base == "sd-2" else "epsilon",
    )

    reference = pipeline_class(base).from_pretrained(tiny_base_files[base, "diffusers"], local_files_only=True)
    loader = client.app.state.services.executor.loader
    model = ModelIdentifier(model_name="tiny", base_model=base, model_type="main")
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want = getattr(reference, part, None)
        if want is None:
            with pytest.raises(ModelLoadError):
                loader.load(model, part)
            continue
        got = loader.load(model, part).state_dict()
        assert want.state_dict().keys() == got.keys(), part
        assert all(torch.equal(t, got[k]) for k, t in want.state_dict().items()), f"{part} differs from the folder's"
    for part in ("tokenizer", "tokenizer_2"):
        if getattr(reference, part, None) is not None:
            prompt = "a lighthouse at dusk, highly detailed"
            assert loader.load(model, part)(prompt).input_ids == getattr(reference, part)(prompt).input_ids
    assert loader.load(model, "scheduler")["prediction_type"] == reference.scheduler.config.prediction_type

    dest = tmp_path / "converted"
    dest.mkdir()
    response = client.put(f"{API}/convert/{base}/main/tiny", params={"convert_dest_directory": str(dest)})
    assert response.status_code == 200, response.text
    assert (response.json()["model_format"], response.json()["base_model"]) == ("diffusers", base)
    converted = pipeline_class(base).from_pretrained(dest / "tiny", local_files_only=True)
    image = generate(converted, base)
    assert image.std() > 0.02
    assert (image == generate(reference, base)).all(), "the converted model draws other pixels than the original folder"
