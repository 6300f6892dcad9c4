"""Generation through the HTTP API with the tiny model: real torch, real diffusers, real files."""

from __future__ import annotations

import io
import json

import msgspec
import numpy as np
from PIL import Image

from server.events import (
    GeneratorProgress,
    ImageCreated,
    InvocationComplete,
    InvocationStarted,
    ModelLoadStarted,
    SessionComplete,
    SessionStarted,
)
from server.graph.standard import edge
from tests.graph.conftest import MODEL, generation_app, run_graph, t2i_graph

STANDARD_NODES = ["model", "pos", "neg", "noise", "denoise", "meta", "decode"]


def fetch(client, image_name: str) -> Image.Image:
    response = client.get(f"/api/v1/images/{image_name}/full")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


def pixels(client, image_name: str) -> np.ndarray:
    return np.asarray(fetch(client, image_name).convert("RGB"), dtype=np.int16)


def image_of(session: dict, node_id: str = "decode") -> str:
    return session["results"][node_id]["image"]["image_name"]


def test_txt2img_makes_a_png_with_its_metadata_and_graph(generation):
    client, events = generation
    session = run_graph(client, events, t2i_graph(seed=42, size=64, steps=4))
    assert session["status"] == "completed", session["errors"]
    assert sorted(session["executed"]) == sorted(STANDARD_NODES)
    assert session["errors"] == {}
    assert session["results"]["denoise"]["type"] == "latents_output"
    assert session["results"]["decode"]["width"] == session["results"]["decode"]["height"] == 64

    name = image_of(session)
    dto = client.get(f"/api/v1/images/{name}").json()
    assert (dto["session_id"], dto["node_id"], dto["width"], dto["height"]) == (session["id"], "decode", 64, 64)
    png = fetch(client, name)
    metadata = json.loads(png.text["invokeai_metadata"])
    assert metadata["generation_mode"] == "txt2img"
    assert (metadata["seed"], metadata["steps"], metadata["scheduler"], metadata["model"]) == (42, 4, "euler", MODEL)
    graph = json.loads(png.text["invokeai_graph"])
    assert set(graph["nodes"]) == set(STANDARD_NODES) - {"meta"}
    assert all("meta" not in (e["source"]["node_id"], e["destination"]["node_id"]) for e in graph["edges"])
    assert len(graph["edges"]) == 8
    assert client.get(f"/api/v1/images/{name}/metadata").json()["metadata"]["seed"] == 42


def test_events_tell_the_whole_story(generation):
    client, events = generation
    session = run_graph(client, events, t2i_graph(steps=4))
    sid = session["id"]
    mine = events.of(sid)
    assert isinstance(mine[0], SessionStarted)
    assert isinstance(mine[-1], SessionComplete) and mine[-1].status == "completed"
    started = [e.node_id for e in events.of(sid, InvocationStarted)]
    completed = [e.node_id for e in events.of(sid, InvocationComplete)]
    assert started == completed == session["executed"]
    assert started.index("denoise") > max(started.index("pos"), started.index("neg"), started.index("noise"))
    progress = events.of(sid, GeneratorProgress)
    assert [(e.step, e.total_steps) for e in progress] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert all(e.node_id == "denoise" for e in progress)
    final = progress[-1].progress_image
    assert final is not None and final.dataURL.startswith("data:image/jpeg;base64,")
    assert (final.width, final.height) == (64, 64)
    loads = {e.submodel for e in events.of(sid, ModelLoadStarted)}
    assert loads == {"tokenizer", "text_encoder", "unet", "scheduler", "vae"}
    created = [e for e in events.events if isinstance(e, ImageCreated)]
    assert [e.image.image_name for e in created] == [image_of(session)]


