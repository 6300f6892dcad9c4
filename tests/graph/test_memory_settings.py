"""The memory and speed settings (`precision`, `attention`, `channels_last`, `vae_tiling`, `compile`, the
cache's tiers) reach the modules that generate, show in `/app/config` and `/app/memory`, and keep the images
what they were."""

from __future__ import annotations

import io
import threading

import numpy as np
import torch
from PIL import Image

from server.graph.context import InvocationContext, RunServices
from server.models.model_cache import ModelCache
from server.models.schema import ModelIdentifier
from tests.graph.conftest import assert_same_pixels, generation_app, run_graph, t2i_graph, with_settings

TINY = ModelIdentifier(model_name="tiny", base_model="sd-1", model_type="main")


def loader_of(client):
    return client.app.state.services.executor.loader


def generate(client, events, **graph) -> np.ndarray:
    session = run_graph(client, events, t2i_graph(**graph))
    assert session["status"] == "completed", session["errors"]
    name = session["results"]["decode"]["image"]["image_name"]
    data = client.get(f"/api/v1/images/{name}/full").content
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def context(client) -> InvocationContext:
    """What a node sees, on this app's services."""
    executor = client.app.state.services.executor
    services = RunServices(
        settings=executor.settings, emit=lambda event: None, loader=executor.loader, images=executor.images, loop=None
    )
    return InvocationContext(services, "session", "node", "node", {}, "prefix", cancel=threading.Event())


def test_precision_attention_and_memory_order_reach_the_unet(settings, make_settings, tiny_model_files):
    custom = with_settings(make_settings, "custom", precision="bfloat16", attention="sliced", channels_last=True)
    with generation_app(custom, tiny_model_files) as (client, events):
        image = generate(client, events, steps=2)
        assert image.std() > 0
        unet = loader_of(client).load(TINY, "unet")
        assert unet.dtype == torch.bfloat16
        assert {type(p).__name__ for p in unet.attn_processors.values()} == {"SlicedAttnProcessor"}
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
        assert not unet.conv_in.weight.is_contiguous()
        generation = client.get("/api/v1/app/config").json()["generation"]
        assert generation["precision"] == "bfloat16" and generation["dtype"] == "bfloat16"
        assert generation["attention"] == "sliced" and generation["channels_last"] is True
        # On the CPU there is no device tier.
        assert generation["vram_cache_bytes"] is None
        assert generation["offload"] == "none" and generation["compile"] == "off"
    with generation_app(settings, tiny_model_files) as (client, events):
        generate(client, events, steps=2)
        unet = loader_of(client).load(TINY, "unet")
        assert unet.dtype == torch.float32
        assert {type(p).__name__ for p in unet.attn_processors.values()} == {"AttnProcessor2_0"}
        assert unet.conv_in.weight.is_contiguous()
        assert client.get("/api/v1/app/config").json()["generation"]["dtype"] == "float32"


def test_sliced_attention_gives_the_same_image(settings, make_settings, tiny_model_files):
    with generation_app(settings, tiny_model_files) as (client, events):
        whole = generate(client, events, seed=5)
    sliced = with_settings(make_settings, "sliced", attention="sliced")
    with generation_app(sliced, tiny_model_files) as (client, events):
        assert_same_pixels(generate(client, events, seed=5), whole, "sliced attention:")


def test_vae_tiling_applies_above_its_size_or_when_on(settings, make_settings, tiny_model_files):
    # The tiny VAE's tile is 256 px, so a 320 px image is decoded as four overlapping tiles when tiled.
    images = {}
    for mode in ("off", "auto", "on"):
        with generation_app(with_settings(make_settings, mode, vae_tiling=mode), tiny_model_files) as (client, events):
            images[mode] = generate(client, events, size=320, steps=1, seed=3)
    # Below the automatic threshold the whole image is decoded, exactly as without tiling.
    assert np.array_equal(images["auto"], images["off"])
    # Tiles blend at their seams: close to the whole decode but not the same pixels.
    diff = np.abs(images["on"] - images["off"])
    assert diff.max() > 0
    assert diff.mean() < 8, diff.mean()


