"""Model parts are loaded once, kept in an LRU bounded in bytes, and a checkpoint gives what its diffusers
twin gives."""

from __future__ import annotations

import io

import msgspec
import numpy as np
import pytest
from PIL import Image

from server.events import ModelLoadCompleted, ModelLoadStarted
from server.models.loader import ModelLoadError
from server.models.schema import ModelIdentifier
from tests.graph.conftest import generation_app, run_graph, t2i_graph

TINY = ModelIdentifier(model_name="tiny", base_model="sd-1", model_type="main")


def loader_of(client):
    return client.app.state.services.executor.loader


def test_a_part_is_loaded_once_and_announced(generation):
    client, events = generation
    loader = loader_of(client)
    unet = loader.load(TINY, "unet", session_id="s1")
    assert loader.load(TINY, "unet", session_id="s2") is unet
    assert loader.loads == 1 and loader.hits == 1
    started = events.wait_for(lambda e: isinstance(e, ModelLoadCompleted))
    assert (started.session_id, started.model, started.submodel) == ("s1", TINY, "unet")
    assert [e.submodel for e in events.events if isinstance(e, ModelLoadStarted)] == ["unet"]
    assert str(unet.device) == "cpu" and str(unet.dtype) == "torch.float32"
    assert client.get("/api/v1/app/config").json()["device"] == "cpu"


def tensor_bytes(module) -> int:
    """What a loaded part holds in memory: every parameter and buffer, element count times element size."""
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_the_cache_is_bounded_in_bytes(settings, tiny_model_files):
    with generation_app(settings, tiny_model_files) as (client, _):
        sizes = {}
        loader = loader_of(client)
        for part in ("unet", "text_encoder", "vae"):
            sizes[part] = tensor_bytes(loader.load(TINY, part))
            assert loader.total_bytes == sum(sizes.values()), part
    assert all(size > 0 for size in sizes.values())
    # Room for the UNet and the VAE but not for the text encoder too: the least recently used part goes.
    limit = sizes["unet"] + sizes["vae"] + sizes["text_encoder"] - 1
    bounded = msgspec.structs.replace(
        settings, model_cache_bytes=limit, root=str(settings.root_path.parent / "bounded")
    )
    with generation_app(bounded, tiny_model_files) as (client, _):
        loader = loader_of(client)
        for part in ("unet", "text_encoder", "unet", "vae"):
            loader.load(TINY, part)
        assert [part for _, part in loader.cached_parts()] == ["unet", "vae"]
        assert loader.total_bytes == sizes["unet"] + sizes["vae"] <= limit
        assert loader.loads == 3
        loader.load(TINY, "text_encoder")
        assert loader.loads == 4


def test_unknown_models_and_parts_are_clear_errors(generation):
    client, _ = generation
    loader = loader_of(client)
    with pytest.raises(ModelLoadError, match="model sd-1/main/nope is not registered"):
        loader.load(ModelIdentifier(model_name="nope", base_model="sd-1", model_type="main"), "unet")
    with pytest.raises(ModelLoadError, match="unknown submodel 'refiner'"):
        loader.load(TINY, "refiner")


def test_a_checkpoint_gives_the_same_pixels_as_its_diffusers_folder(make_settings, tmp_path, tiny_model_files):
    def image(fmt: str) -> np.ndarray:
        root = make_settings(root=str(tmp_path / fmt))
        with generation_app(root, tiny_model_files, fmt) as (client, events):
            session = run_graph(client, events, t2i_graph(seed=11))
            assert session["status"] == "completed", session["errors"]
            name = session["results"]["decode"]["image"]["image_name"]
            return np.asarray(Image.open(io.BytesIO(client.get(f"/api/v1/images/{name}/full").content)).convert("RGB"))

    assert np.array_equal(image("checkpoint"), image("diffusers"))
