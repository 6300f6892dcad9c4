"""POST /models/sync makes the model list, models.yaml and the folders agree, and is idempotent; models.yaml
edited by hand is picked up, and one that does not parse is reported and never overwritten."""

from __future__ import annotations

import time
from pathlib import Path

import yaml
from starlette.testclient import TestClient

from tests.models.conftest import API, Recorder, listed, put_model, settle, sync


def test_sync_registers_every_format_once_and_a_second_sync_reports_nothing(
    client: TestClient, root: Path, tiny_model_files: dict[str, Path], events: Recorder
) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    put_model(tiny_model_files["ckpt"], root / "autoimport" / "main" / "old" / "legacy.ckpt")
    put_model(tiny_model_files["diffusers"], root / "models" / "sd-1" / "main" / "folder-model")
    result = sync(client)
    assert result == {
        "added": ["sd-1/main/folder-model", "sd-1/main/legacy", "sd-1/main/tiny"],
        "removed": [],
        "updated": [],
    }
    assert [e.added for e in events.events] == [result["added"]]
    models = listed(client)
    assert models["sd-1/main/tiny"]["path"] == "autoimport/main/tiny.safetensors"
    assert models["sd-1/main/tiny"]["model_format"] == "checkpoint"
    assert models["sd-1/main/folder-model"]["path"] == "models/sd-1/main/folder-model"
    assert models["sd-1/main/folder-model"]["model_format"] == "diffusers"
    stored = yaml.safe_load((root / "configs" / "models.yaml").read_text())
    assert stored["__metadata__"] == {"version": "1"}
    assert stored["sd-1/main/tiny"] == {
        "path": "autoimport/main/tiny.safetensors",
        "description": None,
        "format": "checkpoint",
        "variant": "normal",
        "prediction_type": "epsilon",
        "config": "stable-diffusion/v1-inference.yaml",
    }
    events.clear()
    assert sync(client) == {"added": [], "removed": [], "updated": []}
    assert events.events == [], "a sync that changed nothing announced a change"


def test_name_clash_gets_a_numeric_suffix(client: TestClient, root: Path, tiny_model_files) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    put_model(tiny_model_files["diffusers"], root / "autoimport" / "main" / "tiny")
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "more" / "tiny.safetensors")
    assert sorted(sync(client)["added"]) == ["sd-1/main/tiny", "sd-1/main/tiny-2", "sd-1/main/tiny-3"]


def test_deleted_files_are_dropped(client: TestClient, root: Path, tiny_model_files, events: Recorder) -> None:
    path = put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    sync(client)
    path.unlink()
    events.clear()
    assert sync(client) == {"added": [], "removed": ["sd-1/main/tiny"], "updated": []}
    assert [e.removed for e in events.events] == [["sd-1/main/tiny"]]
    assert "sd-1/main/tiny" not in yaml.safe_load((root / "configs" / "models.yaml").read_text())
    assert client.get(f"{API}/sd-1/main/tiny").status_code == 404


