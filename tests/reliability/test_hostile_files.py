"""Hostile files, each through the way a user would hand it to the server, and the server healthy after each.

Here (through the real routes, the sync and the watcher):
- pickles that would run code (.ckpt, .pt, .bin; zip and legacy formats): import refuses them (415), sync and
  the watcher list them with the reason, and the code never runs (a marker file it would create stays absent);
- safetensors files whose header lies (a 2**60-byte header, a header longer than the file, data past the end,
  tensors that overlap, a shape bigger than its bytes, a dtype that does not exist, garbage, not an object):
  import refuses them, sync lists them with the reason, nothing is allocated for the sizes they claim;
- images: a PNG claiming 10 gigapixels, JPEG and WebP claiming more than the pixel limit, PNG text and ICC
  chunks that decompress to 100 MB, a truncated PNG: 413/415, nothing stored, the server's peak memory
  (VmHWM of a real server process) does not move;
- a symlink in autoimport/ pointing outside the root (to a model: followed, as the default `search_roots`
  says "anywhere"; to a secret: listed as not a model, without a byte of it in the message); with
  `search_roots` set such links are not followed at all (test_access.py);
- a model folder with a loop of symlinks (and a link to itself): sync and /search finish, each model once;
- file names with a newline and with bytes that are not UTF-8, in autoimport and under /search: valid JSON
  and a models.yaml that reads back; the first is listed, the second skipped with a warning in the log.

Elsewhere, one layer down: tests/models/test_probe.py (the probe and header reader on the same lies, with
ru_maxrss), tests/models/test_routes.py (import of a code-running pickle), tests/models/test_tiny.py (the
tiny .ckpt loader), tests/images/test_upload.py (truncated PNG, bomb, non-images), tests/images/
test_traversal.py (image names that are paths, symlinks planted in outputs/).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image
from starlette.testclient import TestClient

from server.app import build_app
from server.config import Settings
from tests.conftest import BASE_URL, start_live_server
from tests.models.conftest import settle
from tests.reliability.process import ServerProcess
from tests.ws.conftest import wait_until

MODELS = "/api/v1/models"


# What the files are made of


class RunsCode:
    """Unpickling this with an unrestricted loader creates `path`: proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


class RunsShell:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def code_running_pickles(folder: Path, marker: Path, tiny_ckpt: Path) -> list[Path]:
    """A real checkpoint's state dict with a payload, in torch's zip format and its legacy one, and a bare
    pickle of a shell command, under the names a model could have."""
    import torch

    state_dict = torch.load(tiny_ckpt, weights_only=True)["state_dict"]
    folder.mkdir(parents=True, exist_ok=True)
    files = [folder / "evil.ckpt", folder / "evil-legacy.pt", folder / "evil-shell.bin", folder / "evil-p4.pth"]
    torch.save({"state_dict": state_dict, "payload": RunsCode(marker)}, files[0])
    torch.save({"state_dict": {}, "payload": RunsCode(marker)}, files[1], _use_new_zipfile_serialization=False)
    files[2].write_bytes(pickle.dumps({"payload": RunsShell(f"touch {marker}")}, protocol=2))
    # Protocol 4 is refused before the unpickler even reaches the call (it does not take that protocol).
    files[3].write_bytes(pickle.dumps({"payload": RunsShell(f"touch {marker}")}, protocol=4))
    return files


def garbage_pickles(folder: Path) -> list[Path]:
    """Bytes that are no pickle at all under pickle names: text, noise, a zip holding noise."""
    import random
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    noise = random.Random(8).randbytes(4096)
    (folder / "text.ckpt").write_bytes(b"just some text, nothing like a checkpoint\n" * 20)
    (folder / "noise.pt").write_bytes(noise)
    with zipfile.ZipFile(folder / "zip-of-noise.pth", "w") as archive:
        archive.writestr("archive/data.pkl", noise)
    return sorted(folder.glob("*.*"))


