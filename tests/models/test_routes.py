"""Each model route's success and error cases: list, get, import (path, URL, repo id), add, update, delete,
ckpt_confs, and the models_changed events they announce."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from tests.models.conftest import API, Recorder, listed, put_model, sync, write_safetensors


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on loopback serving a folder (the network import's far end)."""
    folder = tmp_path / "served"
    folder.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", folder
    finally:
        server.shutdown()
        server.server_close()


def test_list_filters_by_base_and_type(client: TestClient, root: Path, tiny_model_files, tmp_path: Path) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    lora = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": [4, 2048]}
    write_safetensors(root / "autoimport" / "lora" / "xl-style.safetensors", lora)
    write_safetensors(root / "autoimport" / "embedding" / "word.safetensors", {"emb_params": [1, 1024]})
    sync(client)
    assert set(listed(client)) == {"sd-1/main/tiny", "sdxl/lora/xl-style", "sd-2/embedding/word"}
    assert set(listed(client, model_type="lora")) == {"sdxl/lora/xl-style"}
    both = client.get(f"{API}/", params=[("base_models", "sd-1"), ("base_models", "sd-2")]).json()["models"]
    assert {m["model_name"] for m in both} == {"tiny", "word"}
    bad = client.get(f"{API}/", params={"model_type": "sampler"})
    assert bad.status_code == 422 and "model_type" in bad.json()["detail"]


def test_get_and_404(client: TestClient, root: Path, tiny_model_files) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    sync(client)
    got = client.get(f"{API}/sd-1/main/tiny")
    assert got.status_code == 200 and got.json()["model_format"] == "checkpoint"
    missing = client.get(f"{API}/sd-1/main/nope")
    assert missing.status_code == 404 and missing.json()["detail"] == "model sd-1/main/nope not found"


def test_import_by_path_registers_in_place(
    client: TestClient, root: Path, tiny_model_files, tmp_path, events: Recorder
) -> None:
    library = tmp_path / "library"
    folder = put_model(tiny_model_files["diffusers"], library / "my-model")
    response = client.post(f"{API}/import", json={"location": str(folder)})
    assert response.status_code == 201, response.text
    config = response.json()
    assert config == {
        "model_name": "my-model",
        "base_model": "sd-1",
        "model_type": "main",
        "path": str(folder),
        "description": None,
        "model_format": "diffusers",
        "variant": "normal",
        "prediction_type": "epsilon",
        "config": None,
        "vae": None,
        "error": None,
    }
    assert [e.added for e in events.events] == [["sd-1/main/my-model"]]
    assert folder.is_dir() and not list((root / "models").glob("sd-1/main/*")), "import by path copied files"
    assert yaml.safe_load((root / "configs" / "models.yaml").read_text())["sd-1/main/my-model"]["path"] == str(folder)
    again = client.post(f"{API}/import", json={"location": str(folder)})
    assert again.status_code == 409 and "already registered as sd-1/main/my-model" in again.json()["detail"]
    # A later sync leaves it alone.
    assert sync(client) == {"added": [], "removed": [], "updated": []}


def test_import_errors(client: TestClient, root: Path, tmp_path: Path) -> None:
    missing = client.post(f"{API}/import", json={"location": str(tmp_path / "nothing.safetensors")})
    assert missing.status_code == 404
    text = tmp_path / "readme.txt"
    text.write_text("hi")
    unsupported = client.post(f"{API}/import", json={"location": str(text)})
    assert unsupported.status_code == 415 and "not a model file" in unsupported.json()["detail"]
    unknown = write_safetensors(tmp_path / "unknown.safetensors", {"x": [2, 2]})
    assert client.post(f"{API}/import", json={"location": str(unknown)}).status_code == 415
    assert client.post(f"{API}/import", json={}).status_code == 422
    assert client.post(f"{API}/import", json={"location": "x", "prediction_type": "guess"}).status_code == 422
    nonsense = client.post(f"{API}/import", json={"location": "no such thing"})
    assert nonsense.status_code == 404 and "Hugging Face repo id" in nonsense.json()["detail"]
    assert listed(client) == {}


def test_import_sd2_with_prediction_type_override(client: TestClient, root: Path, tmp_path: Path) -> None:
    from tests.models.conftest import main_checkpoint_shapes

    path = write_safetensors(tmp_path / "sd21.safetensors", main_checkpoint_shapes(1024, text="sd-2"))
    config = client.post(f"{API}/import", json={"location": str(path), "prediction_type": "epsilon"}).json()
    assert (config["base_model"], config["prediction_type"], config["config"]) == (
        "sd-2",
        "epsilon",
        "stable-diffusion/v2-inference.yaml",
    )


