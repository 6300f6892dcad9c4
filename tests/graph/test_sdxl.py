"""SDXL (base and refiner) and SD-2 v-prediction through the API, pixel for pixel like diffusers' own pipelines
for the same seed, with the tiny models of server/models/tiny_sdxl.py."""

from __future__ import annotations

import contextlib
import io
import json

import msgspec
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLImg2ImgPipeline, StableDiffusionXLPipeline
from PIL import Image

from server.graph.schedulers import make_scheduler
from server.graph.standard import GenerationSettings, build_graph, txt2img_graph
from server.models.model_cache import size_bytes
from server.models.schema import ModelIdentifier
from server.models.tiny_adapters import write_tiny_controlnet, write_tiny_embedding, write_tiny_lora
from server.models.tiny_sdxl import write_tiny_model_of_base
from tests.graph.conftest import MODEL, assert_same_pixels, generation_app, run_graph, with_settings
from tests.models.conftest import put_model

SDXL = {"model_name": "tiny-xl", "base_model": "sdxl", "model_type": "main"}
REFINER = {"model_name": "tiny-refiner", "base_model": "sdxl-refiner", "model_type": "main"}
SD2 = {"model_name": "tiny-v", "base_model": "sd-2", "model_type": "main"}
PROMPT = "a lighthouse at dusk"


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bases")
    return {
        "sdxl": write_tiny_model_of_base(folder / "tiny-xl", "sdxl"),
        "refiner": write_tiny_model_of_base(folder / "tiny-refiner", "sdxl-refiner"),
        "sd-2": write_tiny_model_of_base(folder / "tiny-v", "sd-2"),
        "lora-kohya": write_tiny_lora(folder / "xl-kohya.safetensors", "kohya", base="sdxl", seed=5),
        "lora-peft": write_tiny_lora(folder / "xl-peft", "peft", base="sdxl", seed=6),
        "embedding": write_tiny_embedding(folder / "xlemb.safetensors", sdxl=True, vectors=2),
        # SDXL ControlNets ship as one file under diffusers' names.
        "controlnet": write_tiny_controlnet(folder / "xl-control.safetensors", base="sdxl", fmt="diffusers_file"),
    }


@pytest.fixture
def app(settings, tiny_model_files, tiny_files):
    with sdxl_app(settings, tiny_model_files, tiny_files) as pair:
        yield pair


@contextlib.contextmanager
def sdxl_app(settings, tiny_model_files, tiny_files):
    with generation_app(settings, tiny_model_files) as (client, recorder):
        for name in ("sdxl", "refiner", "lora-kohya", "lora-peft", "embedding", "controlnet"):
            response = client.post("/api/v1/models/import", json={"location": str(tiny_files[name])})
            assert response.status_code == 201, response.text
        # The tiny SD-2 model has SD-1's widths: its folder says which base it is.
        put_model(tiny_files["sd-2"], settings.root_path / "models" / "sd-2" / "main" / "tiny-v")
        assert client.post("/api/v1/models/sync").json()["added"] == ["sd-2/main/tiny-v"]
        yield client, recorder


def generate(app, **settings) -> tuple[np.ndarray, dict]:
    client, recorder = app
    fields = {"prompt": PROMPT, "seed": 1, "width": 128, "height": 128, "steps": 6, **settings}
    graph = build_graph(msgspec.convert(fields, GenerationSettings))
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]
    png = client.get(f"/api/v1/images/{name}/full").content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16), {"name": name, "png": png}


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def pipelines(tiny_files):
    base = StableDiffusionXLPipeline.from_pretrained(tiny_files["sdxl"], local_files_only=True)
    refiner = StableDiffusionXLImg2ImgPipeline.from_pretrained(tiny_files["refiner"], local_files_only=True)
    sd2 = StableDiffusionPipeline.from_pretrained(
        tiny_files["sd-2"], local_files_only=True, safety_checker=None, requires_safety_checker=False
    )
    for pipe in (base, refiner, sd2):
        pipe.set_progress_bar_config(disable=True)
    return {"base": base, "refiner": refiner, "sd-2": sd2}