def test_the_memory_route_shows_what_the_cache_holds(generation):
    client, events = generation
    assert client.get("/api/v1/app/memory").json()["parts"] == []
    generate(client, events, steps=1)
    memory = client.get("/api/v1/app/memory").json()
    loader = loader_of(client)
    parts = {part["submodel"]: part for part in memory["parts"]}
    assert {"unet", "text_encoder", "vae", "tokenizer", "scheduler"} <= set(parts)
    for name in ("unet", "text_encoder", "vae"):
        module = loader.load(TINY, name)
        expected = sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])
        assert parts[name]["bytes"] == expected and parts[name]["device"] == "cpu"
        assert parts[name]["model"] == "sd-1/main/tiny"
    assert memory["ram"]["bytes"] == sum(part["bytes"] for part in memory["parts"])
    assert memory["ram"]["limit_bytes"] == 6 * 1024**3
    assert memory["vram"] is None and memory["device"] == "cpu"
    # torch's allocator figures are CUDA's.
    assert memory["device_allocated_bytes"] is None and memory["device_peak_bytes"] is None


def test_ram_cache_gb_bounds_the_cache_and_parts_come_back_from_disk(settings, make_settings, tiny_model_files):
    # 0 GiB keeps only the newest part: every node reads its model again, and generation still works.
    with generation_app(with_settings(make_settings, "zero", ram_cache_gb=0.0), tiny_model_files) as (client, events):
        first = generate(client, events, seed=9)
        loads = loader_of(client).loads
        assert len(loader_of(client).cached_parts()) == 1
        generate(client, events, seed=10)
        assert loader_of(client).loads >= loads + 3
        assert client.get("/api/v1/app/config").json()["generation"]["ram_cache_bytes"] == 0
    with generation_app(settings, tiny_model_files) as (client, events):
        assert np.array_equal(generate(client, events, seed=9), first)


def test_a_device_tier_moves_the_least_recently_used_part_and_never_the_running_nodes(settings, tiny_model_files):
    """The GPU tier's rules, with the CPU as the device (this machine has no GPU): a part over the device budget
    moves to RAM rather than leaving the cache, comes back on use without a read from disk, and the parts the
    running node uses stay put."""
    with generation_app(settings, tiny_model_files) as (client, _):
        loader = loader_of(client)
        loader.ensure_device()
        unet_bytes = sum(t.numel() * t.element_size() for t in loader.load(TINY, "unet").parameters())
        # A fresh cache whose device tier has room for the UNet alone.
        cache = loader.cache = ModelCache(settings.ram_cache_bytes)
        cache.use_device(loader.device, vram_limit_bytes=unet_bytes + 1)
        loader.begin_node()
        unet = loader.load(TINY, "unet")
        loader.load(TINY, "text_encoder")
        # Both belong to the running node: neither moves, though together they exceed the budget.
        assert cache.moves_to_ram == 0 and cache.device_bytes > cache.vram_limit_bytes
        loader.begin_node()
        loader.load(TINY, "vae")
        state = client.get("/api/v1/app/memory").json()
        # The UNet, least recently used, makes room for the VAE; the text encoder and the VAE fit beside each other.
        tiers = {part["submodel"]: part["tier"] for part in state["parts"]}
        assert tiers == {"unet": "ram", "text_encoder": "vram", "vae": "vram"}
        assert cache.moves_to_ram == 1
        assert state["vram"]["bytes"] == cache.device_bytes <= state["vram"]["limit_bytes"]
        assert len(state["parts"]) == len(loader.cached_parts())  # moved, not evicted
        loads = loader.loads
        loader.begin_node()
        assert loader.load(TINY, "unet") is unet
        assert loader.loads == loads and cache.moves_to_device == 1
        tiers = {part["submodel"]: part["tier"] for part in client.get("/api/v1/app/memory").json()["parts"]}
        # The budget holds the UNet alone, so both others wait in RAM now.
        assert tiers == {"unet": "vram", "text_encoder": "ram", "vae": "ram"} and cache.moves_to_ram == 3


def test_compile_unet_wraps_the_cached_unet_once(settings, make_settings, tiny_model_files):
    """`compile: unet` runs the UNet through torch.compile, one compiled module per loaded UNet. Compiling the
    tiny UNet with inductor takes about four minutes on this 2-core CPU, so this checks the wiring and leaves
    the compiled run itself to bench/fullsize.py on a GPU."""
    compiled_settings = with_settings(make_settings, "compiled", compile="unet")
    with generation_app(compiled_settings, tiny_model_files) as (client, _):
        loader = loader_of(client)
        unet = loader.load(TINY, "unet")
        ctx = context(client)
        runner = ctx.unet_runner(unet)
        assert isinstance(runner, torch._dynamo.eval_frame.OptimizedModule) and runner._orig_mod is unet
        assert ctx.unet_runner(unet) is runner
        assert runner.config is unet.config and runner.dtype == unet.dtype
    with generation_app(settings, tiny_model_files) as (client, _):
        unet = loader_of(client).load(TINY, "unet")
        assert context(client).unet_runner(unet) is unet
