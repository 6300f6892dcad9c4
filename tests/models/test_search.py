"""/models/search lists model files and folders below a folder: sorted, hidden folders skipped, diffusers
folders listed whole, symlink loops survived; and it looks only where it may."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.testclient import TestClient

from server.app import build_app
from tests.conftest import BASE_URL
from tests.models.conftest import API


def _tree(top: Path) -> None:
    (top / "b" / "deep" / "deeper").mkdir(parents=True)
    (top / "a.safetensors").write_bytes(b"x")
    (top / "notes.txt").write_text("not a model")
    (top / "b" / "two.CKPT").write_bytes(b"x")
    (top / "b" / "deep" / "deeper" / "three.pt").write_bytes(b"x")
    (top / "b" / "deep" / "four.pth").write_bytes(b"x")
    (top / "b" / "deep" / "five.bin").write_bytes(b"x")
    pipeline = top / "pipe"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "model_index.json").write_text("{}")
    (pipeline / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    vae = top / "b" / "vae-folder"
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    (vae / "diffusion_pytorch_model.safetensors").write_bytes(b"x")
    hidden = top / ".cache" / "hub"
    hidden.mkdir(parents=True)
    (hidden / "hidden.safetensors").write_bytes(b"x")
    (top / ".hidden.safetensors").write_bytes(b"x")


def test_search_lists_models_sorted_without_descending_into_model_folders(client: TestClient, tmp_path: Path) -> None:
    top = tmp_path / "library"
    _tree(top)
    response = client.get(f"{API}/search", params={"search_path": str(top)})
    assert response.status_code == 200, response.text
    assert response.json() == [
        str(top / "a.safetensors"),
        str(top / "b" / "deep" / "deeper" / "three.pt"),
        str(top / "b" / "deep" / "five.bin"),
        str(top / "b" / "deep" / "four.pth"),
        str(top / "b" / "two.CKPT"),
        str(top / "b" / "vae-folder"),
        str(top / "pipe"),
    ]


def test_search_survives_a_symlink_loop_and_follows_other_links(client: TestClient, tmp_path: Path) -> None:
    top = tmp_path / "library"
    _tree(top)
    os.symlink(top, top / "b" / "deep" / "loop")  # b/deep/loop -> library: a cycle
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.safetensors").write_bytes(b"x")
    os.symlink(elsewhere, top / "link")
    os.symlink(tmp_path / "missing", top / "dangling")
    found = client.get(f"{API}/search", params={"search_path": str(top)}).json()
    assert str(top / "link" / "linked.safetensors") in found
    assert len(found) == 8, found  # each model once, the loop walked once
    assert not any("loop" in path for path in found)


def test_search_errors(client: TestClient, tmp_path: Path) -> None:
    missing = client.get(f"{API}/search", params={"search_path": str(tmp_path / "nope")})
    assert missing.status_code == 404 and "not a folder" in missing.json()["detail"]
    (tmp_path / "file.safetensors").write_bytes(b"x")
    a_file = client.get(f"{API}/search", params={"search_path": str(tmp_path / "file.safetensors")})
    assert a_file.status_code == 404
    relative = client.get(f"{API}/search", params={"search_path": "models"})
    assert relative.status_code == 422 and "absolute" in relative.json()["detail"]
    no_param = client.get(f"{API}/search")
    assert no_param.status_code == 422 and "search_path" in no_param.json()["detail"]


def _path_of_length(base: Path, length: int) -> str:
    """A path below `base` of exactly `length` bytes, in names of at most 200 bytes."""
    path = str(base)
    while len(path) < length:
        path += "/" + "d" * min(200, length - len(path) - 1)
    assert len(path) == length and not path.endswith("/")
    return path


def test_search_paths_longer_than_the_file_system_takes_are_422(client: TestClient, tmp_path: Path) -> None:
    # Linux: a name has at most 255 bytes (NAME_MAX), a path at most 4095 (PATH_MAX counts the final NUL).
    limits = "at most 255 bytes a name, 4095 in all"
    for fits in (str(tmp_path / ("n" * 255)), str(tmp_path / ("é" * 127)), _path_of_length(tmp_path, 4095)):
        response = client.get(f"{API}/search", params={"search_path": fits})
        assert response.status_code == 404 and "not a folder" in response.json()["detail"], len(fits)
    for too_long in (str(tmp_path / ("n" * 256)), str(tmp_path / ("é" * 128)), _path_of_length(tmp_path, 4096)):
        response = client.get(f"{API}/search", params={"search_path": too_long})
        assert response.status_code == 422, len(too_long)
        assert response.json()["detail"] == f"search_path is too long for the file system ({limits})"


def test_search_roots_restrict_where_search_and_import_look(tmp_path: Path, make_settings) -> None:
    allowed = tmp_path / "allowed"
    forbidden = tmp_path / "forbidden"
    beside = tmp_path / "allowed-evil"  # starts with the allowed folder's name, and is another folder
    for folder in (allowed, forbidden, beside):
        folder.mkdir()
        (folder / "m.safetensors").write_bytes(b"x")
    os.symlink(forbidden, allowed / "sneaky")  # a link out of an allowed root does not escape
    settings = make_settings(search_roots=[str(allowed)])
    with TestClient(build_app(settings), base_url=BASE_URL) as client:
        ok = client.get(f"{API}/search", params={"search_path": str(allowed)})
        assert ok.status_code == 200 and str(allowed / "m.safetensors") in ok.json()
        for path in (forbidden, beside, allowed / "sneaky", Path("/")):
            refused = client.get(f"{API}/search", params={"search_path": str(path)})
            assert refused.status_code == 403, path
            assert "search_roots" in refused.json()["detail"]
        for folder in (forbidden, beside):
            imported = client.post(f"{API}/import", json={"location": str(folder / "m.safetensors")})
            assert imported.status_code == 403, folder
        # The root itself is always allowed.
        assert client.get(f"{API}/search", params={"search_path": str(settings.root_path)}).status_code == 200