@pytest.mark.parametrize("scheduler", ["euler", "euler_a", "dpmpp_2m_k"])
@pytest.mark.parametrize("negative", ["", "blurry, low quality"])
def test_sdxl_matches_the_diffusers_pipeline(app, pipelines, scheduler, negative):
    ours, _ = generate(app, model=SDXL, scheduler=scheduler, negative_prompt=negative)
    pipe = pipelines["base"]
    pipe.scheduler = make_scheduler(scheduler, pipe.scheduler.config)
    # No negative prompt at all is what an empty one means (the pipeline then uses zeros, as the model says).
    theirs = pipe(
        PROMPT, negative_prompt=negative or None, guidance_scale=7.5, num_inference_steps=6, height=128, width=128,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert np.array_equal(ours, pixels(theirs))


def test_the_refiner_continues_as_in_diffusers_ensemble_of_experts(app, pipelines):
    refiner = {"model": REFINER, "switch_at": 0.8}
    ours, image = generate(app, model=SDXL, negative_prompt="blurry", steps=10, refiner=refiner)
    base, refine = pipelines["base"], pipelines["refiner"]
    base.scheduler = make_scheduler("euler", base.scheduler.config)
    refine.scheduler = make_scheduler("euler", refine.scheduler.config)
    latents = base(
        PROMPT, negative_prompt="blurry", guidance_scale=7.5, num_inference_steps=10, denoising_end=0.8,
        height=128, width=128, output_type="latent", generator=torch.Generator("cpu").manual_seed(1),
    ).images  # fmt: skip
    theirs = refine(
        PROMPT, negative_prompt="blurry", image=latents, guidance_scale=7.5, num_inference_steps=10,
        denoising_start=0.8, generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert np.array_equal(ours, pixels(theirs))
    with Image.open(io.BytesIO(image["png"])) as png:
        metadata = json.loads(png.text["invokeai_metadata"])
    assert metadata["refiner_model"] == REFINER and metadata["refiner_start"] == 0.8
    assert (metadata["refiner_steps"], metadata["refiner_positive_aesthetic_score"]) == (10, 6.0)
    assert metadata["refiner_negative_aesthetic_score"] == 2.5 and metadata["generation_mode"] == "sdxl_txt2img"


def test_a_split_run_on_one_model_is_nearly_the_single_run(app):
    """The base stops half-way (`denoising_end` 0.5) and the same UNet continues (`denoising_start` 0.5)."""
    client, recorder = app
    whole, _ = generate(app, model=SDXL, steps=8)
    graph = build_graph(
        msgspec.convert(
            {"model": SDXL, "prompt": PROMPT, "seed": 1, "width": 128, "height": 128, "steps": 8}, GenerationSettings
        )
    )
    graph["nodes"]["denoise"]["denoising_end"] = 0.5
    graph["nodes"]["second"] = {
        "id": "second",
        "type": "denoise_latents",
        "steps": 8,
        "cfg_scale": 7.5,
        "denoising_start": 0.5,
    }
    for edge in graph["edges"]:
        if edge["destination"] == {"node_id": "decode", "field": "latents"}:
            edge["source"] = {"node_id": "second", "field": "latents"}
    wire = [
        ("model", "unet", "unet"),
        ("pos", "conditioning", "positive_conditioning"),
        ("neg", "conditioning", "negative_conditioning"),
        ("denoise", "latents", "latents"),
    ]
    graph["edges"] += [
        {"source": {"node_id": s, "field": f}, "destination": {"node_id": "second", "field": d}} for s, f, d in wire
    ]
    session = run_graph(client, recorder, graph)
    assert session["status"] == "completed", session["errors"]
    png = client.get(f"/api/v1/images/{session['results']['decode']['image']['image_name']}/full").content
    split = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    assert np.abs(split - whole).mean() <= 1.0


def test_sd2_v_prediction_matches_the_pipeline(app, pipelines):
    client, _ = app
    assert client.get("/api/v1/models/sd-2/main/tiny-v").json()["prediction_type"] == "v_prediction"
    ours, _ = generate(app, model=SD2, negative_prompt="blurry")
    pipe = pipelines["sd-2"]
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.unet.config.upcast_attention
    pipe.scheduler = make_scheduler("euler", pipe.scheduler.config)
    theirs = pipe(
        PROMPT, negative_prompt="blurry", guidance_scale=7.5, num_inference_steps=6, height=128, width=128,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert np.array_equal(ours, pixels(theirs))


@pytest.mark.parametrize("lora", ["xl-kohya", "xl-peft"])
def test_an_sdxl_lora_changes_and_unchanges_the_image(app, lora):
    plain, _ = generate(app, model=SDXL)
    identifier = {"model_name": lora, "base_model": "sdxl", "model_type": "lora"}
    changed, _ = generate(app, model=SDXL, loras=[{"lora": identifier, "weight": 1.0}])
    assert np.abs(changed - plain).mean() > 0.3
    zero, _ = generate(app, model=SDXL, loras=[{"lora": identifier, "weight": 0.0}])
    after, _ = generate(app, model=SDXL)
    assert np.array_equal(zero, plain) and np.array_equal(after, plain)


def test_an_sdxl_embedding_uses_both_text_encoders(app):
    with_embedding, _ = generate(app, model=SDXL, prompt="a photo of <xlemb>")
    as_text, _ = generate(app, model=SDXL, prompt="a photo of xlemb")
    assert np.abs(with_embedding - as_text).mean() > 0.3


def test_models_of_the_wrong_base_are_refused_naming_the_field(app):
    client, _ = app
    # The SD-1/SD-2 loader does not take an SDXL model (its graph needs the SDXL nodes).
    sd_graph = txt2img_graph(MODEL, PROMPT, width=128, height=128)
    sd_graph["nodes"]["model"]["model"] = SDXL
    response = client.post("/api/v1/sessions/", json=sd_graph)
    assert response.status_code == 422
    assert ["body", "nodes", "model", "model"] in [error["loc"] for error in response.json()["errors"]]
    refused = client.post("/api/v1/app/graph", json={"model": SDXL, "refiner": {"model": SDXL}})
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "refiner"]
    mixed = build_graph(
        msgspec.convert({"model": SDXL, "prompt": PROMPT, "refiner": {"model": REFINER}}, GenerationSettings)
    )
    mixed["nodes"]["refiner_model"]["model"] = SDXL
    response = client.post("/api/v1/sessions/", json=mixed)
    assert response.status_code == 422 and "sdxl-refiner" in response.json()["detail"]


def test_an_sdxl_controlnet_file_matches_the_sdxl_controlnet_pipeline(app, pipelines, tiny_files):
    from diffusers import StableDiffusionXLControlNetPipeline
    from PIL import ImageDraw

    from server.models.controlnets import load as load_controlnet

    client, _ = app
    listed = client.get("/api/v1/models/", params={"model_type": "controlnet"}).json()["models"]
    assert [(m["model_name"], m["base_model"], m["model_format"]) for m in listed] == [
        ("xl-control", "sdxl", "checkpoint")
    ]
    guide = Image.new("RGB", (128, 128), "black")
    ImageDraw.Draw(guide).ellipse((20, 30, 100, 110), outline="white", width=3)
    buffer = io.BytesIO()
    guide.save(buffer, format="PNG")
    upload = client.post(
        "/api/v1/images/upload",
        params={"image_category": "control"},
        files={"file": ("g.png", buffer.getvalue(), "image/png")},
    )
    control = {
        "image": upload.json()["image_name"],
        "model": {"model_name": "xl-control", "base_model": "sdxl", "model_type": "controlnet"},
    }
    plain, _ = generate(app, model=SDXL, negative_prompt="blurry")
    ours, _ = generate(app, model=SDXL, negative_prompt="blurry", controls=[control])
    assert np.abs(ours - plain).mean() > 0.3
    base = pipelines["base"]
    pipe = StableDiffusionXLControlNetPipeline(
        **{k: v for k, v in base.components.items() if k not in ("image_encoder", "feature_extractor")},
        controlnet=load_controlnet(tiny_files["controlnet"], "xl-control", None, torch.float32),
    )
    pipe.scheduler = make_scheduler("euler", base.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(
        PROMPT, negative_prompt="blurry", image=guide, guidance_scale=7.5, num_inference_steps=6, height=128,
        width=128, generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert_same_pixels(ours, pixels(theirs))


def test_an_sdxl_embedding_reaches_the_refiner_through_its_second_encoder(app):
    """The refiner gets the base's prompt; its one text encoder is SDXL's second, which the embedding's clip_g
    vectors are for."""
    refiner = {"model": REFINER, "switch_at": 0.5}
    with_embedding, _ = generate(app, model=SDXL, prompt="a <xlemb> lighthouse", steps=4, refiner=refiner)
    plain, _ = generate(app, model=SDXL, prompt="a lighthouse", steps=4, refiner=refiner)
    assert np.abs(with_embedding - plain).mean() > 0.3


# A1111's long prompts: 75-token chunks through both encoders (every word below is one token of the tiny vocab).
WORDS = ["a", "red", "cat", "in", "the", "garden", "with", "blue", "sky", "sea", "dog", "house", "tree"]


def words(count: int, start: int = 0) -> str:
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(count))


def test_a1111_sdxl_prompts_past_75_tokens_are_read_in_chunks_and_break_starts_one(app):
    long_prompt, first_chunk = words(100), words(75)
    sdxl = {"model": SDXL, "negative_prompt": "blurry"}
    # Truncated (the default syntax) the tail is lost, as in diffusers' pipeline; A1111's syntax keeps it.
    truncated, _ = generate(app, **sdxl, prompt=long_prompt)
    assert np.array_equal(truncated, generate(app, **sdxl, prompt=first_chunk)[0])
    chunked, _ = generate(app, **sdxl, prompt=long_prompt, prompt_syntax="a1111")
    without_tail = np.abs(chunked - generate(app, **sdxl, prompt=first_chunk, prompt_syntax="a1111")[0]).mean()
    assert without_tail > 0.5
    # BREAK ends a chunk: after exactly 75 tokens it changes nothing (the pooled output is the first chunk's either
    # way); earlier, it moves the rest to a chunk of its own.
    tail = words(25, start=75)
    at_the_boundary, _ = generate(app, **sdxl, prompt=f"{first_chunk} BREAK {tail}", prompt_syntax="a1111")
    assert np.array_equal(at_the_boundary, chunked)
    early = generate(app, **sdxl, prompt=f"{words(10)} BREAK {words(15, start=10)}", prompt_syntax="a1111")[0]
    assert np.abs(early - generate(app, **sdxl, prompt=words(25), prompt_syntax="a1111")[0]).mean() > 0.5
    # A long negative prompt against a short positive one pads the positive.
    assert generate(app, model=SDXL, prompt="a cat", negative_prompt=long_prompt, prompt_syntax="a1111")[0].shape == (
        128,
        128,
        3,
    )


def test_an_fp16_run_keeps_a_vae_that_asks_for_it_in_fp32(make_settings, tiny_model_files, tiny_files):
    """SDXL's VAE overflows to NaN (a black image) in fp16, and its config says `force_upcast`: in an fp16 run it
    stays in fp32, as diffusers' pipelines keep it, whether it comes in the model's folder or as a VAE of its own.
    SD-2's VAE does not say so and is fp16 like the rest. The cache makes room for the VAE at the size it has."""
    fp16 = with_settings(make_settings, "fp16", precision="float16")
    with generation_app(fp16, tiny_model_files) as (client, _):
        models = fp16.root_path / "models"
        put_model(tiny_files["sdxl"], models / "sdxl" / "main" / "tiny-xl")
        put_model(tiny_files["sd-2"], models / "sd-2" / "main" / "tiny-v")
        put_model(tiny_files["sdxl"] / "vae", models / "sdxl" / "vae" / "xl-vae")
        added = client.post("/api/v1/models/sync").json()["added"]
        assert sorted(added) == ["sd-2/main/tiny-v", "sdxl/main/tiny-xl", "sdxl/vae/xl-vae"]
        loader = client.app.state.services.executor.loader

        def load(key: str, part: str | None = None):
            base, kind, name = key.split("/")
            return loader.load(ModelIdentifier(model_name=name, base_model=base, model_type=kind), part)

        def estimate(key: str, part: str | None = None) -> int:
            config = loader.models.get(*key.split("/"))
            return loader.estimated_bytes(config, loader.models.absolute_path(config), part or config.model_type)

        assert load("sdxl/main/tiny-xl", "unet").dtype == torch.float16
        assert load("sdxl/main/tiny-xl", "text_encoder_2").dtype == torch.float16
        for key, part, dtype in [
            ("sdxl/main/tiny-xl", "vae", torch.float32),
            ("sdxl/vae/xl-vae", None, torch.float32),
            ("sd-2/main/tiny-v", "vae", torch.float16),
        ]:
            vae = load(key, part)
            assert vae.dtype == dtype, key
            assert estimate(key, part) == size_bytes(vae), f"{key}: the cache made room for another size"


def test_sequential_offload_gives_sdxl_and_its_refiner_the_same_images(
    app, make_settings, tiny_model_files, tiny_files
):
    """Both SDXL text encoders (the pooled output too), the refiner, a LoRA and an embedding, each part's weights
    streamed in a layer at a time (`offload: sequential`): the default's images."""
    kohya = {"lora": {"model_name": "xl-kohya", "base_model": "sdxl", "model_type": "lora"}, "weight": 1.0}
    cases = [
        {"refiner": {"model": REFINER, "switch_at": 0.5}},
        {"loras": [kohya], "prompt": "a (photo:1.2) of <xlemb>"},
        {},
    ]
    expected = [generate(app, model=SDXL, **case)[0] for case in cases]
    streamed = with_settings(make_settings, "sequential", offload="sequential")
    with sdxl_app(streamed, tiny_model_files, tiny_files) as other:
        got = [generate(other, model=SDXL, **case)[0] for case in cases]
    for case, theirs, ours in zip(cases, expected, got, strict=True):
        assert_same_pixels(ours, theirs, f"{case}:")
