"""GET /api/v1/nodes/ describes every node type of the contract well enough to build a graph from it."""

from __future__ import annotations

CONTRACT_TYPES = {
    "integer", "float", "string", "boolean", "rand_int", "range", "iterate", "collect", "image",
    "main_model_loader", "compel", "noise", "t2l", "denoise_latents", "l2i", "i2l", "metadata_accumulator",
    "img_resize", "img_crop", "img_paste", "img_blur", "img_conv",
    # the second round's adapters
    "lora_loader", "sdxl_lora_loader", "vae_loader", "clip_skip",
}  # fmt: skip
SCHEDULERS = ["ddim", "ddpm", "euler", "euler_a", "heun", "lms", "pndm", "dpmpp_2m", "dpmpp_2m_k", "unipc"]


def catalogue(client) -> dict[str, dict]:
    response = client.get("/api/v1/nodes/")
    assert response.status_code == 200
    return {node["type"]: node for node in response.json()["nodes"]}


def inputs(node: dict) -> dict[str, dict]:
    return {spec["name"]: spec for spec in node["inputs"]}


def test_every_contract_node_type_is_listed(client):
    assert set(catalogue(client)) >= CONTRACT_TYPES


def test_inputs_carry_types_defaults_limits_choices_and_wiring(client):
    nodes = catalogue(client)
    denoise = inputs(nodes["denoise_latents"])
    assert denoise["steps"] == {
        "name": "steps", "type": "integer", "required": False, "input": "any", "default": 10, "minimum": 1, "maximum": 1000,
    }  # fmt: skip
    assert denoise["scheduler"]["choices"] == SCHEDULERS and denoise["scheduler"]["default"] == "euler"
    assert denoise["strength"]["minimum"] == 0 and denoise["strength"]["maximum"] == 1
    assert denoise["unet"] == {
        "name": "unet",
        "type": "unet",
        "required": True,
        "input": "connection",
        "nullable": True,
    }
    assert denoise["noise"]["input"] == "connection" and not denoise["noise"]["required"]
    noise = inputs(nodes["noise"])
    assert noise["width"]["multiple_of"] == 8 and noise["seed"]["maximum"] == 2**32 - 1
    assert inputs(nodes["main_model_loader"])["model"]["input"] == "direct"
    assert inputs(nodes["iterate"])["collection"]["required"]
    assert nodes["t2l"]["inputs"] == nodes["denoise_latents"]["inputs"]


def test_outputs_and_cacheability(client):
    nodes = catalogue(client)
    assert nodes["main_model_loader"]["outputs"] == [
        {"name": "unet", "type": "unet"}, {"name": "clip", "type": "clip"}, {"name": "vae", "type": "vae"},
    ]  # fmt: skip
    assert nodes["compel"]["outputs"] == [{"name": "conditioning", "type": "conditioning"}]
    assert nodes["l2i"]["outputs"][0] == {"name": "image", "type": "image"}
    assert nodes["range"]["outputs"] == [{"name": "collection", "type": "collection[integer]"}]
    assert nodes["compel"]["cacheable"] and not nodes["l2i"]["cacheable"] and not nodes["rand_int"]["cacheable"]


def test_openapi_documents_the_graph_and_session_payloads(client):
    document = client.get("/openapi.json").json()
    post = document["paths"]["/api/v1/sessions/"]["post"]
    # The body is a Graph whose `id` may be left out (the server gives it one); the Session returned has a Graph.
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/NewGraph"}
    assert set(post["responses"]) >= {"201", "400", "422"}
    schemas = document["components"]["schemas"]
    assert "id" not in schemas["NewGraph"].get("required", []) and "id" in schemas["Graph"]["required"]
    assert schemas["NewGraph"]["properties"]["nodes"] == schemas["Graph"]["properties"]["nodes"]
    node_refs = schemas["Graph"]["properties"]["nodes"]["additionalProperties"]["anyOf"]
    assert len(node_refs) == len(catalogue(client)) >= len(CONTRACT_TYPES)
    assert sorted(schemas["DenoiseLatentsNode"]["properties"]["scheduler"]["enum"]) == sorted(SCHEDULERS)
    assert {"/api/v1/sessions/{session_id}/invoke", "/api/v1/nodes/", "/api/v1/queue"} <= set(document["paths"])
    assert set(document["paths"]["/api/v1/sessions/{session_id}/invoke"]) == {"put", "delete"}
