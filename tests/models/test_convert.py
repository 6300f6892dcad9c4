"""PUT /models/convert: a checkpoint of any base becomes a diffusers folder (offline) that generates the same
pixels, and the entry points at it."""

from __future__ import annotations

import json
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
    settle,
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


def _real_layout_sd2(tiny_ckpt: Path, out: Path, global_step: int, stock_yaml: str) -> Path:
    """The tiny SD-2 `.ckpt` as a real download is: no embedded configs, the training step it was saved at, and
    (the tiny architecture being no stock one) a yaml beside it: `stock_yaml` with the UNet and VAE shrunk to
    the tiny model's, all else (`parameterization` too) as shipped."""
    import torch

    state = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "global_step": global_step}, out)
    document = yaml.safe_load((shipped.LEGACY_DIR / stock_yaml).read_text(encoding="utf-8"))
    params = document["model"]["params"]
    params["unet_config"]["params"].update(
        model_channels=32, channel_mult=[1, 2], attention_resolutions=[1], num_head_channels=16, context_dim=32
    )
    params["first_stage_config"]["params"]["ddconfig"].update(ch=32, ch_mult=[1, 1, 2, 2], num_res_blocks=1)
    out.with_suffix(".yaml").write_text(yaml.safe_dump(document), encoding="utf-8")
    settle(out.with_suffix(".yaml"))
    return settle(out)


def _shipped_sd2_stand_in(tiny_ckpt: Path, folder: Path) -> Path:
    """The server's shipped sd-2 config folder as it is (model index, and the 768-v model's v-prediction
    scheduler), with the tiny model's component configs in place of SD-2's real-size ones."""
    import shutil

    from server.models.single_file import EMBEDDED_MARKER, diffusers_config_dir

    embedded = diffusers_config_dir(tiny_ckpt, folder.parent / "embedded")
    assert embedded is not None
    shutil.copytree(embedded, folder)
    (folder / EMBEDDED_MARKER).unlink()
    shipped_sd2 = shipped.DIFFUSERS_DIR / "sd-2"
    shutil.copyfile(shipped_sd2 / "model_index.json", folder / "model_index.json")
    shutil.copyfile(shipped_sd2 / "scheduler" / "scheduler_config.json", folder / "scheduler" / "scheduler_config.json")
    return folder


@pytest.mark.parametrize(
    ("name", "global_step", "stock_yaml", "prediction"),
    [
        ("sd2-base", 875000, "v2-inference.yaml", "epsilon"),  # SD-2 512-base
        ("sd2-768", 110000, "v2-inference-v.yaml", "v_prediction"),  # SD-2 768-v
    ],
)
def test_a_real_sd2_checkpoint_converts_to_what_it_predicts(
    client: TestClient,
    root: Path,
    tiny_base_files,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    global_step: int,
    stock_yaml: str,
    prediction: str,
) -> None:
    """SD-2 512-base predicts the noise (epsilon), 768-v the velocity; nothing in the weights says which, and
    the shipped sd-2 folder's scheduler is the 768-v's. The probe tells them apart by the training step, and the
    folder the conversion writes (scheduler included) says what the registered model says, as loading does."""
    from server.models import probe
    from server.models.schema import ModelIdentifier
    from server.models.single_file import load_pipeline_from_single_file

    tiny = tiny_base_files["sd-2", "ckpt"]
    stand_in = _shipped_sd2_stand_in(tiny, tmp_path / "configs" / "sd-2")
    real_config_dir = shipped.config_dir
    monkeypatch.setattr(
        shipped, "config_dir", lambda base, cache: stand_in if base == "sd-2" else real_config_dir(base, cache)
    )
    _real_layout_sd2(tiny, root / "autoimport" / "main" / f"{name}.ckpt", global_step, stock_yaml)
    sync(client)
    entry = listed(client)[f"sd-2/main/{name}"]
    assert (entry["model_format"], entry["prediction_type"]) == ("checkpoint", prediction)
    assert entry["config"] == str(root / "autoimport" / "main" / f"{name}.yaml")

    loader = client.app.state.services.executor.loader
    model = ModelIdentifier(model_name=name, base_model="sd-2", model_type="main")
    assert loader.load(model, "scheduler")["prediction_type"] == prediction

    dest = tmp_path / "converted"
    dest.mkdir()
    response = client.put(f"{API}/convert/sd-2/main/{name}", params={"convert_dest_directory": str(dest)})
    assert response.status_code == 200, response.text
    assert response.json()["prediction_type"] == prediction
    written = json.loads((dest / name / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    assert written["prediction_type"] == prediction, "the converted folder's scheduler predicts something else"
    assert probe.probe(dest / name).prediction_type == prediction
    # An entry that says nothing (a hand-written models.yaml line) takes what its yaml says (`parameterization`).
    checkpoint = root / "autoimport" / "main" / f"{name}.ckpt"
    undecided = load_pipeline_from_single_file(checkpoint, checkpoint.with_suffix(".yaml"), stand_in, None)
    assert undecided.scheduler.config.prediction_type == prediction


def test_an_sd2_prediction_type_chosen_at_import_survives_conversion(
    client: TestClient, root: Path, tiny_base_files, tmp_path: Path
) -> None:
    """The user's `prediction_type` at import outranks what the file says (the tiny SD-2's own scheduler is
    v-prediction), in the entry and in the folder a conversion writes."""
    source = put_model(tiny_base_files["sd-2", "checkpoint"], tmp_path / "sd21-base.safetensors")
    response = client.post(f"{API}/import", json={"location": str(source), "prediction_type": "epsilon"})
    assert response.status_code == 201, response.text
    assert response.json()["prediction_type"] == "epsilon"
    key = f"sd-2/main/{response.json()['model_name']}"
    dest = tmp_path / "converted"
    dest.mkdir()
    converted = client.put(f"{API}/convert/{key}", params={"convert_dest_directory": str(dest)})
    assert converted.status_code == 200, converted.text
    folder = Path(converted.json()["path"])
    written = json.loads((folder / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    assert written["prediction_type"] == "epsilon"


@pytest.mark.parametrize(
    ("stock_yaml", "prediction"),
    [
        ("v1-inference.yaml", "epsilon"),
        ("v1-inpainting-inference.yaml", "epsilon"),
        ("v2-inference.yaml", "epsilon"),
        ("v2-inference-v.yaml", "v_prediction"),
        ("v2-inpainting-inference.yaml", "epsilon"),
        ("sd_xl_base.yaml", "epsilon"),
        ("sd_xl_refiner.yaml", "epsilon"),
    ],
)
def test_each_shipped_yaml_says_what_its_models_predict(stock_yaml: str, prediction: str) -> None:
    from server.models.single_file import yaml_prediction_type

    assert yaml_prediction_type(shipped.LEGACY_DIR / stock_yaml) == prediction


def test_a_yaml_that_says_nothing_leaves_the_prediction_open(tmp_path: Path) -> None:
    from server.models.single_file import yaml_prediction_type

    (tmp_path / "other.yaml").write_text("model:\n  target: sgm.models.diffusion.DiffusionEngine\n  params: {}\n")
    (tmp_path / "broken.yaml").write_text("model: [\n")
    assert [yaml_prediction_type(p) for p in (None, tmp_path / "other.yaml", tmp_path / "broken.yaml")] == [None] * 3
