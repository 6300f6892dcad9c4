"""LoRAs (kohya, PEFT, LoHa, LoKr), textual-inversion embeddings, a VAE of one's choice and clip skip, through
the API with the tiny model and tiny adapters the tests write themselves. What a user would notice: the image
changes when it should, and comes back exactly when the adapter is gone."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline
from PIL import Image
from safetensors.torch import save_file

from server.graph.prompts import plain_embeddings, skipped_layers
from server.graph.standard import txt2img_graph
from server.models.schema import ModelIdentifier
from server.models.tiny_adapters import write_tiny_embedding, write_tiny_lora, write_tiny_vae
from tests.graph.conftest import MODEL, assert_same_pixels, generation_app, load_sd_pipeline, run_graph, with_settings

PROMPT = "a lighthouse at dusk"
LORA_FORMATS = ("kohya", "peft", "loha", "lokr")


def lora(name: str, base: str = "sd-1") -> dict[str, str]:
    return {"model_name": name, "base_model": base, "model_type": "lora"}


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    files = {
        f"lora-{fmt}": write_tiny_lora(folder / f"lora-{fmt}{'' if fmt == 'peft' else '.safetensors'}", fmt, seed=3)
        for fmt in LORA_FORMATS
    }
    files["style"] = write_tiny_lora(folder / "style.safetensors", "kohya", seed=4)
    files["myemb"] = write_tiny_embedding(folder / "myemb.safetensors", vectors=2)
    files["oldemb"] = write_tiny_embedding(folder / "oldemb.pt", "pt", vectors=3, seed=5)
    files["diffemb"] = write_tiny_embedding(folder / "diffemb", "diffusers", vectors=1, seed=6)
    files["wideemb"] = write_tiny_embedding(folder / "wideemb.safetensors", vectors=1, width=48)
    files["othervae"] = write_tiny_vae(folder / "othervae")
    return files


@contextlib.contextmanager
def adapters_app(settings, tiny_model_files, adapter_files):
    with generation_app(settings, tiny_model_files) as (client, recorder):
        for name, path in adapter_files.items():
            response = client.post("/api/v1/models/import", json={"location": str(path)})
            assert response.status_code == 201, response.text
            assert response.json()["model_name"] == name and response.json()["base_model"] == "sd-1"
        yield client, recorder


@pytest.fixture
def app(settings, tiny_model_files, adapter_files):
    with adapters_app(settings, tiny_model_files, adapter_files) as pair:
        yield pair


def generate(app, prompt: str = PROMPT, **kwargs) -> tuple[np.ndarray, dict]:
    client, recorder = app
    session = run_graph(client, recorder, txt2img_graph(MODEL, prompt, seed=1, width=64, height=64, steps=4, **kwargs))
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]
    png = client.get(f"/api/v1/images/{name}/full").content
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64), {"name": name, "png": png}


def mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


@pytest.mark.parametrize("fmt", LORA_FORMATS)
def test_a_lora_changes_the_image_and_leaves_the_model_as_it_was(app, fmt):
    plain, _ = generate(app)
    name = f"lora-{fmt}"
    full, _ = generate(app, loras=[(lora(name), 1.0)])
    assert mean_difference(full, plain) > 0.3, "weight 1 changed nothing"
    zero, _ = generate(app, loras=[(lora(name), 0.0)])
    assert np.array_equal(zero, plain), "weight 0 is not the plain image"
    halves, _ = generate(app, loras=[(lora(name), 0.5), (lora(name), 0.5)])
    assert mean_difference(halves, full) < 0.5, "two loaders at 0.5 are not one at 1.0"
    after, _ = generate(app)
    assert np.array_equal(after, plain), "the LoRA leaked into the next plain run"


def test_negative_weights_and_chained_loras(app):
    plain, _ = generate(app)
    negative, _ = generate(app, loras=[(lora("lora-kohya"), -0.8)])
    positive, _ = generate(app, loras=[(lora("lora-kohya"), 0.8)])
    both, _ = generate(app, loras=[(lora("lora-kohya"), 0.8), (lora("style"), 0.6)])
    assert min(mean_difference(negative, plain), mean_difference(negative, positive)) > 0.3
    assert mean_difference(both, positive) > 0.3


def test_switching_loras_and_weights_never_reloads_the_base_model(app):
    client, _ = app
    loader = client.app.state.services.executor.loader
    generate(app, loras=[(lora("lora-kohya"), 0.5)])
    loads = loader.loads
    for weight in (0.2, 0.9):
        for name in ("style", "lora-kohya", "lora-loha"):
            generate(app, loras=[(lora(name), weight)])
    # Only the LoRA files themselves were read (once each); UNet, text encoder and VAE came from memory.
    assert loader.loads - loads == 2


def test_lora_parity_with_the_diffusers_pipeline(app, tiny_model_files, adapter_files):
    ours, _ = generate(app, loras=[(lora("lora-kohya"), 0.8)])
    pipe = load_sd_pipeline(tiny_model_files["diffusers"])
    pipe.load_lora_weights(str(adapter_files["lora-kohya"]), adapter_name="kohya")
    pipe.set_adapters(["kohya"], [0.8])
    image = pipe(
        PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    theirs = np.asarray(image.convert("RGB"), dtype=np.float64)
    assert mean_difference(ours, theirs) <= 1.0


def test_the_lora_is_recorded_in_the_metadata_and_the_graph(app):
    client, _ = app
    _, image = generate(app, loras=[(lora("lora-kohya"), 0.8)])
    with Image.open(io.BytesIO(image["png"])) as png:
        assert json.loads(png.text["invokeai_metadata"])["loras"] == [{"lora": lora("lora-kohya"), "weight": 0.8}]
        graph = json.loads(png.text["invokeai_graph"])
    (node,) = [n for n in graph["nodes"].values() if n["type"] == "lora_loader"]
    assert node["lora"] == lora("lora-kohya") and node["weight"] == 0.8
    served = client.get(f"/api/v1/images/{image['name']}/metadata").json()
    assert served["metadata"]["loras"] == [{"lora": lora("lora-kohya"), "weight": 0.8}]


def test_a_lora_for_another_base_is_refused_naming_the_node(app, tmp_path):
    client, _ = app
    # A kohya LoRA whose cross-attention reads 1024-wide text: an SD-2 LoRA, by its shapes.
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(4, 1024),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(32, 4),
    }
    save_file(tensors, str(tmp_path / "sd2-style.safetensors"))
    imported = client.post("/api/v1/models/import", json={"location": str(tmp_path / "sd2-style.safetensors")})
    assert imported.json()["base_model"] == "sd-2"
    graph = txt2img_graph(MODEL, PROMPT, loras=[(lora("sd2-style", "sd-2"), 1.0)], width=64, height=64, steps=2)
    response = client.post("/api/v1/sessions/", json=graph)
    assert response.status_code == 422
    assert ["body", "nodes", "lora_1", "lora"] in [e["loc"] for e in response.json()["errors"]]
    assert "sd-2" in response.json()["detail"] and "lora_1" in response.json()["detail"]


def test_a_lora_that_does_not_fit_fails_its_node_and_changes_nothing(app, tmp_path):
    client, recorder = app
    plain, _ = generate(app)
    # Named like an SD-1 LoRA, but its layers have other sizes than the tiny model's.
    tensors = {
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(4, 320),
        "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.ones(320, 4),
    }
    save_file(tensors, str(tmp_path / "misfit.safetensors"))
    assert client.post("/api/v1/models/import", json={"location": str(tmp_path / "misfit.safetensors")}).is_success
    graph = txt2img_graph(MODEL, PROMPT, seed=1, width=64, height=64, steps=4, loras=[(lora("misfit"), 1.0)])
    session = run_graph(client, recorder, graph)
    assert session["status"] == "failed"
    assert "misfit" in session["errors"]["denoise"] and "does not fit" in session["errors"]["denoise"]
    after, _ = generate(app)
    assert np.array_equal(after, plain), "a failed LoRA left the model half-patched"


@pytest.mark.parametrize("name", ["myemb", "oldemb", "diffemb"])
def test_an_embedding_in_the_prompt_changes_the_image(app, adapter_files, name):
    client, _ = app
    prompt = f"a photo of <{name}>"
    with_embedding, _ = generate(app, prompt)
    as_text, _ = generate(app, f"a photo of {name}")
    assert mean_difference(with_embedding, as_text) > 0.3
    # Prompt weighting still applies to it.
    weighted, _ = generate(app, f"a photo of (<{name}>)1.4")
    assert mean_difference(weighted, with_embedding) > 0.05
    # Unregistered, `<name>` is plain text: the same pixels each time, and not the embedding's.
    assert client.delete(f"/api/v1/models/sd-1/embedding/{name}").status_code == 204
    literal, _ = generate(app, prompt)
    assert mean_difference(literal, with_embedding) > 0.3
    assert client.post("/api/v1/models/import", json={"location": str(adapter_files[name])}).status_code == 201
    again, _ = generate(app, prompt)
    assert np.array_equal(again, with_embedding)
    assert client.delete(f"/api/v1/models/sd-1/embedding/{name}").status_code == 204
    literal_again, _ = generate(app, prompt)
    assert np.array_equal(literal_again, literal), "the embedding's tokens changed what plain text gives"


def test_embedding_parity_with_diffusers_textual_inversion(app, tiny_model_files, adapter_files):
    ours, _ = generate(app, "a photo of <myemb>")
    pipe = load_sd_pipeline(tiny_model_files["diffusers"])
    pipe.load_textual_inversion(str(adapter_files["myemb"]), token="<myemb>")
    image = pipe(
        "a photo of <myemb>", negative_prompt="", num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert mean_difference(ours, np.asarray(image.convert("RGB"), dtype=np.float64)) <= 1.0


def test_an_embedding_of_the_wrong_width_is_refused_naming_the_prompt_node(app):
    client, _ = app
    graph = txt2img_graph(MODEL, "a photo of <wideemb>", width=64, height=64, steps=2)
    response = client.post("/api/v1/sessions/", json=graph)
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["loc"] == ["body", "nodes", "pos", "prompt"] and "width 48" in error["msg"] and "32" in error["msg"]


def test_a_vae_of_ones_choice_decodes_the_image(app, adapter_files):
    plain, _ = generate(app)
    other, _ = generate(app, vae={"model_name": "othervae", "base_model": "sd-1", "model_type": "vae"})
    assert mean_difference(other, plain) > 1.0
    after, _ = generate(app)
    assert np.array_equal(after, plain)


def test_clip_skip_changes_the_image(app):
    plain, _ = generate(app)
    skipped, _ = generate(app, clip_skip=1)
    assert mean_difference(skipped, plain) > 0.3
    after, _ = generate(app)
    assert np.array_equal(after, plain)


def test_clip_skip_is_the_penultimate_layer_normalised(tiny_model_files):
    """A1111's CLIP skip 2 (ours: 1 skipped layer): the hidden state before the last layer, through the final
    layer norm, as diffusers defines `clip_skip`."""
    pipe = StableDiffusionPipeline.from_pretrained(tiny_model_files["diffusers"], local_files_only=True)
    tokens = pipe.tokenizer(PROMPT, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = pipe.text_encoder(tokens.input_ids, output_hidden_states=True).hidden_states
        expected = pipe.text_encoder.final_layer_norm(hidden[-2])
        with skipped_layers(pipe.text_encoder, 1):
            got = plain_embeddings(PROMPT, pipe.tokenizer, pipe.text_encoder)
        again = plain_embeddings(PROMPT, pipe.tokenizer, pipe.text_encoder)
    assert torch.allclose(got, expected, atol=1e-6)
    assert len(pipe.text_encoder.encoder.layers) == 2 and not torch.allclose(again, got)


def test_the_vae_override_matches_decoding_with_that_vae(app, tiny_model_files, adapter_files):
    other, _ = generate(app, vae={"model_name": "othervae", "base_model": "sd-1", "model_type": "vae"})
    pipe = load_sd_pipeline(tiny_model_files["diffusers"], vae=AutoencoderKL.from_pretrained(adapter_files["othervae"]))
    image = pipe(
        PROMPT, negative_prompt="", num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
        generator=torch.Generator("cpu").manual_seed(1),
    ).images[0]  # fmt: skip
    assert mean_difference(other, np.asarray(image.convert("RGB"), dtype=np.float64)) <= 1.0


def test_sequential_offload_gives_the_same_images_with_every_kind_of_adapter(
    app, make_settings, tiny_model_files, adapter_files
):
    """`offload: sequential` keeps every part's weights in RAM and streams a layer's in while it runs; adapters
    go into the layers with the offload hooks off and come out the same way. On the CPU the weights stream
    from RAM to RAM through the same hooks a GPU run uses: the images, plain, with each kind of LoRA and with an
    embedding, are the default's, and between runs the parts' own parameters hold nothing (the `meta` device)."""
    cases = [
        {},
        *({"loras": [(lora(f"lora-{fmt}"), 0.8)]} for fmt in LORA_FORMATS),
        {"loras": [(lora("lora-kohya"), 0.5), (lora("style"), 0.7)]},
        {"prompt": "a photo of <myemb>"},
        {},
    ]
    expected = [generate(app, **case)[0] for case in cases]
    streamed = with_settings(make_settings, "sequential", offload="sequential")
    with adapters_app(streamed, tiny_model_files, adapter_files) as other:
        got = [generate(other, **case)[0] for case in cases]
        client, _ = other
        assert client.get("/api/v1/app/config").json()["generation"]["offload"] == "sequential"
        loader = client.app.state.services.executor.loader
        tiny = ModelIdentifier(model_name="tiny", base_model="sd-1", model_type="main")
        for part in ("unet", "text_encoder", "vae"):
            module = loader.load(tiny, part)
            assert {p.device.type for p in module.parameters()} == {"meta"}, part
    for case, theirs, ours in zip(cases, expected, got, strict=True):
        assert_same_pixels(ours, theirs, f"{case}:")