def test_same_seed_same_pixels_other_seed_other_pixels(generation):
    client, events = generation
    first = pixels(client, image_of(run_graph(client, events, t2i_graph(seed=5))))
    recomputed = t2i_graph(seed=5)
    for node in recomputed["nodes"].values():
        node["use_cache"] = False  # every node runs again: equality comes from the seed, not the cache
    again = pixels(client, image_of(run_graph(client, events, recomputed)))
    other = pixels(client, image_of(run_graph(client, events, t2i_graph(seed=6))))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_variation_seed_moves_the_image_toward_the_other_seeds(generation):
    client, events = generation

    def image(**settings) -> np.ndarray:
        body = {"model": MODEL, "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "seed": 5}
        graph = client.post("/api/v1/app/graph", json={**body, **settings})
        assert graph.status_code == 200, graph.text
        session = run_graph(client, events, graph.json())
        assert session["status"] == "completed", session["errors"]
        return pixels(client, image_of(session))

    plain, other = image(), image(seed=9)
    assert np.array_equal(image(variation_seed=9, variation_strength=1.0), other)
    near, half = image(variation_seed=9, variation_strength=0.1), image(variation_seed=9, variation_strength=0.5)
    assert 0 < np.abs(near - plain).mean() < np.abs(half - plain).mean()
    assert np.abs(half - other).mean() > 0.5
    refused = client.post("/api/v1/app/graph", json={"model": MODEL, "variation_strength": 0.3})
    assert refused.status_code == 422 and refused.json()["errors"][0]["loc"] == ["body", "variation_seed"]


def test_variation_noise_keeps_the_spread_of_noise():
    import torch

    from server.graph.denoise import blend_noise, make_noise

    noise, other = make_noise(5, 256, 256), make_noise(9, 256, 256)
    assert torch.equal(blend_noise(noise, other, 0.0), noise) and torch.equal(blend_noise(noise, other, 1.0), other)
    half = blend_noise(noise, other, 0.5)
    # Along the arc the spread stays that of noise; the straight mix's would shrink to about 0.71.
    assert abs(float(half.std()) - float(noise.std())) < 0.1
    assert float(((noise + other) / 2).std()) < 0.75


def test_a_seed_only_change_skips_the_prompts_and_model_loading(generation):
    client, events = generation
    run_graph(client, events, t2i_graph(seed=1))
    second = run_graph(client, events, t2i_graph(seed=2))
    cached = {e.node_id: e.cached for e in events.of(second["id"], InvocationComplete)}
    assert cached == {
        "model": True,
        "pos": True,
        "neg": True,
        "meta": False,
        "noise": False,
        "denoise": False,
        "decode": False,
    }
    assert events.of(second["id"], ModelLoadStarted) == []
    assert second["status"] == "completed"


def test_with_no_room_for_models_a_cached_prompt_still_never_loads_the_text_encoder(settings, tiny_model_files):
    # A model cache of 0 bytes keeps only the part loaded last, so the second run must load the UNet again:
    # that it never loads the text encoder shows the prompts really came from the node cache.
    with generation_app(msgspec.structs.replace(settings, model_cache_bytes=0), tiny_model_files) as (client, events):
        run_graph(client, events, t2i_graph(seed=1))
        second = run_graph(client, events, t2i_graph(seed=2))
        loads = [e.submodel for e in events.of(second["id"], ModelLoadStarted)]
        assert "unet" in loads and "vae" in loads
        assert "text_encoder" not in loads and "tokenizer" not in loads


def test_node_cache_entries_is_how_many_outputs_are_kept(settings, tiny_model_files):
    # The standard graph has six cacheable nodes (`l2i` is not): a cache of six entries serves all of them when
    # the same graph runs again.
    with generation_app(msgspec.structs.replace(settings, node_cache_entries=6), tiny_model_files) as (client, events):
        graph = t2i_graph(seed=3, steps=2)
        run_graph(client, events, graph)
        again = run_graph(client, events, graph)
    cached = {e.node_id for e in events.of(again["id"], InvocationComplete) if e.cached}
    assert again["status"] == "completed"
    assert cached == {"model", "pos", "neg", "noise", "denoise", "meta"}


def test_the_node_cache_keeps_the_most_recently_used_outputs(settings, tiny_model_files):
    # One entry: the output of the last run is kept, the one before it is evicted (not the newest).
    def cached(client, events, value: int) -> bool:
        session = run_graph(client, events, {"nodes": {"n": {"type": "integer", "value": value}}, "edges": []})
        assert session["status"] == "completed", session["errors"]
        return [e.cached for e in events.of(session["id"], InvocationComplete)] == [True]

    with generation_app(msgspec.structs.replace(settings, node_cache_entries=1), tiny_model_files) as (client, events):
        assert not cached(client, events, 1)
        assert not cached(client, events, 2)
        assert cached(client, events, 2)
        assert not cached(client, events, 1)


def test_iterate_over_three_seeds_gives_three_images(generation):
    client, events = generation
    graph = t2i_graph(size=64, steps=2)
    graph["nodes"]["seeds"] = {"id": "seeds", "type": "range", "start": 10, "stop": 13}
    graph["nodes"]["each"] = {"id": "each", "type": "iterate"}
    graph["nodes"]["all"] = {"id": "all", "type": "collect"}
    graph["edges"] += [
        edge("seeds", "collection", "each", "collection"),
        edge("each", "item", "noise", "seed"),
        edge("each", "item", "meta", "seed"),
        edge("decode", "image", "all", "item"),
    ]
    session = run_graph(client, events, graph)
    assert session["status"] == "completed", session["errors"]
    names = [image_of(session, f"decode#{i}") for i in range(3)]
    assert len(set(names)) == 3
    assert session["results"]["all"]["collection"] == [{"image_name": name} for name in names]
    # compel and the model loader ran once; noise, denoise and decode once per seed
    assert session["executed"].count("pos") == 1
    assert [session["results"][f"each#{i}"] for i in range(3)] == [
        {"type": "iterate_output", "item": 10 + i, "index": i, "total": 3} for i in range(3)
    ]
    assert {n for n in session["executed"] if n.startswith("noise")} == {"noise#0", "noise#1", "noise#2"}
    seeds = [json.loads(fetch(client, name).text["invokeai_metadata"])["seed"] for name in names]
    assert seeds == [10, 11, 12]
    images = [pixels(client, name) for name in names]
    assert not np.array_equal(images[0], images[1]) and not np.array_equal(images[1], images[2])


def test_img2img_at_strength_zero_returns_the_input_latents_image(generation):
    client, events = generation
    source = image_of(run_graph(client, events, t2i_graph(seed=3, metadata=False)))

    roundtrip = {
        "id": "roundtrip",
        "nodes": {
            "model": {"id": "model", "type": "main_model_loader", "model": MODEL},
            "img": {"id": "img", "type": "image", "image": {"image_name": source}},
            "enc": {"id": "enc", "type": "i2l"},
            "dec": {"id": "dec", "type": "l2i"},
        },
        "edges": [
            edge("img", "image", "enc", "image"),
            edge("model", "vae", "enc", "vae"),
            edge("enc", "latents", "dec", "latents"),
            edge("model", "vae", "dec", "vae"),
        ],
    }
    plain = pixels(client, image_of(run_graph(client, events, roundtrip), "dec"))

    def img2img(strength: float) -> np.ndarray:
        graph = t2i_graph(seed=8, metadata=False)
        graph["nodes"]["img"] = {"id": "img", "type": "image", "image": {"image_name": source}}
        graph["nodes"]["enc"] = {"id": "enc", "type": "i2l"}
        graph["nodes"]["denoise"]["strength"] = strength
        graph["edges"] += [
            edge("img", "image", "enc", "image"),
            edge("model", "vae", "enc", "vae"),
            edge("enc", "latents", "denoise", "latents"),
        ]
        session = run_graph(client, events, graph)
        assert session["status"] == "completed", session["errors"]
        return pixels(client, image_of(session))

    assert np.array_equal(img2img(0.0), plain)
    assert not np.array_equal(img2img(0.75), plain)


def test_image_operations_save_new_images(generation):
    client, events = generation
    source = image_of(run_graph(client, events, t2i_graph(seed=4, metadata=False)))
    graph = {
        "id": "ops",
        "nodes": {
            "img": {"id": "img", "type": "image", "image": {"image_name": source}},
            "big": {"id": "big", "type": "img_resize", "width": 96, "height": 80},
            "crop": {"id": "crop", "type": "img_crop", "x": 8, "y": 8, "width": 32, "height": 24},
            "blur": {"id": "blur", "type": "img_blur", "radius": 2},
            "grey": {"id": "grey", "type": "img_conv", "mode": "L"},
            "paste": {"id": "paste", "type": "img_paste", "x": 4, "y": 4},
        },
        "edges": [
            edge("img", "image", "big", "image"),
            edge("big", "image", "crop", "image"),
            edge("crop", "image", "blur", "image"),
            edge("blur", "image", "grey", "image"),
            edge("big", "image", "paste", "base_image"),
            edge("grey", "image", "paste", "image"),
        ],
    }
    session = run_graph(client, events, graph)
    assert session["status"] == "completed", session["errors"]
    sizes = {node: (r["width"], r["height"]) for node, r in session["results"].items()}
    assert sizes == {
        "img": (64, 64),
        "big": (96, 80),
        "crop": (32, 24),
        "blur": (32, 24),
        "grey": (32, 24),
        "paste": (96, 80),
    }
    assert fetch(client, image_of(session, "grey")).mode == "L"
    assert "invokeai_graph" in fetch(client, image_of(session, "paste")).text


def test_a_failing_node_fails_the_session_with_its_reason(generation):
    client, events = generation
    graph = t2i_graph(size=64, metadata=False)
    graph["nodes"]["other"] = {"id": "other", "type": "noise", "seed": 1, "width": 128, "height": 128}
    graph["edges"] = [e for e in graph["edges"] if e["destination"]["field"] != "noise"]
    graph["edges"] += [edge("other", "noise", "denoise", "noise"), edge("noise", "noise", "denoise", "latents")]
    session = run_graph(client, events, graph)
    assert session["status"] == "failed"
    assert session["errors"] == {"denoise": "`noise` is 128×128 but `latents` are 64×64; make them the same size"}
    assert "decode" not in session["executed"]
    assert events.of(session["id"], SessionComplete)[0].status == "failed"


def test_t2l_is_denoise_latents(generation):
    client, events = generation
    graph = t2i_graph(seed=21)
    first = pixels(client, image_of(run_graph(client, events, graph)))
    graph["nodes"]["denoise"]["type"] = "t2l"
    graph["nodes"]["denoise"]["use_cache"] = False
    session = run_graph(client, events, graph)
    assert session["graph"]["nodes"]["denoise"]["type"] == "t2l"
    assert np.array_equal(pixels(client, image_of(session)), first)


def test_rand_int_is_never_served_from_the_cache(generation):
    client, events = generation
    graph = {"id": "dice", "nodes": {"d": {"id": "d", "type": "rand_int", "low": 1, "high": 7}}, "edges": []}
    values = []
    for _ in range(2):
        session = run_graph(client, events, graph)
        values.append(session["results"]["d"]["value"])
        assert [e.cached for e in events.of(session["id"], InvocationComplete)] == [False]
    assert all(1 <= value < 7 for value in values)


def test_an_image_deleted_before_the_run_fails_the_session(generation):
    client, events = generation
    source = image_of(run_graph(client, events, t2i_graph(seed=4, metadata=False)))
    graph = {
        "id": "blur",
        "nodes": {"img": {"type": "image", "image": {"image_name": source}}, "blur": {"type": "img_blur"}},
        "edges": [edge("img", "image", "blur", "image")],
    }
    created = client.post("/api/v1/sessions/", json=graph).json()
    assert client.delete(f"/api/v1/images/{source}").status_code == 204
    client.put(f"/api/v1/sessions/{created['id']}/invoke")
    assert events.wait_finished(created["id"]).status == "failed"
    assert client.get(f"/api/v1/sessions/{created['id']}").json()["errors"] == {
        "img": f"image {source!r} does not exist"
    }
    # and a graph naming an image that is already gone is refused up front
    response = client.post("/api/v1/sessions/", json=graph)
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"loc": ["body", "nodes", "img", "image"], "msg": f"image {source!r} does not exist"}
    ]