def test_half_written_file_is_not_imported_until_complete(client: TestClient, root: Path, tiny_model_files) -> None:
    data = tiny_model_files["checkpoint"].read_bytes()
    target = root / "autoimport" / "main" / "growing.safetensors"
    target.write_bytes(data[: len(data) // 3])  # a copy in progress: fresh mtime, header says "longer"
    assert sync(client)["added"] == []
    assert "sd-1/main/growing" not in listed(client)
    with open(target, "ab") as f:
        f.write(data[len(data) // 3 :])
    assert sync(client)["added"] == ["sd-1/main/growing"]


def test_recent_pickle_waits_until_its_size_stops_changing(client: TestClient, root: Path, tiny_model_files) -> None:
    put_model(tiny_model_files["ckpt"], root / "autoimport" / "main" / "fresh.ckpt", settled=False)
    assert sync(client)["added"] == [], "a file modified just now was probed at first sight"
    time.sleep(0.6)  # unchanged for longer than the stability window
    assert sync(client)["added"] == ["sd-1/main/fresh"]


def test_temporary_and_hidden_names_are_ignored(client: TestClient, root: Path, tiny_model_files) -> None:
    folder = root / "autoimport" / "main"
    put_model(tiny_model_files["checkpoint"], folder / "a.safetensors.part")
    put_model(tiny_model_files["checkpoint"], folder / "b.safetensors.crdownload")
    put_model(tiny_model_files["checkpoint"], folder / ".c.safetensors")
    put_model(tiny_model_files["checkpoint"], folder / ".partial" / "d.safetensors")
    assert sync(client)["added"] == []


def test_broken_file_is_listed_with_its_error_and_fixed_by_replacing_it(
    client: TestClient, root: Path, tiny_model_files
) -> None:
    broken = root / "autoimport" / "main" / "broken.safetensors"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00this is not json")
    settle(broken)
    assert sync(client)["added"] == ["sd-1/main/broken"]
    entry = listed(client)["sd-1/main/broken"]
    assert "not JSON" in entry["error"]
    # Listed, but never written to models.yaml: it is not a usable model.
    assert "sd-1/main/broken" not in (root / "configs" / "models.yaml").read_text()
    assert sync(client) == {"added": [], "removed": [], "updated": []}
    broken.write_bytes(tiny_model_files["checkpoint"].read_bytes())
    assert sync(client)["updated"] == ["sd-1/main/broken"]
    assert listed(client)["sd-1/main/broken"]["error"] is None
    assert "sd-1/main/broken" in (root / "configs" / "models.yaml").read_text()


def test_hand_edit_of_models_yaml_is_picked_up(client: TestClient, root: Path, tiny_model_files) -> None:
    elsewhere = put_model(tiny_model_files["diffusers"], root.parent / "library" / "mine")
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    sync(client)
    models_yaml = root / "configs" / "models.yaml"
    stored = yaml.safe_load(models_yaml.read_text())
    stored["sd-1/main/tiny"]["description"] = "edited by hand"
    stored["sd-1/main/mine"] = {"path": str(elsewhere), "format": "diffusers", "custom_key": "kept"}
    models_yaml.write_text(yaml.safe_dump(stored))
    result = sync(client)
    assert result == {"added": ["sd-1/main/mine"], "removed": [], "updated": ["sd-1/main/tiny"]}
    models = listed(client)
    assert models["sd-1/main/tiny"]["description"] == "edited by hand"
    assert models["sd-1/main/mine"]["path"] == str(elsewhere)
    # A later write by the server keeps the user's edits, including fields it does not know.
    client.patch(f"{API}/sd-1/main/tiny", json={**models["sd-1/main/tiny"], "description": "by the API"})
    rewritten = yaml.safe_load(models_yaml.read_text())
    assert rewritten["sd-1/main/mine"]["custom_key"] == "kept"
    assert rewritten["sd-1/main/tiny"]["description"] == "by the API"


def test_invalid_entry_is_reported_kept_verbatim_and_the_rest_works(
    client: TestClient, root: Path, tiny_model_files
) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    models_yaml = root / "configs" / "models.yaml"
    models_yaml.write_text("sd-9/main/odd:\n  path: somewhere\n  format: checkpoint\n")
    sync(client)
    assert set(listed(client)) == {"sd-1/main/tiny"}
    error = client.get("/api/v1/app/config").json()["models_yaml_error"]
    assert "sd-9/main/odd" in error and "ignored until fixed" in error
    assert yaml.safe_load(models_yaml.read_text())["sd-9/main/odd"] == {"path": "somewhere", "format": "checkpoint"}


def test_broken_models_yaml_is_reported_and_never_overwritten(
    client: TestClient, root: Path, tiny_model_files, events: Recorder
) -> None:
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "tiny.safetensors")
    sync(client)
    models_yaml = root / "configs" / "models.yaml"
    broken = "sd-1/main/tiny:\n  path: [unclosed\n"
    models_yaml.write_text(broken)
    put_model(tiny_model_files["checkpoint"], root / "autoimport" / "main" / "second.safetensors")
    events.clear()
    response = client.post(f"{API}/sync")
    assert response.status_code == 424
    assert "models.yaml" in response.json()["detail"] and "line" in response.json()["detail"]
    assert client.get("/api/v1/app/config").json()["models_yaml_error"] == response.json()["detail"]
    # Changes are refused too, rather than written over the user's file.
    entry = listed(client)["sd-1/main/tiny"]
    patched = client.patch(f"{API}/sd-1/main/tiny", json={**entry, "description": "x"})
    assert patched.status_code == 424 and "Nothing was changed" in patched.json()["detail"]
    assert models_yaml.read_text() == broken
    assert events.events == []
    # Fixed by hand: the next sync goes through and the error is gone.
    models_yaml.write_text("")
    result = sync(client)
    assert result["added"] == ["sd-1/main/second"] and result["removed"] == []
    assert client.get("/api/v1/app/config").json()["models_yaml_error"] is None


def test_start_up_clears_leftovers_of_interrupted_conversions(settings) -> None:
    from server.app import build_app
    from tests.conftest import BASE_URL

    leftover = settings.models_dir / ".convert-tmp" / "convert-abc" / "model"
    leftover.mkdir(parents=True)
    (leftover / "half.safetensors").write_bytes(b"x")
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        client.portal.call(client.app.state.services.models.first_sync.wait)
        assert list((settings.models_dir / ".convert-tmp").iterdir()) == []
        assert listed(client) == {}
