"""Metadata: embedded in our PNGs as tEXt `invokeai_metadata` / `invokeai_graph`, served by `/metadata`; the
graph comes from the session with every `metadata_accumulator` node and edge removed; foreign tools' metadata in
uploads is kept and parsed."""

from __future__ import annotations

import io
import json
import struct
import zlib

import msgspec
import pytest
from PIL import Image

from server.db import ItemStorage
from server.images.embedded import stripped_graph_json
from server.images.foreign import parse_a1111
from tests.images.conftest import call, jpeg_bytes, make_image, png_bytes, service, upload, webp_bytes

CORE_METADATA = {
    "generation_mode": "txt2img",
    "positive_prompt": "a lighthouse at dusk",
    "negative_prompt": "",
    "seed": 42,
    "steps": 8,
    "cfg_scale": 7.5,
    "scheduler": "euler",
    "model": {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"},
}


def edge(source: str, source_field: str, destination: str, destination_field: str) -> dict:
    return {
        "source": {"node_id": source, "field": source_field},
        "destination": {"node_id": destination, "field": destination_field},
    }


def graph_with_accumulators() -> dict:
    """Two accumulators; `meta` has several edges in a row, in and out, so a remove-while-iterating bug shows."""
    return {
        "id": "g1",
        "nodes": {
            "seed": {"id": "seed", "type": "integer", "value": 42},
            "prompt": {"id": "prompt", "type": "string", "value": "a lighthouse at dusk"},
            "meta": {"id": "meta", "type": "metadata_accumulator", "generation_mode": "txt2img"},
            "meta2": {"id": "meta2", "type": "metadata_accumulator"},
            "decode": {"id": "decode", "type": "l2i"},
        },
        "edges": [
            edge("seed", "value", "meta", "seed"),
            edge("prompt", "value", "meta", "positive_prompt"),
            edge("meta", "metadata", "decode", "metadata"),
            edge("meta", "metadata", "meta2", "metadata"),
            edge("seed", "value", "decode", "seed_for_test"),
            edge("meta2", "metadata", "decode", "other"),
        ],
    }


def assert_no_accumulator(graph: dict) -> None:
    assert all(node["type"] != "metadata_accumulator" for node in graph["nodes"].values())
    ids = set(graph["nodes"])
    for e in graph["edges"]:
        assert e["source"]["node_id"] in ids and e["destination"]["node_id"] in ids


class Session(msgspec.Struct):
    id: str
    graph: dict
    status: str = "completed"
    results: dict = {}


def test_stripped_graph_removes_every_accumulator_node_and_edge():
    stripped = json.loads(stripped_graph_json(json.dumps(graph_with_accumulators())))
    assert set(stripped["nodes"]) == {"seed", "prompt", "decode"}
    assert stripped["edges"] == [edge("seed", "value", "decode", "seed_for_test")]
    assert stripped["id"] == "g1"
    # Other nodes pass through untouched, values included.
    assert stripped["nodes"]["seed"] == {"id": "seed", "type": "integer", "value": 42}
    # Bytes in, and a graph without accumulators comes back as it was.
    plain = json.dumps({"id": "g", "nodes": {"a": {"id": "a", "type": "integer"}}, "edges": []})
    assert json.loads(stripped_graph_json(plain.encode())) == json.loads(plain)


def test_saved_png_embeds_metadata_and_stripped_graph(client):
    metadata = json.dumps(CORE_METADATA)
    dto = call(
        client,
        service(client).save,
        make_image(64, 64),
        session_id=None,
        node_id="decode",
        metadata=metadata,
        graph=json.dumps(graph_with_accumulators()),
    )
    assert dto.image_category == "general" and dto.node_id == "decode"
    with Image.open(io.BytesIO(client.get(dto.image_url).content)) as png:
        assert json.loads(png.text["invokeai_metadata"]) == CORE_METADATA
        assert_no_accumulator(json.loads(png.text["invokeai_graph"]))

    body = client.get(f"/api/v1/images/{dto.image_name}/metadata").json()
    assert body["metadata"] == CORE_METADATA
    assert_no_accumulator(body["graph"])
    assert set(body["graph"]["nodes"]) == {"seed", "prompt", "decode"}


def test_metadata_graph_comes_from_the_session(client):
    sessions = ItemStorage(client.app.state.services.db, "sessions", Session)
    session = Session(id="s-1", graph=graph_with_accumulators())
    call(client, sessions.set, "s-1", session)
    dto = call(
        client,
        service(client).save,
        make_image(64, 64),
        session_id="s-1",
        node_id="decode",
        metadata=json.dumps(CORE_METADATA),
        graph=json.dumps(graph_with_accumulators()),
    )
    body = client.get(f"/api/v1/images/{dto.image_name}/metadata").json()
    assert body["metadata"] == CORE_METADATA
    assert_no_accumulator(body["graph"])
    assert body["graph"]["edges"] == [edge("seed", "value", "decode", "seed_for_test")]

    # The session's graph is what is served: change it and /metadata follows.
    changed = graph_with_accumulators()
    changed["nodes"]["seed"]["value"] = 7
    call(client, sessions.set, "s-1", Session(id="s-1", graph=changed))
    body = client.get(f"/api/v1/images/{dto.image_name}/metadata").json()
    assert body["graph"]["nodes"]["seed"]["value"] == 7

    # With the session gone, the graph embedded in the PNG is still there.
    call(client, sessions.delete, "s-1")
    body = client.get(f"/api/v1/images/{dto.image_name}/metadata").json()
    assert body["graph"]["nodes"]["seed"]["value"] == 42
    assert_no_accumulator(body["graph"])


def test_image_without_metadata_has_nulls(client, uploaded):
    body = client.get(f"/api/v1/images/{uploaded['image_name']}/metadata").json()
    assert body == {"metadata": None, "graph": None, "workflow": None}
    assert client.get("/api/v1/images/00000000-0000-4000-8000-000000000000.png/metadata").status_code == 404


def test_uploaded_png_keeps_our_chunks_as_they_are(client):
    metadata = json.dumps(CORE_METADATA, indent=1)
    graph = json.dumps(graph_with_accumulators())
    dto = upload(client, png_bytes(text={"invokeai_metadata": metadata, "invokeai_graph": graph})).json()
    response = client.get(f"/api/v1/images/{dto['image_name']}/metadata")
    # Passed through byte for byte, not re-encoded.
    assert metadata in response.text
    assert response.json() == {"metadata": CORE_METADATA, "graph": graph_with_accumulators(), "workflow": None}
    # And the stored PNG still carries them, so the image moves back to InvokeAI with its metadata.
    with Image.open(io.BytesIO(client.get(dto["image_url"]).content)) as png:
        assert png.text["invokeai_metadata"] == metadata


A1111_PARAMETERS = (
    "a photo of a cat, (masterpiece:1.2)\n"
    "sitting on a mat\n"
    "Negative prompt: blurry, lowres\n"
    "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1234567, Size: 512x768, Model hash: 6ce0161689, "
    'Model: v1-5-pruned-emaonly, Lora hashes: "add_detail: 7c6bad76eb54, x: 1", Version: v1.6.0'
)


def test_a1111_parameters_are_parsed():
    parsed = parse_a1111(A1111_PARAMETERS)
    assert parsed["format"] == "a1111"
    assert parsed["positive_prompt"] == "a photo of a cat, (masterpiece:1.2)\nsitting on a mat"
    assert parsed["negative_prompt"] == "blurry, lowres"
    assert (parsed["steps"], parsed["sampler"], parsed["cfg_scale"], parsed["seed"]) == (
        20,
        "DPM++ 2M Karras",
        7.5,
        1234567,
    )
    assert (parsed["width"], parsed["height"], parsed["model"]) == (512, 768, "v1-5-pruned-emaonly")
    assert parsed["extra"]["Lora hashes"] == "add_detail: 7c6bad76eb54, x: 1"
    assert parsed["parameters"] == A1111_PARAMETERS
    # No settings line and no negative prompt: all of it is the prompt.
    assert parse_a1111("just a prompt")["positive_prompt"] == "just a prompt"


def test_a1111_loras_clip_skip_and_vae_map_onto_our_fields():
    parsed = parse_a1111(
        "a cat <lora:add_detail:0.8>, masterpiece <lora:style>\n"
        "Negative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Clip skip: 2, VAE: vae-ft-mse, "
        'Lora hashes: "add_detail: 7c6bad76eb54, style: 0d1f3e2a"'
    )
    assert parsed["positive_prompt"] == "a cat, masterpiece"  # the tags are LoRAs, not words
    assert parsed["loras"] == [
        {"lora": {"model_name": "add_detail", "model_type": "lora"}, "weight": 0.8, "hash": "7c6bad76eb54"},
        {"lora": {"model_name": "style", "model_type": "lora"}, "weight": 1.0, "hash": "0d1f3e2a"},
    ]
    assert parsed["clip_skip"] == 1 and parsed["vae"] == "vae-ft-mse"  # A1111's "Clip skip: 2" skips one layer
    assert "<lora:add_detail:0.8>" in parsed["parameters"]


def test_a1111_png_upload(client):
    dto = upload(client, png_bytes(text={"parameters": A1111_PARAMETERS})).json()
    metadata = client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()["metadata"]
    assert metadata["format"] == "a1111"
    assert metadata["seed"] == 1234567 and metadata["width"] == 512 and metadata["negative_prompt"] == "blurry, lowres"
    with Image.open(io.BytesIO(client.get(dto["image_url"]).content)) as png:
        assert png.text["parameters"] == A1111_PARAMETERS


@pytest.mark.parametrize("encoder", [jpeg_bytes, webp_bytes], ids=["jpeg", "webp"])
@pytest.mark.parametrize("byte_order", ["utf-16-be", "utf-16-le"])
def test_a1111_exif_user_comment_upload(client, encoder, byte_order):
    exif = Image.Exif()
    # A1111 writes the parameters as EXIF UserComment with the UNICODE charset prefix.
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\x00" + A1111_PARAMETERS.encode(byte_order)
    dto = upload(client, encoder(exif=exif), "a.bin", "application/octet-stream").json()
    metadata = client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()["metadata"]
    assert metadata["format"] == "a1111"
    assert metadata["positive_prompt"].startswith("a photo of a cat")
    assert metadata["steps"] == 20 and metadata["model"] == "v1-5-pruned-emaonly"


def png_with_exif_user_comment(comment: bytes) -> bytes:
    """A PNG whose eXIf chunk holds an EXIF IFD with a UserComment (Pillow writes no EXIF IFD into a PNG, other
    tools do): TIFF header, IFD0 pointing at the EXIF IFD, the comment after it."""
    entry_end = 8 + 2 + 12 + 4
    tiff = (
        b"II*\x00"
        + struct.pack("<IH", 8, 1)
        + struct.pack("<HHII", 0x8769, 4, 1, entry_end)
        + struct.pack("<IH", 0, 1)
        + struct.pack("<HHII", 0x9286, 7, len(comment), entry_end + 2 + 12 + 4)
        + struct.pack("<I", 0)
        + comment
    )
    data = png_bytes()
    ihdr_end = 8 + 4 + 4 + 13 + 4
    exif = struct.pack(">I", len(tiff)) + b"eXIf" + tiff + struct.pack(">I", zlib.crc32(b"eXIf" + tiff))
    return data[:ihdr_end] + exif + data[ihdr_end:]


def test_a1111_exif_user_comment_of_a_png_is_read_too(client):
    # A1111 reads the UserComment of any format's EXIF, PNG included.
    data = png_with_exif_user_comment(b"UNICODE\x00" + A1111_PARAMETERS.encode("utf-16-be"))
    dto = upload(client, data).json()
    metadata = client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()["metadata"]
    assert metadata["format"] == "a1111" and metadata["steps"] == 20


COMFY_PROMPT = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"batch_size": 1, "height": 512, "width": 768}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "beautiful scenery"}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 1], "text": "text, watermark"}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
}
COMFY_WORKFLOW = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}], "links": [], "version": 0.4}


