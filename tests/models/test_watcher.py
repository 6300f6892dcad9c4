"""With the watcher on (a real uvicorn, real inotify), a model dropped into autoimport appears with no
request from anyone, goes when it is deleted, and every change is announced on the WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator

import httpx
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.conftest import LiveServer, start_live_server
from tests.models.conftest import API, settle
from tests.ws.conftest import wait_until

# The bound: a dropped file is listed within 5 s (typically well under one).
DROP_DEADLINE_S = 5.0


@pytest.fixture
def watched(make_settings) -> Iterator[LiveServer]:
    live = start_live_server(make_settings(watch=True))
    manager = live.server.config.app.state.services.models
    asyncio.run_coroutine_threadsafe(
        manager.first_sync.wait(), live.server.config.app.state.services.events.loop
    ).result(30)
    try:
        yield live
    finally:
        live.stop()


def _models_changed(ws: ClientConnection, timeout: float = DROP_DEADLINE_S) -> dict:
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] == "models_changed":
            return message


def _listed(live: LiveServer) -> set[str]:
    models = httpx.get(f"{live.url}{API}/").json()["models"]
    return {f"{m['base_model']}/{m['model_type']}/{m['model_name']}" for m in models}


def test_dropped_file_appears_and_deleted_file_disappears_without_a_request(
    watched: LiveServer, tiny_model_files, tmp_path
) -> None:
    root = watched.settings.root_path
    staging = root / "staging.safetensors"
    shutil.copyfile(tiny_model_files["checkpoint"], staging)
    with connect(watched.ws_url + "/ws") as ws:
        os.rename(staging, root / "autoimport" / "main" / "dropped.safetensors")
        event = _models_changed(ws)
        assert event["added"] == ["sd-1/main/dropped"]
        assert "sd-1/main/dropped" in _listed(watched)
        (root / "autoimport" / "main" / "dropped.safetensors").unlink()
        event = _models_changed(ws)
        assert event["removed"] == ["sd-1/main/dropped"]
        assert "sd-1/main/dropped" not in _listed(watched)


def test_half_written_file_waits_for_the_rest(watched: LiveServer, tiny_model_files) -> None:
    root = watched.settings.root_path
    data = tiny_model_files["checkpoint"].read_bytes()
    target = root / "autoimport" / "main" / "slow.safetensors"
    with connect(watched.ws_url + "/ws") as ws:
        with open(target, "wb") as f:
            f.write(data[: len(data) // 2])
            f.flush()
            # The watcher has seen the half file and synced; nothing may be announced for it.
            with pytest.raises(TimeoutError):
                _models_changed(ws, timeout=1.5)
            assert "sd-1/main/slow" not in _listed(watched)
            f.write(data[len(data) // 2 :])
        event = _models_changed(ws)
        assert event["added"] == ["sd-1/main/slow"]


def test_folder_and_pickle_copied_in_are_picked_up_once_they_settle(watched: LiveServer, tiny_model_files) -> None:
    root = watched.settings.root_path
    with connect(watched.ws_url + "/ws") as ws:
        shutil.copytree(tiny_model_files["diffusers"], root / "autoimport" / "main" / "copied-folder")
        shutil.copyfile(tiny_model_files["ckpt"], root / "autoimport" / "main" / "copied.ckpt")
        added: set[str] = set()
        while added != {"sd-1/main/copied-folder", "sd-1/main/copied"}:
            added |= set(_models_changed(ws, timeout=10)["added"])


def test_hand_edit_of_models_yaml_is_picked_up_by_the_watcher(watched: LiveServer, tiny_model_files, tmp_path) -> None:
    root = watched.settings.root_path
    library = settle(shutil.copytree(tiny_model_files["diffusers"], tmp_path / "library" / "by-hand"))
    with connect(watched.ws_url + "/ws") as ws:
        models_yaml = root / "configs" / "models.yaml"
        text = models_yaml.read_text() + f"sd-1/main/by-hand:\n  path: {library}\n  format: diffusers\n"
        models_yaml.write_text(text)
        assert _models_changed(ws)["added"] == ["sd-1/main/by-hand"]
        models_yaml.write_text("this: [is broken\n")

        # A broken edit is reported, not applied, and the file is left as the user wrote it.
        def reported() -> str | None:
            return httpx.get(f"{watched.url}/api/v1/app/config").json()["models_yaml_error"]

        wait_until(lambda: reported() is not None, what="models.yaml error reported")
        config = {"models_yaml_error": reported()}
        assert "not valid YAML" in config["models_yaml_error"]
        assert models_yaml.read_text() == "this: [is broken\n"
        assert "sd-1/main/by-hand" in _listed(watched)


def test_broken_file_does_not_stop_the_watcher(watched: LiveServer, tiny_model_files) -> None:
    root = watched.settings.root_path
    with connect(watched.ws_url + "/ws") as ws:
        broken = root / "staging-broken"
        broken.write_bytes(b"garbage" * 10)
        os.utime(broken, (1_000_000_000, 1_000_000_000))
        os.rename(broken, root / "autoimport" / "main" / "broken.ckpt")
        assert _models_changed(ws)["added"] == ["sd-1/main/broken"]
        staging = root / "staging.safetensors"
        shutil.copyfile(tiny_model_files["checkpoint"], staging)
        os.rename(staging, root / "autoimport" / "main" / "fine.safetensors")
        assert _models_changed(ws)["added"] == ["sd-1/main/fine"]
    models = httpx.get(f"{watched.url}{API}/").json()["models"]
    errors = {m["model_name"]: m["error"] for m in models}
    assert errors["fine"] is None and "could not be read" in errors["broken"]
