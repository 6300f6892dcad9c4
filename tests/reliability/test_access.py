"""Who may reach the server and where it may reach on disk, route by route.

Every route is taken from the served /openapi.json (so a route added later is covered without editing this
file), plus /ws and /openapi.json itself:
- with a token set, each one refuses a request without it or with a wrong one (401; the WebSocket handshake
  is refused), and accepts the right one; a `?token=` in the query authorises reads only; /health, the web UI
  and /docs still answer without one;
- a Host that is not ours (DNS rebinding) is refused (403) everywhere;
- a cross-origin browser request that changes state, and a cross-origin WebSocket, are refused (403), and
  nothing changes;
- with `search_roots` set, /models/search, import, add, PATCH, a legacy config, and convert and merge
  destinations reach inside the root and those folders only, symlinks included (allowed and refused both),
  and a sibling whose name merely starts with an allowed folder's (`library-evil` beside `library`) is outside;
  deleting a model's files is refused outside the models folder, `models-evil` beside it included.
The checks themselves have their own unit tests in tests/http/test_security.py and tests/models/test_search.py.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from server.app import build_app
from tests.conftest import BASE_URL, start_live_server
from tests.models.conftest import settle

TOKEN = "s3cret-t0ken"
STATE_CHANGING = ("post", "put", "patch", "delete")
EVIL_ORIGIN = "http://evil.example"


def routes(client: TestClient, headers: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """(method, path) of every operation in the served document, path parameters filled with a dummy."""
    document = client.get("/openapi.json", headers=headers).json()
    found = []
    for template, operations in document["paths"].items():
        path = re.sub(r"{[^}]+}", "x", template)
        found += [(method, path) for method in operations]
    assert len(found) > 30, found  # the whole API, not an empty document
    return found


@pytest.fixture
def token_client(make_settings) -> Iterator[TestClient]:
    settings = make_settings(token=TOKEN)
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        yield client


# Token


def test_every_route_refuses_a_missing_or_wrong_token_and_takes_the_right_one(token_client: TestClient) -> None:
    authorised = {"Authorization": f"Bearer {TOKEN}"}
    # /health is in the document too, and is the one route that stays open (test below).
    everything = [(m, p) for m, p in routes(token_client, authorised) if p != "/health"] + [("get", "/openapi.json")]
    for method, path in everything:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Cookie": f"token={TOKEN}"}):
            response = token_client.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert "token" in response.json()["detail"]
        allowed = token_client.request(method, path, headers=authorised)
        assert allowed.status_code not in (401, 403), (method, path, allowed.text)
    # A token in the query string is for what a browser cannot add a header to (<img src>, the WebSocket):
    # it authorises reads, never a change.
    for method, path in everything:
        response = token_client.request(method, path, params={"token": TOKEN})
        if method in STATE_CHANGING:
            assert response.status_code == 401, (method, path)
        else:
            assert response.status_code not in (401, 403), (method, path)


def test_without_a_token_the_probe_the_web_ui_and_the_docs_still_answer(token_client: TestClient) -> None:
    assert token_client.get("/health").json() == {"status": "ok"}
    assert token_client.get("/").status_code == 200
    assert token_client.get("/js/api.js").status_code == 200
    assert token_client.get("/docs").status_code == 200
    assert token_client.get("/openapi.json").status_code == 401


def test_the_websocket_needs_the_token(make_settings) -> None:
    live = start_live_server(make_settings(token=TOKEN))
    try:
        for query in ("", "?token=wrong"):
            with pytest.raises(InvalidStatus) as refused:
                connect(f"{live.ws_url}/ws{query}", open_timeout=10)
            # A handshake closed before it is accepted: uvicorn answers it with 403.
            assert refused.value.response.status_code == 403
        for extra in ({"additional_headers": {"Authorization": f"Bearer {TOKEN}"}}, {}):
            url = f"{live.ws_url}/ws" + ("" if extra else f"?token={TOKEN}")
            with connect(url, open_timeout=10, **extra) as ws:
                ws.send('{"type": "ping"}')
                assert '"pong"' in ws.recv(timeout=10)
    finally:
        live.stop()


# Host (DNS rebinding)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9090", "127.0.0.1.evil.example", "localhost.evil"])
def test_every_route_refuses_a_foreign_host(client: TestClient, host: str) -> None:
    everything = [*routes(client), ("get", "/openapi.json"), ("get", "/health"), ("get", "/"), ("get", "/docs")]
    for method, path in everything:
        response = client.request(method, path, headers={"Host": host})
        assert response.status_code == 403, (method, path, response.text)
        assert "is not allowed" in response.json()["detail"]


def test_the_websocket_refuses_a_foreign_host(live_server) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(f"{live_server.ws_url}/ws", additional_headers={"Host": "evil.example"}, open_timeout=10)
    assert refused.value.response.status_code == 403


# Origin


def test_every_state_changing_route_refuses_another_origin_and_changes_nothing(client: TestClient) -> None:
    from tests.images.conftest import png_bytes, upload

    image = upload(client, png_bytes()).json()["image_name"]
    board = client.post("/api/v1/boards/", json={"board_name": "mine"}).json()["board_id"]
    before = (client.get("/api/v1/images/").json(), client.get("/api/v1/boards/").json())
    # The real names where a route takes one, so a request that got through would change something.
    changing = [
        (method, path.replace("/images/x", f"/images/{image}").replace("/boards/x", f"/boards/{board}"))
        for method, path in routes(client)
        if method in STATE_CHANGING
    ]
    assert len(changing) >= 15, changing
    for origin in (EVIL_ORIGIN, "null", "http://127.0.0.1:9091", "https://127.0.0.1:9090.evil.example"):
        for method, path in changing:
            response = client.request(method, path, headers={"Origin": origin}, json={})
            assert response.status_code == 403, (origin, method, path, response.text)
            assert "Origin" in response.json()["detail"]
    assert (client.get("/api/v1/images/").json(), client.get("/api/v1/boards/").json()) == before
    # Reads need no Origin check (the browser's same-origin policy keeps their answers from the page), and
    # the server's own page may change things.
    assert client.get("/api/v1/images/", headers={"Origin": EVIL_ORIGIN}).status_code == 200
    same = client.delete(f"/api/v1/images/{image}", headers={"Origin": BASE_URL})
    assert same.status_code == 204


def test_a_cross_origin_websocket_is_refused(live_server) -> None:
    for origin in (EVIL_ORIGIN, "null"):
        with pytest.raises(InvalidStatus) as refused:
            connect(f"{live_server.ws_url}/ws", origin=origin, open_timeout=10)
        assert refused.value.response.status_code == 403
    with connect(f"{live_server.ws_url}/ws", origin=live_server.url, open_timeout=10) as ws:
        ws.send('{"type": "ping"}')
        assert '"pong"' in ws.recv(timeout=10)


# Where the server may read and write


@pytest.fixture
def fenced(tmp_path: Path, tiny_model_files, make_settings) -> Iterator[tuple[TestClient, Path, Path]]:
    """A server whose `search_roots` is one library folder outside its root; its sibling `library-evil`, whose
    name starts with the allowed folder's, is off limits (`/x/library` does not allow `/x/library-evil`).
    Both hold the tiny model as a checkpoint and as two diffusers folders, and a legacy config."""
    allowed, forbidden = tmp_path / "library", tmp_path / "library-evil"
    assert str(forbidden).startswith(str(allowed))
    for folder in (allowed, forbidden):
        folder.mkdir()
        shutil.copyfile(tiny_model_files["checkpoint"], folder / "ckpt.safetensors")
        shutil.copytree(tiny_model_files["diffusers"], folder / "one")
        shutil.copytree(tiny_model_files["diffusers"], folder / "two")
        shutil.copyfile(Path(__file__).parents[2] / "server/models/configs/stable-diffusion/v1-inference.yaml",
                        folder / "v1.yaml")  # fmt: skip
        (folder / "out").mkdir()
        for path in folder.iterdir():
            settle(path)
    settings = make_settings(search_roots=[str(allowed)])
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        client.portal.call(client.app.state.services.models.first_sync.wait)
        yield client, allowed, forbidden


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 403, response.text
    assert field in response.json()["detail"] and "search_roots" in response.json()["detail"]


def _model(name: str, path: Path, **fields) -> dict:
    return {
        "model_name": name,
        "base_model": "sd-1",
        "model_type": "main",
        "path": str(path),
        "description": None,
        "model_format": "diffusers" if path.is_dir() else "checkpoint",
        "variant": "normal",
        "prediction_type": "epsilon",
        "config": None,
        "vae": None,
        **fields,
    }


def test_search_and_import_reach_the_root_and_search_roots_only(fenced) -> None:
    client, allowed, forbidden = fenced
    root = client.app.state.settings.root_path
    assert client.get("/api/v1/models/search", params={"search_path": str(allowed)}).json() == [
        str(allowed / "ckpt.safetensors"),
        str(allowed / "one"),
        str(allowed / "two"),
    ]
    assert client.get("/api/v1/models/search", params={"search_path": str(root)}).status_code == 200
    outside = (forbidden, forbidden / "one", allowed / ".." / forbidden.name, allowed.parent, Path("/"), Path("/etc"))
    for path in outside:
        _refused(client.get("/api/v1/models/search", params={"search_path": str(path)}), "search_path")
    _refused(client.post("/api/v1/models/import", json={"location": str(forbidden / "ckpt.safetensors")}), "location")
    relative = f"../{forbidden.name}/ckpt.safetensors"
    _refused(client.post("/api/v1/models/import", json={"location": relative}), "location")
    imported = client.post("/api/v1/models/import", json={"location": str(allowed / "ckpt.safetensors")})
    assert imported.status_code == 201, imported.text
    assert imported.json()["path"] == str(allowed / "ckpt.safetensors")


def test_add_and_patch_register_files_in_the_root_and_search_roots_only(fenced) -> None:
    client, allowed, forbidden = fenced
    _refused(client.post("/api/v1/models/add", json=_model("far", forbidden / "one")), "path")
    _refused(client.post("/api/v1/models/add", json=_model("far", Path(f"../{forbidden.name}/one"))), "path")
    added = client.post("/api/v1/models/add", json=_model("near", allowed / "one"))
    assert added.status_code == 201, added.text
    moved = client.patch("/api/v1/models/sd-1/main/near", json=_model("near", forbidden / "two"))
    _refused(moved, "path")
    # A checkpoint's legacy config is read when it loads: it may come from the allowed folders only.
    checkpoint = client.post("/api/v1/models/add", json=_model("ckpt", allowed / "ckpt.safetensors"))
    assert checkpoint.status_code == 201, checkpoint.text
    far_config = _model("ckpt", allowed / "ckpt.safetensors", config=str(forbidden / "v1.yaml"))
    _refused(client.patch("/api/v1/models/sd-1/main/ckpt", json=far_config), "config")
    near_config = _model("ckpt", allowed / "ckpt.safetensors", config=str(allowed / "v1.yaml"))
    assert client.patch("/api/v1/models/sd-1/main/ckpt", json=near_config).status_code == 200
    shipped = _model("ckpt", allowed / "ckpt.safetensors", config="stable-diffusion/v1-inference.yaml")
    assert client.patch("/api/v1/models/sd-1/main/ckpt", json=shipped).status_code == 200
    listed = {m["model_name"]: m["path"] for m in client.get("/api/v1/models/").json()["models"]}
    assert listed == {"near": str(allowed / "one"), "ckpt": str(allowed / "ckpt.safetensors")}


def test_convert_and_merge_write_to_the_root_and_search_roots_only(fenced) -> None:
    client, allowed, forbidden = fenced
    for name, path in (("ckpt", allowed / "ckpt.safetensors"), ("one", allowed / "one"), ("two", allowed / "two")):
        assert client.post("/api/v1/models/add", json=_model(name, path)).status_code == 201
    convert = "/api/v1/models/convert/sd-1/main/ckpt"
    _refused(client.put(convert, params={"convert_dest_directory": str(forbidden / "out")}), "convert_dest_directory")
    merge = {"model_names": ["one", "two"], "merged_model_name": "both"}
    refused = client.put("/api/v1/models/merge/sd-1", json={**merge, "merge_dest_directory": str(forbidden / "out")})
    _refused(refused, "merge_dest_directory")
    assert list((forbidden / "out").iterdir()) == []
    converted = client.put(convert, params={"convert_dest_directory": str(allowed / "out")})
    assert converted.status_code == 200, converted.text
    assert converted.json()["path"] == str(allowed / "out" / "ckpt")
    merged = client.put("/api/v1/models/merge/sd-1", json={**merge, "merge_dest_directory": str(allowed / "out")})
    assert merged.status_code == 200, merged.text
    assert sorted(p.name for p in (allowed / "out").iterdir()) == ["both", "ckpt"]
    # Defaults land in the root's models folder.
    root = client.app.state.settings.root_path
    default = client.put("/api/v1/models/merge/sd-1", json={"model_names": ["one", "two"], "merged_model_name": "d"})
    assert default.status_code == 200 and (root / default.json()["path"]).is_dir()
    # Once that folder exists, the next merge to it is no different.
    again = client.put("/api/v1/models/merge/sd-1", json={"model_names": ["one", "two"], "merged_model_name": "e"})
    assert again.status_code == 200, again.text
    assert (root / again.json()["path"]).parent == (root / default.json()["path"]).parent


def test_deleting_a_model_deletes_files_in_the_models_folder_only(fenced) -> None:
    client, allowed, _ = fenced
    assert client.post("/api/v1/models/add", json=_model("near", allowed / "one")).status_code == 201
    response = client.delete("/api/v1/models/sd-1/main/near", params={"delete_files": "true"})
    assert response.status_code == 403, response.text
    assert (allowed / "one" / "model_index.json").is_file()
    # Inside the root (so it may be registered) but beside the models folder, under a name that starts with its.
    models = client.app.state.settings.models_dir
    beside = models.parent / f"{models.name}-evil" / "one"
    shutil.copytree(allowed / "two", beside)
    assert client.post("/api/v1/models/add", json=_model("beside", beside)).status_code == 201
    response = client.delete("/api/v1/models/sd-1/main/beside", params={"delete_files": "true"})
    assert response.status_code == 403, response.text
    assert (beside / "model_index.json").is_file()
    # Inside the models folder the files go.
    owned = models / "main" / "owned"
    shutil.copytree(allowed / "two", owned)
    assert client.post("/api/v1/models/add", json=_model("owned", owned)).status_code == 201
    assert client.delete("/api/v1/models/sd-1/main/owned", params={"delete_files": "true"}).status_code == 204
    assert not owned.exists()


def test_symlinks_do_not_lead_search_or_sync_out_of_the_allowed_folders(fenced) -> None:
    client, allowed, forbidden = fenced
    root = client.app.state.settings.root_path
    os.symlink(forbidden, allowed / "sneaky")  # inside an allowed folder, pointing out of it
    os.symlink(forbidden / "one", root / "autoimport" / "main" / "sneaky-folder")
    os.symlink(forbidden / "ckpt.safetensors", root / "autoimport" / "main" / "sneaky.safetensors")
    os.symlink(allowed / "two", root / "autoimport" / "main" / "linked-two")  # into an allowed folder: fine
    found = client.get("/api/v1/models/search", params={"search_path": str(allowed)}).json()
    assert not [path for path in found if "sneaky" in path], found
    synced = client.post("/api/v1/models/sync").json()
    assert synced["added"] == ["sd-1/main/linked-two"], synced
    everything = client.get("/api/v1/models/search", params={"search_path": str(root)}).json()
    assert everything == [str(root / "autoimport" / "main" / "linked-two")], everything
