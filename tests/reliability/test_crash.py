"""Crash safety: a real server process is killed with SIGKILL in the middle of each kind of write, then started
again on the same root. What must hold after every crash:

- the database opens (and passes SQLite's integrity check);
- every acknowledged image (a 201 received, or `image_created` seen) has its record, its PNG and its thumbnail;
- nothing half-written stays visible: no temp names in outputs/, models/ or configs/, models/.convert-tmp/
  emptied, no files without a record;
- models.yaml parses and lists every model whose add, sync, convert or merge was acknowledged;
- a session that was running is `failed` with the reason, and the queued ones run to completion.

The four scenarios: (a) an upload, cut off mid-body and killed right after its files were written; (b) a 20-step
generation, killed mid-denoise with two sessions queued behind it; (c) a sync of checkpoints dropped into
autoimport, killed while probing and while writing models.yaml; (d) a convert and a merge, killed while they
write. The crash points are found by watching what the server writes (its log, its folders, its events), never
by sleeping. Finer-grained crashes inside one image write (each step of it, in a child process) are in
tests/images/test_reconcile.py; the queue's restart rules in tests/graph/test_restart.py."""

from __future__ import annotations

import io
import os
import shutil
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image
from websockets.sync.client import connect

from server.graph.executor import CRASH_REASON
from server.graph.standard import txt2img_graph
from tests.images.conftest import png_bytes
from tests.reliability.process import ServerProcess
from tests.ws.conftest import receive, send, synced

# The crash rules checked here are the embedded server's: SQLite's integrity check, files without a record removed
# at start-up (a shared root spares fresh ones, another machine may be writing them), a running session `failed`
# by the restart (on PostgreSQL its lease runs out and it runs again: tests/scale/test_workers.py).
pytestmark = pytest.mark.sqlite

MODEL = {"model_name": "tiny", "base_model": "sd-1", "model_type": "main"}
SHORT_WAIT = 30.0


# What the checks look at


def temp_leftovers(root: Path) -> list[str]:
    """Half-written things a crash may leave: our temp names (`.tmp-*` for images, `*.tmp` for models.yaml,
    model folders and config caches) anywhere under outputs/, models/ and configs/, and any entry of
    models/.convert-tmp/."""
    found = []
    for top in ("outputs", "models", "configs"):
        for folder, dirs, files in os.walk(root / top):
            for name in dirs + files:
                if name.startswith(".tmp-") or name.endswith(".tmp"):
                    found.append(os.path.relpath(os.path.join(folder, name), root))
    work = root / "models" / ".convert-tmp"
    if work.is_dir():
        found += [f"models/.convert-tmp/{name}" for name in os.listdir(work)]
    return sorted(found)


def files_on_disk(root: Path) -> tuple[set[str], set[str]]:
    """(PNG names, thumbnail names as their image's name) in outputs/, hidden temp files left out."""
    pngs = {n for n in os.listdir(root / "outputs" / "images") if not n.startswith(".")}
    thumbs = {n.removesuffix(".webp") + ".png" for n in os.listdir(root / "outputs" / "thumbnails") if n[0] != "."}
    return pngs, thumbs


def listed_images(server: ServerProcess) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    while True:
        page = server.http.get("/api/v1/images/", params={"offset": len(found), "limit": 500}).json()
        found.update((item["image_name"], item) for item in page["items"])
        if not page["items"] or len(found) >= page["total"]:
            return found


def wait_until_settled(server: ServerProcess) -> None:
    """Start-up clean-up runs in the background (image reconciliation, the models work folder): wait until the
    records and the files agree and no temp name is left. A crash that left lasting damage fails here."""

    problems: list[str] = []

    def settled() -> bool:
        pngs, thumbs = files_on_disk(server.root)
        records = set(listed_images(server))
        problems[:] = [f"temp leftovers {temp_leftovers(server.root)}"] if temp_leftovers(server.root) else []
        if not pngs == thumbs == records:
            problems.append(f"PNGs {sorted(pngs)}, thumbnails {sorted(thumbs)}, records {sorted(records)}")
        return not problems

    try:
        server.wait_until(settled, timeout=SHORT_WAIT, what="files, records and temp folders to agree")
    except AssertionError:
        raise AssertionError(f"still after {SHORT_WAIT:.0f} s: {'; '.join(problems)}") from None