def _safetensors(path: Path, header: bytes, length: int | None = None, tail: bytes = b"") -> Path:
    path.write_bytes((len(header) if length is None else length).to_bytes(8, "little") + header + tail)
    return path


def lying_safetensors(folder: Path, tiny_checkpoint: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    real = tiny_checkpoint.read_bytes()
    real_length = int.from_bytes(real[:8], "little")
    header = json.loads(real[8 : 8 + real_length])
    # Two tensors of the same size made to share their bytes (and so leave a gap), everything else real.
    sizes: dict[int, str] = {}
    overlapping = dict(header)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        size = entry["data_offsets"][1] - entry["data_offsets"][0]
        if size in sizes:
            overlapping[name] = {**entry, "data_offsets": header[sizes[size]]["data_offsets"]}
            break
        sizes[size] = name
    overlap_header = json.dumps(overlapping).encode()
    overlap_header += b" " * (real_length - len(overlap_header)) if len(overlap_header) <= real_length else b""
    one = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    return [
        _safetensors(folder / "huge-header.safetensors", b"{}", length=2**60),
        _safetensors(folder / "header-past-the-end.safetensors", b"{}", length=10_000),
        _safetensors(
            folder / "data-past-the-end.safetensors",
            json.dumps({"x": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 2**40]}}).encode(),
        ),
        _safetensors(folder / "overlap-small.safetensors", json.dumps({"a": one, "b": one}).encode(), tail=b"\0" * 8),
        _safetensors(folder / "overlap-model.safetensors", overlap_header, tail=real[8 + real_length :]),
        _safetensors(
            folder / "shape-lie.safetensors",
            json.dumps({"x": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 4]}}).encode(),
            tail=b"\0" * 4,
        ),
        _safetensors(
            folder / "bad-dtype.safetensors",
            json.dumps({"x": {"dtype": "EVIL", "shape": [1], "data_offsets": [0, 1]}}).encode(),
            tail=b"\0",
        ),
        _safetensors(folder / "garbage.safetensors", b"\xff\xfe not json at all"),
        _safetensors(folder / "not-an-object.safetensors", b"[1, 2, 3]"),
    ]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _deflated_zeros(size: int) -> bytes:
    squeeze = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    out = [squeeze.compress(block) for _ in range(size // len(block))]
    return b"".join([*out, squeeze.flush()])


def _png(ihdr_size: tuple[int, int], *extra_chunks: bytes, idat: bytes | None = None) -> bytes:
    width, height = ihdr_size
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = idat if idat is not None else zlib.compress(b"\0" * (height * (width * 3 + 1)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + b"".join(extra_chunks)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def hostile_images() -> dict[str, bytes]:
    zeros = _deflated_zeros(100 << 20)  # 100 MB once inflated, about 100 KB here
    small = io.BytesIO()
    Image.new("RGB", (256, 256), (10, 200, 30)).save(small, format="PNG")
    jpeg_big = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg_big, format="JPEG")
    jpeg = bytearray(jpeg_big.getvalue())
    sof = jpeg.index(b"\xff\xc0")  # the frame header: precision, then height and width
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    small_webp = io.BytesIO()
    Image.new("RGB", (8, 8)).save(small_webp, format="WEBP", lossless=True)
    webp = bytearray(small_webp.getvalue())
    vp8l = webp.index(b"VP8L") + 8 + 1  # after the chunk header and the 0x2f signature
    bits = int.from_bytes(webp[vp8l : vp8l + 4], "little")
    webp[vp8l : vp8l + 4] = (16383 | 16383 << 14 | bits & ~((1 << 28) - 1)).to_bytes(4, "little")
    return {
        "png-10-gigapixels": _png((100_000, 100_000), idat=zlib.compress(b"\0" * 1000)),
        "png-ztxt-100mb": _png((8, 8), _chunk(b"zTXt", b"parameters\0\0" + zeros)),
        "png-itxt-100mb": _png((8, 8), _chunk(b"iTXt", b"invokeai_graph\0\1\0\0\0" + zeros)),
        "png-iccp-100mb": _png((8, 8), _chunk(b"iCCP", b"icc\0\0" + zeros)),
        "png-truncated": small.getvalue()[: len(small.getvalue()) // 2],
        "jpeg-3.6-gigapixels": bytes(jpeg),
        "webp-268-megapixels": bytes(webp),
    }


def _hwm_mib(pid: int) -> float:
    """Peak resident memory of a process so far (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


# A real server process: imports and uploads, and its memory


@pytest.mark.timeout(300)
def test_hostile_uploads_and_imports_are_refused_and_memory_stays_flat(tmp_path: Path, tiny_model_files) -> None:
    library = tmp_path / "library"
    marker = tmp_path / "code-ran"
    pickles = code_running_pickles(library / "pickles", marker, tiny_model_files["ckpt"])
    lies = lying_safetensors(library / "lies", tiny_model_files["checkpoint"])
    garbage = garbage_pickles(library / "garbage")
    images = hostile_images()
    shutil.copyfile(tiny_model_files["ckpt"], library / "good.ckpt")
    with ServerProcess(tmp_path / "root", tmp_path / "server.log") as server:
        api = server.http
        # Warm up what the hostile files go through (Pillow's codecs; torch for the pickle check).
        first = api.post("/api/v1/images/upload", files={"file": ("ok.png", _png((64, 64)), "image/png")})
        assert first.status_code == 201, first.text
        assert api.post(f"{MODELS}/import", json={"location": str(library / "good.ckpt")}).status_code == 201
        peak_before = _hwm_mib(server.pid)

        for name, data in images.items():
            response = api.post("/api/v1/images/upload", files={"file": (f"{name}.png", data, "image/png")})
            assert response.status_code in (413, 415), (name, response.status_code, response.text)
            assert response.json()["detail"], name
        for path in [*pickles, *lies, *garbage]:
            response = api.post(f"{MODELS}/import", json={"location": str(path)})
            assert response.status_code == 415, (path.name, response.text)
            detail = response.json()["detail"]
            if path in pickles[:3]:
                assert "would run code" in detail, detail
            assert "weights_only" not in detail, detail  # no advice to load it some unsafe way
        peak_after = _hwm_mib(server.pid)

        assert not marker.exists(), "a pickle ran code in the server"
        assert api.get("/health").json() == {"status": "ok"}
        assert api.get("/api/v1/images/").json()["total"] == 1
        assert [m["model_name"] for m in api.get(f"{MODELS}/").json()["models"]] == ["good"]
        stored = sorted(p.name for p in (tmp_path / "root" / "outputs" / "images").iterdir())
        assert stored == [first.json()["image_name"]]
        print(f"\nserver peak RSS {peak_before:.0f} MiB before, {peak_after:.0f} MiB after the hostile files")
        # Nothing near what the files claim (gigabytes of pixels, 100 MB of text, 2**40-byte tensors) was held.
        assert peak_after - peak_before < 64, (peak_before, peak_after)


# Sync: files dropped into autoimport/ and found by POST /models/sync


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    settings.create_layout()
    with TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False) as client:
        client.portal.call(client.app.state.services.models.first_sync.wait)
        yield client


def _models(client: TestClient | httpx.Client) -> dict[str, dict]:
    response = client.get(f"{MODELS}/")
    assert response.status_code == 200, response.text
    return {m["model_name"]: m for m in response.json()["models"]}


def _autoimport(client: TestClient) -> Path:
    return client.app.state.settings.autoimport_dir / "main"


def test_pickles_that_run_code_are_listed_as_refused_by_sync(app_client: TestClient, tmp_path, tiny_model_files):
    marker = tmp_path / "code-ran"
    main = _autoimport(app_client)
    for path in [*code_running_pickles(main, marker, tiny_model_files["ckpt"]), *garbage_pickles(main)]:
        settle(path)  # long finished: sync probes it at once
    assert app_client.post(f"{MODELS}/sync").status_code == 200
    models = _models(app_client)
    assert set(models) == {"evil", "evil-legacy", "evil-shell", "evil-p4", "text", "noise", "zip-of-noise"}
    assert all(model["error"] for model in models.values()), models
    for name in ("evil", "evil-legacy", "evil-shell"):
        assert "would run code" in models[name]["error"], models[name]
    assert "not unpickled" in models["evil-p4"]["error"]
    assert not marker.exists()


def test_lying_safetensors_headers_are_listed_as_unusable_by_sync(app_client: TestClient, tiny_model_files) -> None:
    lies = lying_safetensors(_autoimport(app_client), tiny_model_files["checkpoint"])
    for path in lies:
        settle(path)
    assert app_client.post(f"{MODELS}/sync").status_code == 200
    models = _models(app_client)
    assert set(models) == {path.stem for path in lies}
    assert all(model["error"] for model in models.values()), models
    assert "overlap" in models["overlap-model"]["error"]
    assert app_client.get("/health").status_code == 200


def test_a_symlink_out_of_the_root_is_followed_to_a_model_and_leaks_nothing_of_a_secret(
    app_client: TestClient, tmp_path: Path, tiny_model_files
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copyfile(tiny_model_files["checkpoint"], outside / "shared.safetensors")
    secret = b"top secret: the first bytes of a private file"
    (outside / "secret.txt").write_bytes(secret)
    for path in outside.iterdir():
        settle(path)
    main = _autoimport(app_client)
    os.symlink(outside / "shared.safetensors", main / "shared.safetensors")
    os.symlink(outside / "secret.txt", main / "secret.safetensors")
    os.symlink(outside / "secret.txt", main / "secret.ckpt")
    assert app_client.post(f"{MODELS}/sync").status_code == 200
    models = _models(app_client)
    assert models["shared"]["error"] is None and models["shared"]["path"] == "autoimport/main/shared.safetensors"
    shown = json.dumps([models[name] for name in models if name.startswith("secret")])
    # Neither the bytes nor the number the first eight of them make.
    for leak in (secret[:8].decode(), str(int.from_bytes(secret[:8], "little")), "secret:"):
        assert leak not in shown, shown


def test_a_loop_of_symlinks_in_a_model_folder_ends_sync_and_search(app_client: TestClient, tiny_model_files) -> None:
    folder = _autoimport(app_client) / "collection"
    (folder / "deeper").mkdir(parents=True)
    shutil.copyfile(tiny_model_files["checkpoint"], folder / "deeper" / "one.safetensors")
    settle(folder / "deeper" / "one.safetensors")
    os.symlink("..", folder / "deeper" / "up")  # deeper/up -> collection: a cycle
    os.symlink(folder, folder / "deeper" / "again")  # another way round
    os.symlink(folder / "self", folder / "self")  # a link to itself (ELOOP)
    os.symlink(folder / "a", folder / "b")
    os.symlink(folder / "b", folder / "a")  # two links to each other
    assert app_client.post(f"{MODELS}/sync").status_code == 200
    assert list(_models(app_client)) == ["one"]
    root = app_client.app.state.settings.root_path
    found = app_client.get(f"{MODELS}/search", params={"search_path": str(root)})
    assert found.json() == [str(folder / "deeper" / "one.safetensors")]
    assert app_client.post(f"{MODELS}/sync").json() == {"added": [], "removed": [], "updated": []}


def test_names_with_a_newline_or_bytes_that_are_not_utf8(app_client: TestClient, tiny_model_files, caplog) -> None:
    main = os.fsencode(_autoimport(app_client))
    long_name = "x" * 240
    raws = [b"two\nlines.safetensors", b"back\\slash.safetensors", f"{long_name}.safetensors".encode()]
    raws += [b"latin1-caf\xe9.safetensors", b"junk-\xff\xfe.safetensors"]
    for raw in raws:
        shutil.copyfile(tiny_model_files["checkpoint"], main + b"/" + raw)
        os.utime(main + b"/" + raw, (0, 0))
    os.mkdir(main + b"/folder-\xff")
    shutil.copyfile(tiny_model_files["checkpoint"], main + b"/folder-\xff/inside.safetensors")
    synced = app_client.post(f"{MODELS}/sync")
    assert synced.status_code == 200, synced.text
    # A file's name becomes a model name a URL can carry: no newline, no (back)slash, at most 200 characters.
    names = {"two_lines", "back_slash", long_name[:200]}
    assert sorted(synced.json()["added"]) == sorted(f"sd-1/main/{name}" for name in names)
    models = _models(app_client)
    assert set(models) == names
    model = models["two_lines"]
    assert model["path"] == "autoimport/main/two\nlines.safetensors" and model["error"] is None
    for name in names:
        by_key = app_client.get(f"{MODELS}/sd-1/main/{name}")
        assert by_key.status_code == 200 and by_key.json() == models[name]
    root = app_client.app.state.settings.root_path
    found = app_client.get(f"{MODELS}/search", params={"search_path": str(root)})
    assert found.status_code == 200  # valid JSON: the names that are not UTF-8 are left out
    assert sorted(found.json()) == sorted(str(root / "autoimport" / "main" / raw.decode()) for raw in raws[:3])
    # models.yaml reads back to the same entries, so the next sync changes nothing.
    document = yaml.safe_load(app_client.app.state.settings.models_yaml.read_text())
    assert document["sd-1/main/two_lines"]["path"] == "autoimport/main/two\nlines.safetensors"
    assert app_client.post(f"{MODELS}/sync").json() == {"added": [], "removed": [], "updated": []}
    assert "is not valid UTF-8" in caplog.text
    # A client cannot give a model such a name either.
    renamed = app_client.patch(f"{MODELS}/sd-1/main/two_lines", json={**model, "model_name": "two\nlines"})
    assert renamed.status_code == 422 and "model_name" in renamed.json()["detail"]


# The watcher: the same files dropped in with no request at all


@pytest.mark.timeout(240)
def test_the_watcher_survives_hostile_files(tmp_path: Path, tiny_model_files, make_settings) -> None:
    marker = tmp_path / "code-ran"
    staging = tmp_path / "staging"
    code_running_pickles(staging, marker, tiny_model_files["ckpt"])
    lying_safetensors(staging, tiny_model_files["checkpoint"])
    garbage_pickles(staging)
    shutil.copyfile(tiny_model_files["checkpoint"], staging / "two\nlines.safetensors")
    shutil.copyfile(tiny_model_files["checkpoint"], os.fsencode(staging) + b"/caf\xe9.safetensors")
    (staging / "loop").mkdir()
    os.symlink("..", staging / "loop" / "up")
    os.symlink(staging / "loop" / "self", staging / "loop" / "self")
    live = start_live_server(make_settings(watch=True))
    try:
        main = live.settings.autoimport_dir / "main"
        for entry in os.listdir(os.fsencode(staging)):  # renamed in, as a download or `mv` would
            os.rename(os.fsencode(staging) + b"/" + entry, os.fsencode(main) + b"/" + entry)
        expected = {"evil", "evil-legacy", "evil-shell", "two_lines", "huge-header", "overlap-model", "garbage", "text"}

        def listed() -> bool:
            return expected <= set(_models(httpx.Client(base_url=live.url)))

        # Pickles are probed once they have sat still for a few seconds; the rest at once.
        wait_until(listed, timeout=120, what="the watcher to list the dropped files")
        models = _models(httpx.Client(base_url=live.url))
        assert models["two_lines"]["error"] is None
        assert "would run code" in models["evil"]["error"]
        assert not any("caf" in name for name in models)
        assert not marker.exists()
        assert httpx.get(f"{live.url}/health").json() == {"status": "ok"}
    finally:
        live.stop()
