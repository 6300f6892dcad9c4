"""An image name that is not one we issued is 404, never a path: encoded slashes, dot-dot, absolute paths, NUL,
and symlinks planted in `outputs/images` never serve a file from anywhere else."""

from __future__ import annotations

import os
import socket

import pytest

from tests.images.conftest import png_bytes, service, upload

SECRET = b"top secret: not an image"
FAKE = "00000000-0000-4000-8000-000000000000.png"


@pytest.fixture
def secret(settings):
    """A file outside `outputs/` (the database folder) and one outside the root."""
    settings.create_layout()
    inside_root = settings.db_path.parent / "secret.txt"
    inside_root.write_bytes(SECRET)
    outside = settings.root_path.parent / "outside.txt"
    outside.write_bytes(SECRET)
    return inside_root, outside


EVIL_NAMES = [
    "..%2F..%2Fdatabases%2Fsecret.txt",
    "..%2F..%2F..%2Foutside.txt",
    "%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fdatabases%2fsecret.txt",
    "..",
    "%2E%2E",
    f"{FAKE}%00.txt",
    f"{FAKE[:-4]}%00.png",
    "secret.txt",
    f"{FAKE}%2F..%2F..%2F..%2Fdatabases%2Fsecret.txt",
    FAKE.upper(),
    "..%5C..%5Cdatabases%5Csecret.txt",
]


@pytest.mark.parametrize("suffix", ["/full", "/thumbnail", "/metadata", "/urls", ""])
def test_evil_names_are_404(client, secret, suffix):
    for name in EVIL_NAMES:
        response = client.get(f"/api/v1/images/{name}{suffix}")
        assert response.status_code == 404, (name, response.status_code)
        assert SECRET not in response.content
        assert response.headers["content-type"] == "application/json"


def raw_get(url: str, path: str) -> bytes:
    """Send the path exactly as written, with no client-side normalisation."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_raw_paths_on_a_real_server(live_server, secret):
    paths = [f"/api/v1/images/{name}/full" for name in EVIL_NAMES]
    paths += [
        "/api/v1/images/../../databases/secret.txt/full",
        "/api/v1/images/../../../outside.txt",
        "/api/v1/images//etc/passwd/full",
        f"/api/v1/images/{FAKE}/../../../databases/secret.txt",
    ]
    for path in paths:
        response = raw_get(live_server.url, path)
        status = response.split(b" ", 2)[1]
        assert status in (b"400", b"404"), (path, response[:200])
        assert SECRET not in response, path


def test_planted_symlink_without_a_record_is_404(client, settings, secret):
    # Plant after start-up reconciliation, which would remove the links (tested in test_reconcile.py).
    assert service(client).reconciled.wait(30)
    for target in secret:
        (settings.images_dir / FAKE).symlink_to(target)
        (settings.thumbnails_dir / FAKE.replace(".png", ".webp")).symlink_to(target)
        for suffix in ("/full", "/thumbnail"):
            response = client.get(f"/api/v1/images/{FAKE}{suffix}")
            assert response.status_code == 404
            assert SECRET not in response.content
        (settings.images_dir / FAKE).unlink()
        (settings.thumbnails_dir / FAKE.replace(".png", ".webp")).unlink()


def test_symlink_swapped_in_for_a_real_image_is_not_followed(client, settings, secret):
    assert service(client).reconciled.wait(30)
    dto = upload(client, png_bytes()).json()
    name = dto["image_name"]
    image = settings.images_dir / name
    thumb = settings.thumbnails_dir / name.replace(".png", ".webp")
    for path in (image, thumb):
        path.unlink()
        path.symlink_to(secret[1])
    cache = service(client).cache
    cache.evict(name)
    cache.evict(thumb.name)

    response = client.get(dto["image_url"])
    assert response.status_code == 404
    assert SECRET not in response.content
    response = client.get(dto["image_url"], headers={"Range": "bytes=0-5"})
    assert response.status_code == 404
    # The thumbnail cannot be rebuilt from a symlink either; the secret is neither served nor touched.
    response = client.get(dto["thumbnail_url"])
    assert SECRET not in response.content
    assert secret[1].read_bytes() == SECRET
    assert os.path.islink(image)
