"""ControlNet, inpainting (4- and 9-channel), outpainting, image to image, upscalers and the hires pass, through the
API with tiny models the tests write, held to diffusers' own pipelines where diffusers has one.

Where the pipelines encode an image they sample the VAE's posterior with the generator; our `i2l` and
`create_denoise_mask` take its mean (one image, one result). The comparisons read the pipelines the same way:
`retrieve_latents` patched to the mode, so the generator's only draw before the loop is the noise's in both."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import pytest
import torch
from diffusers import (
    ControlNetModel,
    StableDiffusionControlNetPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
)
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion_img2img, pipeline_stable_diffusion_inpaint
from PIL import Image, ImageDraw

from server.graph.schedulers import make_scheduler
from server.graph.standard import GenerationSettings, build_graph
from server.models.tiny_adapters import write_tiny_controlnet, write_tiny_inpaint_model, write_tiny_upscaler
from server.models.upscalers import load as load_upscaler
from server.models.upscalers import upscale
from tests.graph.conftest import MODEL, assert_same_pixels, generation_app, load_sd_pipeline, run_graph
from tests.images.conftest import png_bytes

PROMPT = "a lighthouse at dusk"
CONTROL = {"model_name": "tiny-control", "base_model": "sd-1", "model_type": "controlnet"}
INPAINT = {"model_name": "tiny-inpaint", "base_model": "sd-1", "model_type": "main"}
UPSCALER = {"model_name": "tiny-esrgan", "base_model": "any", "model_type": "upscale"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("control")
    return {
        "controlnet": write_tiny_controlnet(folder / "tiny-control"),
        # The same weights in lllyasviel's single-file layout.
        "controlnet-file": write_tiny_controlnet(folder / "tiny-control-file.safetensors", fmt="checkpoint"),
        "inpaint": write_tiny_inpaint_model(folder / "tiny-inpaint"),
        "upscaler": write_tiny_upscaler(folder / "tiny-esrgan.safetensors"),
    }


def mean_mode(encoder_output, generator=None, sample_mode="sample"):
    return encoder_output.latent_dist.mode()


@pytest.fixture
def mode_encoding(monkeypatch):
    for module in (pipeline_stable_diffusion_inpaint, pipeline_stable_diffusion_img2img):
        monkeypatch.setattr(module, "retrieve_latents", mean_mode)


def uploaded(client, image: Image.Image, category: str = "user") -> str:
    response = client.post(
        "/api/v1/images/upload",
        params={"image_category": category},
        files={"file": ("image.png", png_bytes(image), "image/png")},
    )
    assert response.status_code == 201, response.text
    return response.json()["image_name"]


def shapes_image(size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (40, 60, 200))
    draw = ImageDraw.Draw(image)
    draw.ellipse((8, 8, size - 16, size - 20), fill=(240, 200, 40))
    draw.rectangle((size // 2, size // 3, size - 4, size - 6), fill=(20, 180, 60))
    return image


def mask_image(size: int = 64) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rectangle((size // 4, size // 4, 3 * size // 4, 3 * size // 4), fill=255)
    return mask


@pytest.fixture
def app(settings, tiny_model_files, files):
    with generation_app(settings, tiny_model_files) as (client, recorder):
        for path in files.values():
            response = client.post("/api/v1/models/import", json={"location": str(path)})
            assert response.status_code == 201, response.text
        yield client, recorder


def run(app, **fields) -> tuple[dict, dict[str, np.ndarray]]:
    """The session, and every image it saved (by the node that saved it) as an RGB array."""
    client, recorder = app
    values = {"model": MODEL, "prompt": PROMPT, "seed": 1, "width": 64, "height": 64, "steps": 4, **fields}
    session = run_graph(client, recorder, build_graph(msgspec.convert(values, GenerationSettings)))
    assert session["status"] == "completed", session["errors"]
    images = {}
    for node_id, result in session["results"].items():
        image = result.get("image") if isinstance(result, dict) else None
        if image:
            png = client.get(f"/api/v1/images/{image['image_name']}/full").content
            images[node_id] = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return session, images


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def pipeline_kwargs(seed: int = 1) -> dict:
    return {
        "negative_prompt": "",
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "height": 64,
        "width": 64,
        "generator": torch.Generator("cpu").manual_seed(seed),
    }


@pytest.fixture(scope="module")
def tiny_pipe(tiny_model_files):
    pipe = load_sd_pipeline(tiny_model_files["diffusers"])
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    return pipe


# ControlNet


def control(image: str, **extra) -> dict:
    return {"image": image, "model": CONTROL, **extra}


def test_controlnet_at_weight_zero_is_the_plain_image_and_at_one_the_pipelines(app, tiny_pipe, files):
    client, _ = app
    source = shapes_image()
    guide = uploaded(client, source, "control")
    _, plain = run(app)
    _, zero = run(app, controls=[control(guide, weight=0.0)])
    assert np.array_equal(zero["decode"], plain["decode"])
    _, one = run(app, controls=[control(guide)])
    assert np.abs(one["decode"] - plain["decode"]).mean() > 0.3
    pipe = StableDiffusionControlNetPipeline(
        **{k: v for k, v in tiny_pipe.components.items() if k != "image_encoder"},
        controlnet=ControlNetModel.from_pretrained(files["controlnet"], local_files_only=True),
    )
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(PROMPT, image=source, **pipeline_kwargs()).images[0]
    assert_same_pixels(one["decode"], pixels(theirs))


def test_a_single_file_controlnet_gives_the_folders_pixels(app):
    client, _ = app
    listed = {
        m["model_name"]: m for m in client.get("/api/v1/models/", params={"model_type": "controlnet"}).json()["models"]
    }
    assert (listed["tiny-control-file"]["base_model"], listed["tiny-control-file"]["model_format"]) == (
        "sd-1",
        "checkpoint",
    )
    guide = uploaded(client, shapes_image(), "control")
    _, folder = run(app, controls=[control(guide)])
    _, single = run(app, controls=[control(guide, model={**CONTROL, "model_name": "tiny-control-file"})])
    assert_same_pixels(single["decode"], folder["decode"])


def test_two_controlnets_and_a_step_range(app):
    client, _ = app
    first, second = uploaded(client, shapes_image()), uploaded(client, Image.new("RGB", (64, 64), "white"))
    _, one = run(app, controls=[control(first)])
    _, both = run(app, controls=[control(first), control(second, weight=0.7)])
    assert np.abs(both["decode"] - one["decode"]).mean() > 0.3
    _, late = run(app, controls=[control(first, begin=0.5, end=1.0)])
    assert np.abs(late["decode"] - one["decode"]).mean() > 0.1
    _, guess = run(app, controls=[control(first, mode="more_control")])
    assert np.abs(guess["decode"] - one["decode"]).mean() > 0.1


def test_canny_gives_a_binary_edge_map_of_the_same_size(app):
    client, recorder = app
    name = uploaded(client, shapes_image(96))
    graph = {
        "id": "c",
        "nodes": {"edges": {"id": "edges", "type": "canny_image_processor", "image": {"image_name": name}}},
        "edges": [],
    }
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed", session["errors"]
    result = session["results"]["edges"]
    png = client.get(f"/api/v1/images/{result['image']['image_name']}/full").content
    edges = np.asarray(Image.open(io.BytesIO(png)))
    assert edges.shape == (96, 96) and set(np.unique(edges)) == {0, 255}
    assert client.get(f"/api/v1/images/{result['image']['image_name']}").json()["image_category"] == "control"
    _, used = run(app, controls=[control(name, processor="canny")])
    assert "canny_1" in used


# Inpainting and outpainting


@pytest.mark.parametrize("model", ["tiny", "tiny-inpaint"])
def test_inpainting_matches_the_pipeline_and_keeps_everything_outside_the_mask(
    app, tiny_pipe, files, mode_encoding, model
):
    client, _ = app
    original, mask = shapes_image(), mask_image()
    settings = {"init_image": uploaded(client, original), "mask_image": uploaded(client, mask, "mask"), "strength": 1.0}
    main = MODEL if model == "tiny" else INPAINT
    _, images = run(app, model=main, **settings)
    components = dict(tiny_pipe.components)
    if model == "tiny-inpaint":
        source = load_sd_pipeline(files["inpaint"])
        components = dict(source.components)
        components["scheduler"] = make_scheduler("euler", source.scheduler.config)
        assert source.unet.config.in_channels == 9
    pipe = StableDiffusionInpaintPipeline(**{k: v for k, v in components.items() if k != "image_encoder"})
    pipe.set_progress_bar_config(disable=True)
    theirs = pixels(pipe(PROMPT, image=original, mask_image=mask, strength=1.0, **pipeline_kwargs()).images[0])
    assert_same_pixels(images["decode"], theirs, "before the paste-back")
    outside = np.asarray(mask) == 0
    assert np.array_equal(images["paste"][outside], pixels(original)[outside])
    assert np.abs(images["paste"][~outside] - pixels(original)[~outside]).mean() > 1


def test_outpainting_extends_the_canvas_and_keeps_the_original(app):
    client, _ = app
    original = shapes_image()
    _, images = run(
        app, init_image=uploaded(client, original), width=96, height=64, strength=1.0, outpaint={"right": 32}
    )
    assert images["paste"].shape == (64, 96, 3)
    # The original's pixels, away from the seam the mask reaches into, are kept.
    assert np.array_equal(images["paste"][:, :56], pixels(original)[:, :56])


def test_a_mask_of_another_size_is_stretched_and_a_missing_mask_refused(app):
    client, recorder = app
    original = uploaded(client, shapes_image())
    small = uploaded(client, mask_image(32), "mask")
    graph = {
        "id": "m",
        "nodes": {
            "model": {"id": "model", "type": "main_model_loader", "model": MODEL},
            "mask": {
                "id": "mask",
                "type": "create_denoise_mask",
                "image": {"image_name": original},
                "mask": {"image_name": small},
            },
        },
        "edges": [{"source": {"node_id": "model", "field": "vae"}, "destination": {"node_id": "mask", "field": "vae"}}],
    }
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed" and session["results"]["mask"]["mask_resized"] is True
    graph["nodes"]["mask"]["mask"] = {"image_name": "00000000-0000-4000-8000-000000000000.png"}
    response = client.post("/api/v1/sessions/", json=graph)
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "nodes", "mask", "mask"]
    settings = {"model": MODEL, "mask_image": small}
    refused = client.post("/api/v1/app/graph", json=settings)
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "mask_image"]


def test_image_to_image_matches_the_pipeline(app, tiny_pipe, mode_encoding):
    client, _ = app
    original = shapes_image()
    for scheduler in ("euler", "euler_a"):
        _, images = run(app, init_image=uploaded(client, original), strength=0.6, scheduler=scheduler)
        pipe = StableDiffusionImg2ImgPipeline(**{k: v for k, v in tiny_pipe.components.items() if k != "image_encoder"})
        pipe.scheduler = make_scheduler(scheduler, tiny_pipe.scheduler.config)
        pipe.set_progress_bar_config(disable=True)
        kwargs = pipeline_kwargs()
        kwargs.pop("height"), kwargs.pop("width")
        theirs = pipe(PROMPT, image=original, strength=0.6, **kwargs).images[0]
        assert_same_pixels(images["decode"], pixels(theirs), scheduler)


# Upscalers and the hires pass


def test_esrgan_gives_spandrels_pixels_at_the_models_scale(app, files):
    client, recorder = app
    source = shapes_image(96)
    name = uploaded(client, source)
    results = {}
    for tile in (0, 32):
        graph = {
            "id": "u",
            "nodes": {
                "up": {
                    "id": "up",
                    "type": "esrgan",
                    "image": {"image_name": name},
                    "model": UPSCALER,
                    "tile_size": tile,
                }
            },
            "edges": [],
        }
        session = run_graph(client, recorder, graph)
        assert session["status"] == "completed", session["errors"]
        png = client.get(f"/api/v1/images/{session['results']['up']['image']['image_name']}/full").content
        results[tile] = pixels(Image.open(io.BytesIO(png)))
    assert results[0].shape == (192, 192, 3)
    direct = load_upscaler(files["upscaler"], "tiny-esrgan", "cpu", torch.float32)
    with torch.inference_mode():
        tensor = torch.from_numpy(np.asarray(source, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        out = direct.descriptor(tensor).clamp(0, 1)[0].permute(1, 2, 0).numpy()
    assert np.array_equal(results[0], (out * 255).round().astype(np.int16))
    # Tiles with overlapping context agree with the whole image, within rounding.
    assert np.abs(results[32] - results[0]).mean() < 1.0
    assert upscale(direct, source, 0).size == (192, 192)


def test_the_hires_pass_makes_an_image_twice_the_size(app):
    _, images = run(app, hires={"scale": 2.0, "strength": 0.5})
    assert images["decode"].shape == (128, 128, 3)
    _, by_model = run(app, hires={"scale": 2.0, "strength": 0.5, "upscaler": UPSCALER})
    assert by_model["decode"].shape == (128, 128, 3)


def test_the_hires_pass_can_resize_the_first_image_in_pixels(app):
    """A1111's `Lanczos` and `Nearest` hires upscalers: the decoded first image, resized, encoded again."""
    for mode, resample in (("nearest", Image.Resampling.NEAREST), ("lanczos", Image.Resampling.LANCZOS)):
        session, images = run(app, hires={"scale": 2.0, "strength": 0.5, "image_resize": mode})
        first = Image.fromarray(images["hires_decode"].astype(np.uint8))
        assert np.array_equal(images["hires_image"], pixels(first.resize((128, 128), resample=resample))), mode
        assert images["decode"].shape == (128, 128, 3)
        assert "hires_resize" not in session["graph"]["nodes"]


