"""A crash at any step of a write or a delete leaves, after a restart, either nothing or a whole image: start-up
reconciliation removes files without records (and temp files), records without files, and rebuilds thumbnails.

The crash is real: a child process stores an image and dies with os._exit at the chosen step (no cleanup, no
`finally`), then the server starts on the same root."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from server.app import build_app
from server.config import Settings
from server.images.reconcile import ReconcileReport
from tests.conftest import BASE_URL
from tests.images.conftest import call, png_bytes, service, upload

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite, whatever `--database` says: the crashing child writes through SQLite, and on a shared root
    (PostgreSQL) reconciliation spares fresh files on purpose (the last test here)."""
    return Settings(root=str(tmp_path / "root"), watch=False)


CHILD = textwrap.dedent(
    """
    import asyncio, os, sys
    from PIL import Image
    from server.config import Settings
    from server.db_sqlite import SQLiteDatabase
    from server.images import files, records
    from server.images.service import ImageService

    root, step = sys.argv[1], sys.argv[2]
    settings = Settings(root=root, watch=False)
    settings.create_layout()

    def crash(*args, **kwargs):
        print("CRASH", step, flush=True)
        os._exit(3)

    async def main():
        db = SQLiteDatabase(settings.db_path)
        await db.open()
        service = ImageService(settings, db, lambda event: None)
        if step == "before-rename":
            files.os.replace = crash
        elif step == "before-thumbnail":
            real = files._atomic_write
            files._atomic_write = lambda path, data: crash() if path.suffix == ".webp" else real(path, data)
        elif step == "before-record":
            records.insert_image = crash
        elif step == "after-commit":
            service.emit = crash
        elif step == "delete-before-files":
            dto = await service.save(Image.new("RGB", (64, 64), "red"))
            print("SAVED", dto.image_name, flush=True)
            service.files.delete = crash
            await service.delete([dto.image_name])
            return
        await service.save(Image.new("RGB", (64, 64), "red"), metadata='{"generation_mode": "txt2img"}')
        print("NO CRASH", flush=True)

    asyncio.run(main())
    """
)


def crash_at(settings: Settings, step: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, settings.root, step], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"CRASH {step}" in result.stdout
    return result.stdout


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def restart(settings: Settings):
    return TestClient(build_app(settings), base_url=BASE_URL, raise_server_exceptions=False)


@pytest.mark.parametrize("step", ["before-rename", "before-thumbnail", "before-record"])
def test_crash_before_the_commit_leaves_nothing(settings, step):
    crash_at(settings, step)
    # The crash left something on disk (a temp file, or a PNG without a record)...
    leftovers = listing(settings.images_dir) + listing(settings.thumbnails_dir)
    assert leftovers
    with restart(settings) as client:
        assert service(client).reconciled.wait(30)
        # ...and after the restart nothing of it is visible or left behind.
        assert client.get("/api/v1/images/").json()["total"] == 0
        assert listing(settings.images_dir) == [] and listing(settings.thumbnails_dir) == []
        report = service(client).reconcile_report
        removed = [f"{name[:-4]}.webp" for name in report.files_removed] + report.files_removed + report.strays_removed
        assert set(leftovers) <= set(removed)
        # The server works normally afterwards.
        assert upload(client, png_bytes()).status_code == 201


def test_crash_after_the_commit_leaves_a_whole_image(settings):
    crash_at(settings, "after-commit")
    with restart(settings) as client:
        assert service(client).reconciled.wait(30)
        page = client.get("/api/v1/images/").json()
        assert page["total"] == 1
        dto = page["items"][0]
        assert client.get(dto["image_url"]).status_code == 200
        assert client.get(dto["thumbnail_url"]).status_code == 200
        assert client.get(f"/api/v1/images/{dto['image_name']}/metadata").json()["metadata"] == {
            "generation_mode": "txt2img"
        }
        assert service(client).reconcile_report.files_removed == []


def test_crash_in_a_delete_finishes_it_at_restart(settings):
    out = crash_at(settings, "delete-before-files")
    name = out.split("SAVED ", 1)[1].split()[0]
    assert (settings.images_dir / name).exists()  # the record is gone, the files are not yet
    with restart(settings) as client:
        assert service(client).reconciled.wait(30)
        assert client.get(f"/api/v1/images/{name}").status_code == 404
        assert listing(settings.images_dir) == [] and listing(settings.thumbnails_dir) == []