def test_comfyui_png_upload(client):
    chunks = {"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)}
    dto = upload(client, png_bytes(text=chunks)).json()
    body = client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()
    metadata = body["metadata"]
    assert metadata["format"] == "comfyui"
    assert metadata["positive_prompt"] == "beautiful scenery"
    assert metadata["negative_prompt"] == "text, watermark"
    assert (metadata["seed"], metadata["steps"], metadata["cfg_scale"]) == (156680208700286, 20, 8)
    assert (metadata["sampler"], metadata["scheduler"]) == ("euler", "normal")
    assert (metadata["width"], metadata["height"]) == (768, 512)
    assert metadata["model"] == "v1-5-pruned-emaonly.safetensors"
    assert metadata["prompt"] == COMFY_PROMPT and metadata["workflow"] == COMFY_WORKFLOW
    assert body["graph"] is None
    with Image.open(io.BytesIO(client.get(dto["image_url"]).content)) as png:
        assert json.loads(png.text["prompt"]) == COMFY_PROMPT


def test_broken_foreign_metadata_does_not_break_the_upload(client):
    dto = upload(client, png_bytes(text={"invokeai_metadata": "{not json", "prompt": "[[["})).json()
    body = client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()
    assert body == {"metadata": None, "graph": None, "workflow": None}