def test_a_hires_graph_by_hand(app):
    """txt2img → lscale ×2 → denoise_latents at 0.5, as the issue writes it."""
    client, recorder = app
    graph = build_graph(
        msgspec.convert({"model": MODEL, "prompt": PROMPT, "width": 64, "height": 64, "steps": 4}, GenerationSettings)
    )
    graph["nodes"]["scale"] = {"id": "scale", "type": "lscale", "scale_factor": 2}
    graph["nodes"]["again"] = {"id": "again", "type": "denoise_latents", "steps": 4, "strength": 0.5}
    graph["edges"] = [e for e in graph["edges"] if e["destination"] != {"node_id": "decode", "field": "latents"}]
    for source, field, destination, into in (
        ("denoise", "latents", "scale", "latents"), ("scale", "latents", "again", "latents"),
        ("model", "unet", "again", "unet"), ("pos", "conditioning", "again", "positive_conditioning"),
        ("neg", "conditioning", "again", "negative_conditioning"), ("again", "latents", "decode", "latents"),
    ):  # fmt: skip
        graph["edges"].append(
            {"source": {"node_id": source, "field": field}, "destination": {"node_id": destination, "field": into}}
        )
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed", session["errors"]
    assert (session["results"]["decode"]["width"], session["results"]["decode"]["height"]) == (128, 128)


def test_an_upscale_file_spandrel_does_not_know_is_refused_with_its_reason(app, settings):
    client, _ = app
    folder = settings.root_path / "autoimport" / "upscale"
    from safetensors.torch import save_file

    save_file({"conv.weight": torch.zeros(3, 3, 3, 3)}, str(folder / "mystery.safetensors"))
    client.post("/api/v1/models/sync")
    (listed,) = [
        m
        for m in client.get("/api/v1/models/", params={"model_type": "upscale"}).json()["models"]
        if m["model_name"] == "mystery"
    ]
    assert "not an upscaler" in listed["error"] and "spandrel" in listed["error"]