def test_records_without_files_are_removed_and_thumbnails_rebuilt(settings, tmp_path):
    with restart(settings) as client:
        gone, thumbless, intact = (upload(client, png_bytes()).json()["image_name"] for _ in range(3))
    (settings.images_dir / gone).unlink()
    (settings.thumbnails_dir / thumbless.replace(".png", ".webp")).unlink()
    # Someone plants a symlink and a stray file in the images folder.
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    (settings.images_dir / "00000000-0000-4000-8000-000000000000.png").symlink_to(outside)
    (settings.images_dir / "notes.txt").write_text("stray")
    (settings.images_dir / "dangling.png").symlink_to(tmp_path / "nothing-here")
    # A folder is left where it is (and not reported removed).
    (settings.thumbnails_dir / "a-folder").mkdir()

    with restart(settings) as client:
        assert service(client).reconciled.wait(30)
        report = service(client).reconcile_report
        assert report.records_removed == [gone]
        assert report.thumbnails_rebuilt == [thumbless]
        assert sorted(report.strays_removed) == [
            "00000000-0000-4000-8000-000000000000.png",
            "dangling.png",
            "notes.txt",
        ]
        remaining = {item["image_name"] for item in client.get("/api/v1/images/").json()["items"]}
        assert remaining == {thumbless, intact}
        assert client.get(f"/api/v1/images/{thumbless}/thumbnail").status_code == 200
    assert listing(settings.images_dir) == sorted([thumbless, intact])
    assert outside.read_text() == "keep me"
    assert (settings.thumbnails_dir / "a-folder").is_dir()


def test_reconciliation_running_during_writes_removes_nothing_acknowledged(client, settings):
    images = service(client)
    assert images.reconciled.wait(30)

    async def reconcile_between_file_and_record() -> list[str]:
        # Holding the database writer stops each save after its files are on disk and before its record is
        # committed: exactly the state a crash leaves behind, except that these writes are still running.
        async with images.db.write():
            saves = [asyncio.create_task(images.save(Image.new("RGB", (64, 64), "blue"))) for _ in range(6)]
            # Polling the folder: the files are the event (a save has no hook between its steps).
            while len(list(settings.thumbnails_dir.glob("[0-9a-f]*.webp"))) < 6:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            report = await images.reconcile()
            assert report.files_removed == [] and report.strays_removed == []
        return [dto.image_name for dto in await asyncio.gather(*saves)]

    saved = call(client, reconcile_between_file_and_record)
    for name in saved:
        assert (settings.images_dir / name).is_file(), name
        assert client.get(f"/api/v1/images/{name}/full").status_code == 200
    assert client.get("/api/v1/images/").json()["total"] == 6
    # Once committed, the same files are no orphans either.
    report = call(client, images.reconcile)
    assert report == ReconcileReport()


def test_open_image_gives_a_decoded_copy(client, uploaded):
    image = call(client, service(client).open_image, uploaded["image_name"])
    assert image.size == (96, 64) and image.mode == "RGB"
    with pytest.raises(LookupError):
        call(client, service(client).open_image, "00000000-0000-4000-8000-000000000000.png")
    with pytest.raises(LookupError):
        call(client, service(client).open_image, "../../etc/passwd")


def test_a_shared_root_spares_fresh_files_another_process_may_be_writing(tmp_path, postgres_cluster):
    settings = Settings(root=str(tmp_path / "root"), watch=False, database=postgres_cluster.fresh_database())
    settings.create_layout()
    fresh, old = settings.images_dir / "fresh.txt", settings.images_dir / "old.txt"
    fresh.write_text("a worker on another machine may be writing this")
    old.write_text("left by a crash an hour ago")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    with restart(settings) as client:
        assert service(client).reconciled.wait(30)
        assert service(client).reconcile_report.strays_removed == ["old.txt"]
    assert fresh.exists() and not old.exists()


def test_a_stray_that_is_gone_before_its_removal_counts_as_removed(settings):
    # Another process (a shared root's other server) may remove a stray between the listing and its removal.
    from server.images.files import ImageFiles

    files = ImageFiles(settings.images_dir, settings.thumbnails_dir)
    settings.images_dir.mkdir(parents=True, exist_ok=True)
    assert files.remove_stray(settings.images_dir / ".tmp-gone-already.png") is True