def assert_database_sound(root: Path) -> None:
    with sqlite3.connect(f"file:{root / 'databases' / 'imagegraph.db'}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def assert_whole_images(server: ServerProcess, acknowledged: list[dict[str, Any]]) -> None:
    """Each acknowledged image: the same record, a PNG that decodes at its size, a thumbnail, both on disk."""
    for dto in acknowledged:
        name = dto["image_name"]
        assert server.http.get(f"/api/v1/images/{name}").json() == dto
        full = server.http.get(dto["image_url"])
        assert full.status_code == 200, name
        with Image.open(io.BytesIO(full.content)) as image:
            image.load()
            assert image.size == (dto["width"], dto["height"])
        thumbnail = server.http.get(dto["thumbnail_url"])
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/webp", name
        assert (server.root / "outputs" / "images" / name).is_file()
        assert (server.root / "outputs" / "thumbnails" / name.replace(".png", ".webp")).is_file()


def models_yaml(root: Path) -> dict[str, dict[str, Any]]:
    """The entries of models.yaml, which must parse."""
    document = yaml.safe_load((root / "configs" / "models.yaml").read_text(encoding="utf-8"))
    assert document["__metadata__"] == {"version": "1"}
    return {key: value for key, value in document.items() if key != "__metadata__"}


# Driving the server


class Background:
    """One request in a thread, so the test can kill the server while it is in flight; afterwards `response`
    is what came back (None when the server died first)."""

    def __init__(self, send_request: Callable[[], httpx.Response]) -> None:
        self.response: httpx.Response | None = None
        self.error: Exception | None = None

        def run() -> None:
            try:
                self.response = send_request()
            except httpx.TransportError as exc:
                self.error = exc

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def join(self) -> Background:
        self._thread.join(timeout=60)
        assert not self._thread.is_alive()
        return self


def kill_when(server: ServerProcess, condition: Callable[[], bool], what: str) -> None:
    """SIGKILL the server the moment `condition` holds (polled every millisecond: the windows are short)."""
    deadline = time.monotonic() + 120
    while not condition():
        assert server.process.poll() is None, f"the server exited before {what}:\n{server.tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{server.tail()}"
        time.sleep(0.001)
    server.kill()


def upload(http: httpx.Client, data: bytes) -> httpx.Response:
    return http.post("/api/v1/images/upload", files={"file": ("x.png", data, "image/png")})


def noise_png(side: int) -> bytes:
    """A PNG of random pixels (incompressible: side² × 3 bytes on the wire)."""
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


# (a) uploads


def test_uploads_killed_mid_body_and_after_the_file_write(tmp_path):
    root, log = tmp_path / "root", tmp_path / "server.log"
    with ServerProcess(root, log) as server:
        acknowledged = []
        for i in range(3):
            response = upload(server.http, png_bytes(text={"parameters": f"prompt {i}"}))
            assert response.status_code == 201, response.text
            acknowledged.append(response.json())

        # A 12 MB upload, killed when half its body is on the wire.
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.png"\r\n'
                "Content-Type: image/png\r\n\r\n"
            ).encode()
            + noise_png(2048)
            + f"\r\n--{boundary}--\r\n".encode()
        )
        head = (
            f"POST /api/v1/images/upload HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(head)
            half = len(body) // 2
            for start in range(0, half, 256 * 1024):
                sock.sendall(body[start : min(start + 256 * 1024, half)])
            assert server.http.get("/health").status_code == 200  # serving other requests meanwhile
            server.kill()

    with ServerProcess(root, log) as server:
        wait_until_settled(server)
        assert_database_sound(root)
        assert_whole_images(server, acknowledged)
        assert set(listed_images(server)) == {dto["image_name"] for dto in acknowledged}

        # Killed right after the file write: the database's write lock is held from outside, so the upload's
        # PNG and thumbnail land under their final names and its record waits (SQLite's busy timeout) to commit.
        blocker = sqlite3.connect(root / "databases" / "imagegraph.db", isolation_level=None, timeout=30)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            before = files_on_disk(root)
            cut = Background(lambda: upload(server.http, png_bytes(text={"parameters": "never acknowledged"})))
            kill_when(
                server,
                lambda: all(len(now - was) == 1 for now, was in zip(files_on_disk(root), before, strict=True)),
                "the upload's PNG and thumbnail to be written",
            )
            blocker.execute("ROLLBACK")
        finally:
            blocker.close()
        assert cut.join().response is None, cut.response
        unacknowledged = files_on_disk(root)[0] - before[0]
        assert len(unacknowledged) == 1

    with ServerProcess(root, log) as server:
        wait_until_settled(server)
        assert_database_sound(root)
        assert_whole_images(server, acknowledged)
        # The files without a record were removed at start-up: the upload was never acknowledged, so it is gone.
        assert set(listed_images(server)) == {dto["image_name"] for dto in acknowledged}
        assert files_on_disk(root)[0].isdisjoint(unacknowledged)
        assert upload(server.http, png_bytes()).status_code == 201  # and uploads work as before


# (b) generation


def test_generation_killed_mid_denoise(tmp_path, tiny_model_files):
    root, log = tmp_path / "root", tmp_path / "server.log"
    with ServerProcess(root, log) as server:
        imported = server.http.post("/api/v1/models/import", json={"location": str(tiny_model_files["diffusers"])})
        assert imported.status_code == 201, imported.text

        def create(**kwargs: Any) -> str:
            created = server.http.post("/api/v1/sessions/", json=txt2img_graph(MODEL, "a lighthouse", **kwargs))
            assert created.status_code == 201, created.text
            return created.json()["id"]

        def invoke(session_id: str) -> None:
            assert server.http.put(f"/api/v1/sessions/{session_id}/invoke").status_code == 202

        with connect(server.ws_url) as ws:
            send(ws, type="subscribe", sessions="*")
            synced(ws)
            first = create(width=64, height=64, steps=4)
            invoke(first)
            acknowledged = []  # images announced by image_created
            while True:
                event = receive(ws, timeout=120)
                if event["type"] == "image_created":
                    acknowledged.append(event["image"])
                if event["type"] == "session_complete" and event["session_id"] == first:
                    assert event["status"] == "completed"
                    break
            assert len(acknowledged) == 1

            # 20 steps at 128×128 (half a second or more here; the kill follows its 10th step within milliseconds),
            # then two short sessions queued behind it.
            long = create(width=128, height=128, steps=20, seed=1)
            queued = [create(width=64, height=64, steps=2, seed=seed) for seed in (2, 3)]
            for session_id in (long, *queued):
                invoke(session_id)
            while True:
                event = receive(ws, timeout=120)
                assert not (event["type"] == "session_complete" and event["session_id"] == long), "ran to the end"
                if event["type"] == "generator_progress" and event["session_id"] == long and event["step"] >= 10:
                    assert event["total_steps"] == 20
                    server.kill()
                    break

    with ServerProcess(root, log) as server:
        server.wait_until(
            lambda: (
                server.http.get("/api/v1/queue").json() == {"running": None, "pending": []}
                and all(server.http.get(f"/api/v1/sessions/{s}").json()["status"] == "completed" for s in queued)
            ),
            what="the queued sessions to complete",
        )
        crashed = server.http.get(f"/api/v1/sessions/{long}").json()
        assert crashed["status"] == "failed"
        assert list(crashed["errors"].values()) == [CRASH_REASON]
        finished = [server.http.get(f"/api/v1/sessions/{s}").json() for s in queued]
        made = [
            server.http.get(f"/api/v1/images/{s['results']['decode']['image']['image_name']}").json() for s in finished
        ]
        wait_until_settled(server)
        assert_database_sound(root)
        assert_whole_images(server, acknowledged + made)
        # Only whole images: the interrupted session never got to its decode, so it left none.
        assert set(listed_images(server)) == {dto["image_name"] for dto in acknowledged + made}


# (c) sync of files dropped into autoimport


def test_sync_killed_while_probing_and_while_writing_models_yaml(tmp_path, tiny_model_files):
    root, log = tmp_path / "root", tmp_path / "server.log"
    autoimport = root / "autoimport" / "main"
    checkpoint = tiny_model_files["checkpoint"]
    # Hard links: hundreds of distinct checkpoint files for the price of one (each is probed on its own).
    batch_one = [f"one-{i:03d}" for i in range(300)]
    batch_two = [f"two-{i:03d}" for i in range(300)]

    with ServerProcess(root, log) as server:
        for i in range(3):
            shutil.copyfile(checkpoint, autoimport / f"first-{i}.safetensors")
        synced_first = server.http.post("/api/v1/models/sync")
        assert synced_first.status_code == 200, synced_first.text
        acknowledged = {f"sd-1/main/first-{i}" for i in range(3)}
        assert set(synced_first.json()["added"]) == acknowledged

        for name in batch_one:
            os.link(checkpoint, autoimport / f"{name}.safetensors")
        registered = server.log_text().count("registered sd-1/main/")
        cut = Background(lambda: server.http.post("/api/v1/models/sync"))
        kill_when(
            server,
            lambda: server.log_text().count("registered sd-1/main/") >= registered + 10,
            "the sync to register some of the dropped files",
        )
        assert cut.join().response is None, cut.response.text
    assert acknowledged <= set(models_yaml(root))

    # Again with the watcher on, as when files are simply dropped in: killed while models.yaml is being written.
    with ServerProcess(root, log, watch=True) as server:
        everything_so_far = {f"sd-1/main/{n}" for n in batch_one} | acknowledged
        server.wait_until(lambda: set(models_yaml(root)) == everything_so_far, what="the start-up sync")
        written = (root / "configs" / "models.yaml").stat().st_mtime_ns
        for name in batch_two:
            os.link(checkpoint, autoimport / f"{name}.safetensors")
        # The temp copy lives for a write and an fsync; on a disk fast enough to slip between two polls, the kill
        # comes right after the rename instead, and the same must hold.
        kill_when(
            server,
            lambda: (
                any(name.endswith(".tmp") for name in os.listdir(root / "configs"))
                or (root / "configs" / "models.yaml").stat().st_mtime_ns != written
            ),
            "the watcher's sync to write models.yaml",
        )
    assert everything_so_far <= set(models_yaml(root))

    with ServerProcess(root, log) as server:
        result = server.http.post("/api/v1/models/sync")
        assert result.status_code == 200, result.text
        expected = everything_so_far | {f"sd-1/main/{n}" for n in batch_two}
        entries = models_yaml(root)
        assert set(entries) == expected
        # One entry per file, each under its own name: nothing registered twice by the interrupted syncs.
        assert sorted(entry["path"] for entry in entries.values()) == sorted(
            f"autoimport/main/{key.rsplit('/', 1)[1]}.safetensors" for key in expected
        )
        listed = server.http.get("/api/v1/models/").json()["models"]
        assert {f"sd-1/main/{m['model_name']}" for m in listed} == expected
        assert all(m["error"] is None for m in listed)
        wait_until_settled(server)
        assert_database_sound(root)


# (d) convert and merge


def test_convert_and_merge_killed_while_they_write(tmp_path, tiny_model_files):
    root, log = tmp_path / "root", tmp_path / "server.log"
    models = root / "models" / "sd-1" / "main"
    work = root / "models" / ".convert-tmp"
    merge_body = {"model_names": ["a", "b"], "alpha": 0.5, "interp": "weighted_sum", "force": False}

    def entries_in(folder: Path) -> list[Path]:
        return list(folder.iterdir()) if folder.is_dir() else []

    with ServerProcess(root, log) as server:
        models.mkdir(parents=True, exist_ok=True)
        for name in ("a", "b"):
            shutil.copyfile(tiny_model_files["checkpoint"], models / f"{name}.safetensors")
        assert server.http.post("/api/v1/models/sync").json()["added"] == ["sd-1/main/a", "sd-1/main/b"]
        merged = server.http.put("/api/v1/models/merge/sd-1", json={**merge_body, "merged_model_name": "ab"})
        assert merged.status_code == 200, merged.text

        # The convert writes the diffusers folder into models/.convert-tmp/ first; killed once it has begun.
        cut = Background(lambda: server.http.put("/api/v1/models/convert/sd-1/main/a"))
        kill_when(
            server,
            lambda: any(entries_in(folder / "model") for folder in entries_in(work)),
            "the conversion to write its folder",
        )
        converted = cut.join().response
    # The window between the first file written and the answer is short; should the answer have won the race,
    # the conversion was acknowledged and must have stuck.
    converted_ok = converted is not None and converted.status_code == 200
    entries = models_yaml(root)
    assert {"sd-1/main/a", "sd-1/main/b", "sd-1/main/ab"} <= set(entries)
    assert entries["sd-1/main/a"]["format"] == ("diffusers" if converted_ok else "checkpoint")

    with ServerProcess(root, log) as server:
        wait_until_settled(server)  # models/.convert-tmp/ emptied
        a = server.http.get("/api/v1/models/sd-1/main/a").json()
        if not converted_ok:
            assert a["model_format"] == "checkpoint" and a["path"] == "models/sd-1/main/a.safetensors"
            assert (models / "a.safetensors").stat().st_size == tiny_model_files["checkpoint"].stat().st_size
            assert not (models / "a").exists()

        # The merge streams its output into models/.convert-tmp/; killed once that file exists.
        cut = Background(
            lambda: server.http.put("/api/v1/models/merge/sd-1", json={**merge_body, "merged_model_name": "ab2"})
        )
        kill_when(
            server,
            lambda: any((folder / "ab2.safetensors").exists() for folder in entries_in(work)),
            "the merge to write its output",
        )
        assert cut.join().response is None
        assert any(entries_in(work))  # the half-written merge is there now...
    entries = models_yaml(root)
    assert "sd-1/main/ab2" not in entries and not (models / "ab2.safetensors").exists()

    with ServerProcess(root, log) as server:
        wait_until_settled(server)  # ...and gone after the restart
        assert_database_sound(root)
        listed = {m["model_name"]: m for m in server.http.get("/api/v1/models/").json()["models"]}
        assert set(listed) == {"a", "b", "ab"}
        assert all(m["error"] is None for m in listed.values())
        # Both work again, on the same models.
        again = server.http.put("/api/v1/models/merge/sd-1", json={**merge_body, "merged_model_name": "ab2"})
        assert again.status_code == 200, again.text
        if not converted_ok:
            converted = server.http.put("/api/v1/models/convert/sd-1/main/a")
            assert converted.status_code == 200, converted.text
        assert set(models_yaml(root)) == {"sd-1/main/a", "sd-1/main/b", "sd-1/main/ab", "sd-1/main/ab2"}
        assert models_yaml(root)["sd-1/main/a"]["format"] == "diffusers"
        assert temp_leftovers(root) == []