def test_import_refuses_a_pickle_that_would_run_code(client: TestClient, tmp_path: Path, tiny_model_files) -> None:
    import torch

    from tests.models.test_probe import _TouchOnUnpickle

    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _TouchOnUnpickle(marker)}, evil)
    response = client.post(f"{API}/import", json={"location": str(evil)})
    assert response.status_code == 415 and "would run code" in response.json()["detail"]
    assert not marker.exists()


def test_import_by_url_streams_into_the_models_folder(
    client: TestClient, root: Path, tiny_model_files, file_server, events: Recorder
) -> None:
    url, served = file_server
    put_model(tiny_model_files["checkpoint"], served / "remote-model.safetensors")
    response = client.post(f"{API}/import", json={"location": f"{url}/remote-model.safetensors"})
    assert response.status_code == 201, response.text
    config = response.json()
    assert config["path"] == "models/sd-1/main/remote-model.safetensors"
    assert (root / config["path"]).read_bytes() == tiny_model_files["checkpoint"].read_bytes()
    assert not [p for p in (root / "models" / ".convert-tmp").iterdir()], "temporary download left behind"
    assert [e.added for e in events.events] == [["sd-1/main/remote-model"]]
    assert sync(client) == {"added": [], "removed": [], "updated": []}
    again = client.post(f"{API}/import", json={"location": f"{url}/remote-model.safetensors"})
    assert again.status_code == 409


def test_import_by_url_errors(client: TestClient, root: Path, file_server) -> None:
    url, served = file_server
    missing = client.post(f"{API}/import", json={"location": f"{url}/missing.safetensors"})
    assert missing.status_code == 404
    (served / "page.html").write_text("<html></html>")
    not_a_model_name = client.post(f"{API}/import", json={"location": f"{url}/page.html"})
    assert not_a_model_name.status_code == 415
    write_safetensors(served / "junk.safetensors", {"x": [2]})
    not_a_model = client.post(f"{API}/import", json={"location": f"{url}/junk.safetensors"})
    assert not_a_model.status_code == 415
    unreachable = client.post(f"{API}/import", json={"location": "http://127.0.0.1:9/model.safetensors"})
    assert unreachable.status_code == 424 and "could not download" in unreachable.json()["detail"]
    assert not list((root / "models").rglob("*.safetensors")), "a failed download left a file behind"
    assert listed(client) == {}


def test_hugging_face_repo_id_offline_is_424(client: TestClient) -> None:
    response = client.post(f"{API}/import", json={"location": "stabilityai/sdxl-turbo"})
    assert response.status_code == 424
    assert "no network access" in response.json()["detail"]


def test_add_registers_files_in_place(client: TestClient, root: Path, tiny_model_files, tmp_path: Path) -> None:
    path = put_model(tiny_model_files["checkpoint"], tmp_path / "mine.safetensors")
    body = {
        "model_name": "hand-made",
        "base_model": "sd-1",
        "model_type": "main",
        "path": str(path),
        "description": "added by hand",
        "model_format": "checkpoint",
        "variant": "normal",
        "prediction_type": "epsilon",
        "config": "stable-diffusion/v1-inference.yaml",
        "vae": None,
    }
    created = client.post(f"{API}/add", json=body)
    assert created.status_code == 201, created.text
    assert created.json() == {**body, "error": None}
    assert client.post(f"{API}/add", json=body).status_code == 409
    other_name = client.post(f"{API}/add", json={**body, "model_name": "again"})
    assert other_name.status_code == 409 and "already registered as sd-1/main/hand-made" in other_name.json()["detail"]
    missing = client.post(f"{API}/add", json={**body, "model_name": "x", "path": str(tmp_path / "gone")})
    assert missing.status_code == 404
    bad_config = client.post(
        f"{API}/add", json={**body, "model_name": "y", "path": str(tiny_model_files["ckpt"]), "config": "v9.yaml"}
    )
    assert bad_config.status_code == 422 and bad_config.json()["errors"][0]["loc"] == ["body", "config"]
    no_default = {k: v for k, v in body.items() if k != "description"}
    incomplete = client.post(f"{API}/add", json={**no_default, "model_name": "z"})
    assert incomplete.status_code == 422 and "`description` is required" in incomplete.json()["detail"]
    bad_name = client.post(f"{API}/add", json={**body, "model_name": "a/b"})
    assert bad_name.status_code == 422
    assert set(listed(client)) == {"sd-1/main/hand-made"}


