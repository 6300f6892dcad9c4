"""Requests the schema fuzzer (test_fuzz.py) once answered with a 500 or with an undocumented answer, kept
as plain examples so they stay fixed whatever the fuzzer happens to draw next time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import build_app
from tests.conftest import BASE_URL
from tests.models.conftest import settle
from tests.reliability.fuzz_target import fuzz_settings

MODELS = "/api/v1/models"
TOO_LONG_NAME = "é" * 200  # 400 bytes: over the 255-byte limit on one file name


def model_body(**fields) -> dict:
    body = {
        "model_name": "tiny",
        "base_model": "sd-1",
        "model_type": "main",
        "path": "models/sd-1/main/tiny",
        "description": None,
        "model_format": "diffusers",
        "variant": "normal",
        "prediction_type": "epsilon",
        "config": None,
        "vae": None,
    }
    return {**body, **fields}


def names(client: TestClient) -> set[str]:
    return {m["model_name"] for m in client.get(f"{MODELS}/").json()["models"]}


@pytest.fixture
def models_client(tmp_path: Path, tiny_model_files, database_url) -> TestClient:
    """A server whose models are the tiny model as a diffusers folder and as a checkpoint, in its models folder."""
    settings = fuzz_settings(tmp_path / "root", database_url)
    settings.create_layout()
    main = settings.models_dir / "sd-1" / "main"
    shutil.copytree(tiny_model_files["diffusers"], main / "tiny")
    shutil.copyfile(tiny_model_files["checkpoint"], main / "tiny-ckpt.safetensors")
    settle(main / "tiny")
    settle(main / "tiny-ckpt.safetensors")
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        client.portal.call(client.app.state.services.models.first_sync.wait)
        assert names(client) == {"tiny", "tiny-ckpt"}
        yield client


def test_paths_with_a_nul_byte_are_422_naming_the_field(models_client: TestClient) -> None:
    answers = {
        "location": models_client.post(f"{MODELS}/import", json={"location": "/a\x00b"}),
        "search_path": models_client.get(f"{MODELS}/search", params={"search_path": "/a\x00b"}),
        "convert_dest_directory": models_client.put(
            f"{MODELS}/convert/sd-1/main/tiny", params={"convert_dest_directory": "/a\x00"}
        ),
        "merge_dest_directory": models_client.put(
            f"{MODELS}/merge/sd-1", json={"model_names": ["tiny", "other"], "merge_dest_directory": "/\x00"}
        ),
        "path": models_client.post(f"{MODELS}/add", json=model_body(model_name="x", path="a\x00")),
        "config": models_client.patch(f"{MODELS}/sd-1/main/tiny", json=model_body(config="\x00")),
    }
    for field, response in answers.items():
        assert response.status_code == 422, (field, response.text)
        assert field in response.json()["detail"]
    assert names(models_client) == {"tiny", "tiny-ckpt"}


def test_names_too_long_for_the_file_system_are_422_not_500(models_client: TestClient, tmp_path: Path) -> None:
    root = models_client.app.state.settings.root_path
    answers = {
        "location": models_client.post(f"{MODELS}/import", json={"location": "0" * 4000}),
        "search_path": models_client.get(f"{MODELS}/search", params={"search_path": f"{root}/{TOO_LONG_NAME}"}),
        "convert_dest_directory": models_client.put(
            f"{MODELS}/convert/sd-1/main/tiny-ckpt", params={"convert_dest_directory": f"{root}/{TOO_LONG_NAME}"}
        ),
        "path": models_client.post(f"{MODELS}/add", json=model_body(model_name="x", path=TOO_LONG_NAME)),
        # A model in our models folder is renamed on disk with it: the new name must fit there too.
        "model_name": models_client.patch(f"{MODELS}/sd-1/main/tiny", json=model_body(model_name="€" * 100)),
    }
    for field, response in answers.items():
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"].startswith(f"{field} is too long for the file system"), response.text
    # A legacy config name no file could have is simply not a config we know.
    config = models_client.patch(f"{MODELS}/sd-1/main/tiny", json=model_body(config=TOO_LONG_NAME))
    assert config.status_code == 422 and "config" in config.json()["detail"]
    assert names(models_client) == {"tiny", "tiny-ckpt"}
    assert (root / "models" / "sd-1" / "main" / "tiny" / "model_index.json").is_file()
    # A name that fits (80 × 3 bytes) still renames the folder with it.
    renamed = models_client.patch(f"{MODELS}/sd-1/main/tiny", json=model_body(model_name="€" * 80))
    assert renamed.status_code == 200, renamed.text
    assert (root / "models" / "sd-1" / "main" / ("€" * 80) / "model_index.json").is_file()


def test_405_names_every_method_of_a_path_that_several_routes_share(client: TestClient) -> None:
    # Each resource declares one route per method; Starlette's 405 used to list the first route's only.
    expected = {
        "/api/v1/boards/": "GET, HEAD, POST",
        "/api/v1/images/some.png": "DELETE, GET, HEAD, PATCH",
        "/api/v1/models/sd-1/main/tiny": "DELETE, GET, HEAD, PATCH",
        "/api/v1/sessions/some-id/invoke": "DELETE, PUT",
        "/api/v1/app/version": "GET, HEAD",
    }
    for path, allow in expected.items():
        response = client.options(path)
        assert response.status_code == 405, path
        assert response.headers["allow"] == allow, path
        assert response.json()["detail"] == f"Method OPTIONS is not allowed on {path}"


@pytest.mark.parametrize("path", ["/api/v1/images/", "/api/v1/boards/", "/api/v1/sessions/"])
def test_an_offset_past_what_sqlite_can_hold_is_422(client: TestClient, path: str) -> None:
    assert client.get(path, params={"offset": 2**63 - 1}).status_code == 200
    response = client.get(path, params={"offset": 345053074158040322670592})
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["loc"] == ["query", "offset"]


def test_405_names_the_methods_of_the_resource_the_path_names(client: TestClient) -> None:
    # `/images/upload` also matches `/images/{image_name}`, but it is another resource.
    for path, allow in {"/api/v1/images/upload": "POST", "/api/v1/images/delete": "POST"}.items():
        response = client.options(path)
        assert (response.status_code, response.headers["allow"]) == (405, allow), path


def test_the_document_says_what_the_server_takes(client: TestClient) -> None:
    """Requests the server answers one way while the document promised another."""
    document = client.get("/openapi.json").json()
    # A graph without an `id` is accepted (it is given one), so the documented body does not require it.
    created = client.post("/api/v1/sessions/", json={"nodes": {}, "edges": []})
    assert created.status_code == 201 and created.json()["graph"]["id"]
    body_ref = document["paths"]["/api/v1/sessions/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    body = document["components"]["schemas"][body_ref["$ref"].rsplit("/", 1)[-1]]
    assert "id" not in body.get("required", [])
    # Model keys in paths take only the bases and types there are: the document lists them.
    merge = client.put("/api/v1/models/merge/sd-0", json={"model_names": ["a", "b"]})
    assert merge.status_code == 422 and merge.json()["errors"][0]["loc"] == ["path", "base_model"]
    params = document["paths"]["/api/v1/models/merge/{base_model}"]["put"]["parameters"]
    assert params[0]["schema"] == {"enum": ["sd-1", "sd-2", "sdxl", "sdxl-refiner"]}
    params = document["paths"]["/api/v1/models/{base_model}/{model_type}/{model_name}"]["get"]["parameters"]
    assert [p.get("schema", {}).get("enum") is not None for p in params] == [True, True, False]


def test_a_node_may_leave_out_its_id_and_the_document_says_so(client: TestClient) -> None:
    created = client.post("/api/v1/sessions/", json={"nodes": {"n": {"type": "integer", "value": 3}}, "edges": []})
    assert created.status_code == 201, created.text
    assert created.json()["graph"]["nodes"]["n"]["id"] == "n"
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "id" not in schemas["IntegerNode"].get("required", [])