def test_update_changes_fields_and_rename_moves_files_in_the_models_folder(
    client: TestClient, root: Path, tiny_model_files, events: Recorder
) -> None:
    put_model(tiny_model_files["diffusers"], root / "models" / "sd-1" / "main" / "old-name")
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "other.safetensors")
    sync(client)
    events.clear()
    config = listed(client)["sd-1/main/old-name"]
    described = client.patch(f"{API}/sd-1/main/old-name", json={**config, "description": "nicer"})
    assert described.status_code == 200 and described.json()["description"] == "nicer"
    assert [e.updated for e in events.events] == [["sd-1/main/old-name"]]
    renamed = client.patch(f"{API}/sd-1/main/old-name", json={**described.json(), "model_name": "new-name"})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["path"] == "models/sd-1/main/new-name"
    assert (root / "models" / "sd-1" / "main" / "new-name" / "model_index.json").is_file()
    assert not (root / "models" / "sd-1" / "main" / "old-name").exists()
    assert (events.events[-1].added, events.events[-1].removed) == (["sd-1/main/new-name"], ["sd-1/main/old-name"])
    assert set(listed(client)) == {"sd-1/main/new-name", "sd-1/main/other"}
    assert sync(client) == {"added": [], "removed": [], "updated": []}, "the rename left the folders out of step"
    # A file outside the models folder is renamed in the registry only.
    other = listed(client)["sd-1/main/other"]
    moved = client.patch(f"{API}/sd-1/main/other", json={**other, "model_name": "kept-in-place"})
    assert moved.json()["path"] == "autoimport/main/other.safetensors"


def test_update_errors(client: TestClient, root: Path, tiny_model_files) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "a.safetensors")
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "b.safetensors")
    sync(client)
    a = listed(client)["sd-1/main/a"]
    taken = client.patch(f"{API}/sd-1/main/a", json={**a, "model_name": "b"})
    assert taken.status_code == 409
    retyped = client.patch(f"{API}/sd-1/main/a", json={**a, "model_type": "lora"})
    assert retyped.status_code == 422 and "model_type cannot change" in retyped.json()["detail"]
    partial = client.patch(f"{API}/sd-1/main/a", json={"description": "only this"})
    assert partial.status_code == 422, "PATCH takes the full config; no field has a default"
    unknown = client.patch(f"{API}/sd-1/main/zzz", json=a)
    assert unknown.status_code == 404
    gone = client.patch(f"{API}/sd-1/main/a", json={**a, "path": "/nowhere/x.safetensors"})
    assert gone.status_code == 404
    assert listed(client)["sd-1/main/a"] == a, "a refused update changed something"


def test_delete_unregisters_and_deletes_files_only_inside_the_models_folder(
    client: TestClient, root: Path, tiny_model_files, tmp_path: Path, events: Recorder
) -> None:
    owned = put_model(tiny_model_files["diffusers"], root / "models" / "sd-1" / "main" / "owned")
    outside = put_model(tiny_model_files["checkpoint"], tmp_path / "outside.safetensors")
    sync(client)
    client.post(f"{API}/import", json={"location": str(outside)})
    events.clear()
    refused = client.delete(f"{API}/sd-1/main/outside", params={"delete_files": "true"})
    assert refused.status_code == 403 and outside.is_file()
    assert "sd-1/main/outside" in listed(client)
    assert client.delete(f"{API}/sd-1/main/outside").status_code == 204
    assert outside.is_file(), "files outside the models folder are never deleted"
    assert client.delete(f"{API}/sd-1/main/owned", params={"delete_files": "true"}).status_code == 204
    assert not owned.exists()
    assert [e.removed for e in events.events] == [["sd-1/main/outside"], ["sd-1/main/owned"]]
    assert listed(client) == {}
    assert client.delete(f"{API}/sd-1/main/owned").status_code == 404
    assert yaml.safe_load((root / "configs" / "models.yaml").read_text()) == {"__metadata__": {"version": "1"}}


def test_ckpt_confs_lists_the_shipped_legacy_configs(client: TestClient) -> None:
    confs = client.get(f"{API}/ckpt_confs").json()
    for name in (
        "v1-inference.yaml",
        "v1-inpainting-inference.yaml",
        "v2-inference.yaml",
        "v2-inference-v.yaml",
        "v2-inpainting-inference.yaml",
        "sd_xl_base.yaml",
        "sd_xl_refiner.yaml",
    ):
        assert f"stable-diffusion/{name}" in confs
    assert confs == sorted(confs)


def test_openapi_documents_the_model_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/api/v1/models/{base_model}/{model_type}/{model_name}" in paths
    assert set(paths["/api/v1/models/{base_model}/{model_type}/{model_name}"]) == {"get", "patch", "delete"}
    assert "/api/v1/models/merge/{base_model}" in paths and "/api/v1/models/sync" in paths
